"""The trainer is backend-neutral: it runs under KERAS_BACKEND=jax with TensorFlow unimportable."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from support.project_repo import TINY_PARAMS, copy_project, run

pytestmark = pytest.mark.slow

# `import tensorflow` fails in this interpreter, as on a machine where it is not installed. (Not by
# `sys.modules['tensorflow'] = None`: Keras reads a "tensorflow" key in sys.modules as "TensorFlow
# is loaded", which no machine without it shows.)
WITHOUT_TENSORFLOW = """
import sys

class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoTensorFlow())
from resnet_mlops.cli import main
sys.argv = ["resnet-mlops", "train"]
sys.exit(main())
"""


def test_train_stage_runs_on_jax_without_tensorflow(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = {**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "optimizer": "sgd", "schedule": "cosine",
                                       "augment": {"crop": 1, "flip": True, "mixup": 0.2}}}
    folder = copy_project(tmp_path / "jax", params)
    run(["resnet-mlops", "prepare"], folder)
    cache = tmp_path / "user-cache"
    env = {**os.environ, "KERAS_BACKEND": "jax", "XDG_CACHE_HOME": str(cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = run([sys.executable, "-c", WITHOUT_TENSORFLOW], folder, env=env)
    assert "train: jax: CPU only" in done.stdout
    loaded = WITHOUT_TENSORFLOW.replace('sys.argv = ["resnet-mlops", "train"]\nsys.exit(main())',
                                        "import keras; print([m for m in sys.modules if m.startswith('tensorflow')])")
    assert run([sys.executable, "-c", loaded], folder, env=env).stdout.strip() == "[]"  # really without it
    compiled = list((cache / "resnet-mlops/jax-compilation").iterdir())  # a retrain skips compiling these
    assert any(entry.name.startswith("jit_train_step") for entry in compiled), [e.name for e in compiled]

    client = MlflowClient(f"sqlite:///{folder.resolve()}/mlflow.db")
    (tracked,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert tracked.data.tags["keras.backend"] == "jax" and tracked.info.status == "FINISHED"
    assert len(client.get_metric_history(tracked.info.run_id, "val_accuracy")) == 2

    from resnet_mlops.dataset.prepared import read_split
    from resnet_mlops.models.saving import load_model

    test = read_split(folder / "data/prepared", "test")  # the JAX-trained file serves under TensorFlow
    probabilities = load_model(folder / "models/model.keras").predict(test.images, verbose=0)
    assert probabilities.shape == (len(test.labels), 10)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
