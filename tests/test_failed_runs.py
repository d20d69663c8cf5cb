"""A failed stage never costs the last good outputs: under plain `dvc repro`, `dvc exp run`, `make run`'s
command and an unactivated environment. (The Prefect flow's case is in test_flow.py.)

DVC deletes a stage's outputs before running it unless they are `persist: true`; every stage
then replaces its outputs only once it has succeeded.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from support.console import unactivated_path
from support.image_files import good_tree, image_bytes
from support.project_repo import outputs_of, run, write_params

pytestmark = pytest.mark.slow


def bad_params(tiny_params: dict, repo: Path) -> dict[str, tuple[dict, str]]:
    """name -> (params, what the error must say) for each mistake a user makes."""
    def changed(section: str, **values) -> dict:
        params = copy.deepcopy(tiny_params)
        params[section] = {**params[section], **values}
        return params

    def folder(path: str, **data) -> dict:
        params = copy.deepcopy(tiny_params)
        params["data"] = {**params["data"], "source": "folder", "path": path, "image_size": 16, **data}
        return params

    (repo / "data/raw/empty").mkdir()
    images = good_tree(repo / "data/raw/images", per_class=4)
    (images / "cat" / "truncated.jpg").write_bytes(image_bytes("JPEG", (40, 40))[:300])
    return {
        "negative epochs": (changed("train", epochs=-1), "params.yaml: train.epochs:"),
        "unknown model": (changed("model", name="resnet21"), "params.yaml: model.name:"),
        "unknown key": (changed("train", epoch=3), "params.yaml: train.epoch: unknown key"),
        "missing data.path": (folder("data/raw/nowhere"), "data/raw/nowhere: no such file or folder"),
        "empty folder": (folder("data/raw/empty"), "data/raw/empty: no usable class found"),
        "on_error fail": (folder("data/raw/images", on_error="fail"), "cat/truncated.jpg: undecodable"),
    }


def assert_failed_keeping(repo: Path, done, says: str, good: dict) -> None:
    assert done.returncode != 0, done.stdout
    assert says in done.stdout + done.stderr, done.stdout + done.stderr
    assert outputs_of(repo) == good
    assert not [p for p in (repo / "data").iterdir() if p.name.startswith(".prepared.")]  # no leftovers


def test_failed_stages_keep_the_last_good_outputs(reproduced_repo, tiny_params):
    repo = reproduced_repo
    good = outputs_of(repo)

    for name, (params, says) in bad_params(tiny_params, repo).items():
        # Each mistake under each way of running the pipeline: DVC's two, and `make run`'s command.
        for command in (["dvc", "repro"], ["dvc", "exp", "run"], ["resnet-mlops", "run"]):
            write_params(repo, params)
            done = run(command, repo, check=False)
            assert_failed_keeping(repo, done, says, good)
            if command[0] == "resnet-mlops":  # ... whose own message must be true
                assert done.returncode == 2, (name, done.returncode)
                if says.startswith("params.yaml"):  # refused before any stage ran: one line, nothing else to say
                    assert done.stderr.startswith(f"resnet-mlops run: error: {says}") and done.stderr.count("\n") == 1
                    assert done.stdout == ""
                else:
                    assert "every output is still the one its stage's last successful run wrote" in done.stderr
                assert "earlier outputs are unchanged" not in done.stdout + done.stderr
        write_params(repo, tiny_params)

    # The README's form of an experiment: the mistake as an -S override.
    done = run(["dvc", "exp", "run", "-S", "train.epochs=-1"], repo, check=False)
    assert_failed_keeping(repo, done, "params.yaml: train.epochs:", good)
    write_params(repo, tiny_params)

    # DVC from an environment that is not activated: the stage command is not found.
    write_params(repo, {**tiny_params, "train": {**tiny_params["train"], "epochs": 1}})
    done = run([f"{Path(sys.executable).parent}/dvc", "repro"], repo, check=False,
               env={**os.environ, "PATH": unactivated_path()})
    # DVC runs the command with $SHELL, else /bin/sh: bash says "command not found", dash "not found".
    assert_failed_keeping(repo, done, "resnet-mlops", good)
    assert re.search(r"resnet-mlops: (command )?not found", done.stdout + done.stderr), done.stderr

    # Put right, the pipeline is up to date again: nothing was lost, nothing reruns.
    write_params(repo, tiny_params)
    for folder in ("empty", "images"):
        shutil.rmtree(repo / "data/raw" / folder)
    status = run(["dvc", "status"], repo).stdout
    assert "up to date" in status, status


def test_a_champion_of_other_images_is_refused_in_one_line_and_the_registry_is_kept(reproduced_repo, tiny_params):
    """The digits champion (8x8 grey, 10 classes) cannot be ranked against a model of 32x32 RGB
    images of 3 classes under the same register.model_name: `register` says so in one sentence,
    registers nothing and moves nothing, and says it again on the next `dvc repro`."""
    from mlflow.tracking import MlflowClient

    repo = reproduced_repo
    registration = (repo / "reports/registration.json").read_bytes()
    good_tree(repo / "data/raw/images", per_class=10)
    tiny_params["data"] = {**tiny_params["data"], "source": "folder", "path": "data/raw/images"}
    write_params(repo, tiny_params)
    refused = ("champion v1 of 'tiny-digits' takes 8x8x1 images of 10 classes (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), this "
               "data has 32x32x3 images of 3 classes (cat, dog, owl): they cannot be compared on one test set; nothing was "
               "registered (set another register.model_name for this data)")
    for attempt in ("first", "again"):
        done = run(["dvc", "repro"], repo, check=False)
        assert done.returncode != 0, done.stdout
        said = done.stdout + done.stderr
        assert f"resnet-mlops register: error: {refused}" in said, said
        assert "Traceback" not in said
    client = MlflowClient(tracking_uri=f"sqlite:///{repo.resolve()}/mlflow.db")
    assert [int(v.version) for v in client.search_model_versions("name='tiny-digits'")] == [1]
    assert str(client.get_model_version_by_alias("tiny-digits", "champion").version) == "1"
    assert (repo / "reports/registration.json").read_bytes() == registration
