"""The `folder` source on generated files: formats, archives read in place, every kind of bad input."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from resnet_mlops.config import load_params
from resnet_mlops.data.prepare import prepare
from resnet_mlops.dataset.prepared import read_split
from resnet_mlops.errors import UserError
from support.image_files import good_tree, image_bytes
from support.project_repo import write_params


def settings_for(tmp_path, tiny_params, path, **data):
    tiny_params["data"] = {"source": "folder", "path": str(path), "image_size": 16, "channels": 3,
                           "val_fraction": 0.2, "test_fraction": 0.2, "workers": 2, **data}
    return load_params(write_params(tmp_path, tiny_params)).data


def run_prepare(tmp_path, settings, name="out"):
    report = tmp_path / f"{name}.json"
    summary = prepare(settings, 3, tmp_path / name, report)
    return summary, json.loads(report.read_text())


def add_bad_files(root: Path) -> dict[str, str]:
    """Each bad input the validation must catch; returns path -> expected problem kind."""
    jpeg = image_bytes("JPEG", (40, 40), seed=99)
    (root / "cat" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "cat" / "text.png").write_text("this is not a picture\n")
    (root / "cat" / "zero.jpg").write_bytes(b"")
    (root / "cat" / "notes.txt").write_text("labels are folder names\n")
    (root / "dog" / "tiny.png").write_bytes(image_bytes("PNG", (4, 4), seed=98))
    (root / "dog" / "huge.png").write_bytes(image_bytes("PNG", (60, 60), seed=97))
    shutil.copy(root / "dog" / "000.jpg", root / "dog" / "copy-of-000.jpg")
    shutil.copy(root / "owl" / "001.png", root / "cat" / "owl-in-cat-folder.png")
    (root / "empty_class").mkdir()
    (root / "lonely").mkdir()
    (root / "lonely" / "only.jpg").write_bytes(image_bytes("JPEG", seed=96))
    return {
        "cat/truncated.jpg": "undecodable", "cat/text.png": "undecodable", "cat/zero.jpg": "empty_file",
        "cat/notes.txt": "not_an_image", "dog/tiny.png": "too_small", "dog/huge.png": "too_many_pixels",
        "dog/copy-of-000.jpg": "duplicate", "cat/owl-in-cat-folder.png": "conflicting_labels",
        "owl/001.png": "conflicting_labels", "empty_class": "empty_class", "lonely/only.jpg": "single_example_class",
    }


def test_every_format_and_mode_becomes_the_same_shape(tmp_path, tiny_params):
    root = good_tree(tmp_path / "images")
    summary, report = run_prepare(tmp_path, settings_for(tmp_path, tiny_params, root))
    assert summary["class_names"] == ["cat", "dog", "owl"] and summary["image_shape"] == [16, 16, 3]
    assert report["kept"] == 18 and report["problems"] == []
    total = sum(summary["splits"][n]["count"] for n in ("train", "val", "test"))
    assert total == 18
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert set(manifest["width"]) == {20 + 7 * i for i in range(6)}
    assert read_split(tmp_path / "out", "train").images.dtype == np.uint8


def test_quarantine_lists_and_excludes_every_bad_input(tmp_path, tiny_params):
    root = good_tree(tmp_path / "images")
    expected = add_bad_files(root)
    settings = settings_for(tmp_path, tiny_params, root, max_pixels=3000, min_size=8)
    summary, report = run_prepare(tmp_path, settings)
    found = {p["path"]: p["kind"] for p in report["problems"]}
    assert found == expected
    assert summary["class_names"] == ["cat", "dog", "owl"]  # empty and single-example classes dropped
    assert report["dropped_classes"] == ["empty_class", "lonely"]
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert not set(manifest["path"]) & set(expected)
    assert len(manifest) == 18 - 1  # the 18 good files less owl/001, found under two labels


def test_fail_mode_stops_naming_the_file_and_writes_nothing(tmp_path, tiny_params):
    root = good_tree(tmp_path / "images")
    (root / "cat" / "truncated.jpg").write_bytes(image_bytes("JPEG", (40, 40))[:300])
    settings = settings_for(tmp_path, tiny_params, root, on_error="fail")
    with pytest.raises(UserError, match=r"cat/truncated.jpg: undecodable"):
        run_prepare(tmp_path, settings)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.json").exists()
    assert json.loads((tmp_path / "out.failed.json").read_text())["problem_counts"] == {"undecodable": 1}


def test_a_failed_run_keeps_the_good_runs_dataset_and_report_and_says_so(tmp_path, tiny_params):
    root = good_tree(tmp_path / "images")
    good_summary, good_report = run_prepare(tmp_path, settings_for(tmp_path, tiny_params, root))
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    (root / "cat" / "truncated.jpg").write_bytes(image_bytes("JPEG", (40, 40))[:300])
    with pytest.raises(UserError) as failure:
        run_prepare(tmp_path, settings_for(tmp_path, tiny_params, root, on_error="fail"))
    assert str(failure.value).endswith(f"listed in {tmp_path / 'out.failed.json'} (set data.on_error: quarantine "
                                       f"to exclude them and go on); {tmp_path / 'out.json'} still holds the "
                                       f"last good run's")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert json.loads((tmp_path / "out.json").read_text()) == good_report
    assert json.loads((tmp_path / "out.failed.json").read_text())["problem_counts"] == {"undecodable": 1}
    (root / "cat" / "truncated.jpg").unlink()  # fixed: the next good run replaces both and drops the failed report
    run_prepare(tmp_path, settings_for(tmp_path, tiny_params, root, on_error="fail"))
    assert not (tmp_path / "out.failed.json").exists()


def test_one_class_folder_is_one_class_not_files_outside_class_folders(tmp_path, tiny_params):
    for archived in (False, True):
        root = tmp_path / f"digits-{archived}"
        (root / "3").mkdir(parents=True)
        for i in range(5):
            (root / "3" / f"{i}.png").write_bytes(image_bytes("PNG", seed=i))
        path = root
        if archived:
            path = tmp_path / "digits.tar"
            with tarfile.open(path, "w") as archive:
                archive.add(root / "3", arcname="3")
        with pytest.raises(UserError) as failure:
            run_prepare(tmp_path, settings_for(tmp_path, tiny_params, path))
        assert str(failure.value).startswith(f"{path}: 1 usable class (3) found; a classifier needs at least 2")
        report = json.loads((tmp_path / "out.failed.json").read_text())
        assert report["problems"] == [] and report["kept"] == 5


def _tar_with_bad_entries(path: Path, source: Path) -> None:
    with tarfile.open(path, "w:gz") as archive:
        archive.add(source, arcname="images")
        evil = image_bytes("JPEG", seed=5)
        info = tarfile.TarInfo("../evil.jpg")
        info.size = len(evil)
        archive.addfile(info, io.BytesIO(evil))
        link = tarfile.TarInfo("images/cat/passwd.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
        absolute = tarfile.TarInfo("/tmp/absolute.jpg")
        absolute.size = len(evil)
        archive.addfile(absolute, io.BytesIO(evil))


def test_tar_slip_entries_are_never_read(tmp_path, tiny_params):
    source = good_tree(tmp_path / "images")
    archive = tmp_path / "bad.tar.gz"
    _tar_with_bad_entries(archive, source)
    summary, report = run_prepare(tmp_path, settings_for(tmp_path, tiny_params, archive))
    unsafe = {p["path"]: p["detail"] for p in report["problems"] if p["kind"] == "unsafe_entry"}
    assert set(unsafe) == {"../evil.jpg", "images/cat/passwd.jpg", "/tmp/absolute.jpg"}
    assert "/etc/passwd" in unsafe["images/cat/passwd.jpg"]
    assert report["kept"] == 18
    with pytest.raises(UserError, match=r"\.\./evil\.jpg: unsafe entry"):
        run_prepare(tmp_path, settings_for(tmp_path, tiny_params, archive, on_error="fail"), "failed")


def test_zip_slip_and_folder_symlinks_are_refused(tmp_path, tiny_params):
    source = good_tree(tmp_path / "images")
    (source / "cat" / "escape.jpg").symlink_to("/etc/passwd")
    _, report = run_prepare(tmp_path, settings_for(tmp_path, tiny_params, source), "from_folder")
    assert {"kind": "unsafe_entry", "path": "cat/escape.jpg", "detail": "link to '/etc/passwd', outside the folder"} \
        in report["problems"]
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for i in range(20):
            bundle.writestr(f"{('cat', 'dog')[i % 2]}/{i}.jpg", image_bytes("JPEG", seed=i))
        bundle.writestr("../evil.jpg", image_bytes("JPEG", seed=100))
    _, report = run_prepare(tmp_path, settings_for(tmp_path, tiny_params, archive, val_fraction=0.3,
                                                   test_fraction=0.3), "from_zip")
    assert [p["path"] for p in report["problems"]] == ["../evil.jpg"]


@pytest.mark.parametrize("suffix, mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".zip", None)])
def test_archives_give_the_same_dataset_as_the_folder(tmp_path, tiny_params, suffix, mode):
    root = good_tree(tmp_path / "images")
    archive = tmp_path / f"images{suffix}"
    if mode:
        with tarfile.open(archive, mode) as bundle:
            bundle.add(root, arcname="images")
    else:
        shutil.make_archive(str(archive).removesuffix(".zip"), "zip", tmp_path, "images")
    run_prepare(tmp_path, settings_for(tmp_path, tiny_params, root), "folder")
    run_prepare(tmp_path, settings_for(tmp_path, tiny_params, archive), "archive")
    for name in ("train_images.npy", "test_labels.npy", "summary.json", "stats.json"):
        assert (tmp_path / "folder" / name).read_bytes() == (tmp_path / "archive" / name).read_bytes(), name
    assert not list(tmp_path.glob("archive/**/*.jpg"))  # nothing extracted


def test_train_test_layout_keeps_its_test_set_and_blocks_leakage(tmp_path, tiny_params):
    root = tmp_path / "bundle"
    good_tree(root / "train", per_class=8)
    good_tree(root / "test", per_class=3)
    for k, name in enumerate(("cat", "dog", "owl")):  # regenerate test images so they differ from train's
        for i, file in enumerate(sorted((root / "test" / name).iterdir())):
            file.write_bytes(image_bytes("PNG", (18, 18), seed=1000 + 10 * k + i))
    shutil.copy(root / "test" / "cat" / "000.jpg", root / "train" / "cat" / "leaked.png")
    summary, report = run_prepare(tmp_path, settings_for(tmp_path, tiny_params, root))
    assert [(p["path"], p["kind"]) for p in report["problems"]] == [("train/cat/leaked.png", "duplicate_across_splits")]
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert set(manifest[manifest["path"].str.startswith("test/")]["split"]) == {"test"}
    assert summary["splits"]["test"]["count"] == 9
    by_split = manifest.groupby("split")["sha256"].apply(set)
    assert not (by_split["train"] & by_split["test"]) and not (by_split["val"] & by_split["test"])


def test_separate_test_path(tmp_path, tiny_params):
    train = good_tree(tmp_path / "train", per_class=8)
    test = tmp_path / "test"
    for k, name in enumerate(("cat", "dog", "owl")):
        (test / name).mkdir(parents=True)
        for i in range(2):
            (test / name / f"t{i}.png").write_bytes(image_bytes("PNG", seed=500 + 10 * k + i))
    summary, _ = run_prepare(tmp_path, settings_for(tmp_path, tiny_params, train, test_path=str(test)))
    assert summary["splits"]["test"]["count"] == 6
    assert summary["splits"]["train"]["count"] + summary["splits"]["val"]["count"] == 24


def test_adding_a_file_moves_no_existing_file(tmp_path, tiny_params):
    root = good_tree(tmp_path / "images", per_class=12)
    run_prepare(tmp_path, settings_for(tmp_path, tiny_params, root), "before")
    (root / "dog" / "new.png").write_bytes(image_bytes("PNG", seed=4242))
    run_prepare(tmp_path, settings_for(tmp_path, tiny_params, root), "after")
    before = pd.read_parquet(tmp_path / "before" / "manifest.parquet").set_index("path")["split"]
    after = pd.read_parquet(tmp_path / "after" / "manifest.parquet").set_index("path")["split"]
    assert after.drop("dog/new.png").equals(before)


def test_the_same_input_twice_gives_identical_bytes(tmp_path, tiny_params):
    root = good_tree(tmp_path / "images")
    run_prepare(tmp_path, settings_for(tmp_path, tiny_params, root), "a")
    run_prepare(tmp_path, settings_for(tmp_path, tiny_params, root), "b")
    for file in (tmp_path / "a").iterdir():
        assert file.read_bytes() == (tmp_path / "b" / file.name).read_bytes(), file.name


def test_missing_or_unsupported_paths_are_one_clear_error(tmp_path, tiny_params):
    with pytest.raises(UserError, match="nowhere: no such file or folder"):
        run_prepare(tmp_path, settings_for(tmp_path, tiny_params, tmp_path / "nowhere"))
    (tmp_path / "data.rar").write_bytes(b"Rar!")
    with pytest.raises(UserError, match="not a folder nor a .tar, .tar.gz, .tgz or .zip archive"):
        run_prepare(tmp_path, settings_for(tmp_path, tiny_params, tmp_path / "data.rar"))
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(UserError, match="broken.tar.gz"):
        run_prepare(tmp_path, settings_for(tmp_path, tiny_params, tmp_path / "broken.tar.gz"))


def test_paths_column_keeps_the_strings_and_sorts_them_as_python_does():
    from resnet_mlops.data.examples import Paths, PathsBuilder

    names = ["b/é.png", "a/z.png", "Z/1.png", "a/ä.png", "b/e.png", "😀/x.png", "a/z.png"]
    builder = PathsBuilder()
    builder.extend(names[:3])
    builder.extend(names[3:])
    paths = builder.build()
    assert len(paths) == len(names) and list(paths) == names and paths[5] == "😀/x.png"
    order = paths.sorted_order()
    assert order.tolist() == sorted(range(len(names)), key=names.__getitem__)  # stable, code-point order
    assert list(paths.take(order)) == sorted(names)
    assert Paths.concat([paths]) is paths and list(Paths.concat([paths, Paths.of(["c"])])) == names + ["c"]


def test_known_files_writes_what_np_save_writes_and_reads_it_back(tmp_path):
    from resnet_mlops.data.cache import KnownFiles

    files = [(f"cat/{i}.jpg", (100 + i, 7, 9000 + i)) for i in range(5)] + [("archive#entry", None)]
    known = KnownFiles(tmp_path / "cache", tmp_path / "photos")
    shas, fresh = known.shas(files)
    assert not fresh.any()
    new = np.array([bytes([i]) * 32 for i in range(6)], "S32")
    known.saw(new[:6])
    known.save()
    records = np.load(known.path, allow_pickle=False)
    expected = np.zeros(5, KnownFiles._DTYPE)
    expected["stat"] = [stat for _, stat in files[:5]]
    expected["sha256"] = new[:5]
    expected["key"] = records["key"]
    reference = tmp_path / "reference.npy"
    np.save(reference, expected, allow_pickle=False)
    assert known.path.read_bytes() == reference.read_bytes()
    assert list(known.path.parent.iterdir()) == [known.path]  # the spilled records went with save

    again = KnownFiles(tmp_path / "cache", tmp_path / "photos")
    shas, fresh = again.shas(files[:2] + [(files[2][0], (1, 2, 3))])
    assert fresh.tolist() == [True, True, False] and shas[:2].tolist() == new[:2].tolist()


def test_image_names_are_told_as_splitext_tells_them():
    """The folder walk's quick suffix test agrees with posixpath.splitext on every kind of name."""
    import posixpath

    from resnet_mlops.data.folder import _is_image_name
    from resnet_mlops.dataset.images import EXTENSIONS

    names = ["a.jpg", "A.JPG", "cat/x.Jpeg", ".jpg", "..jpg", "cat/.png", ".x.png", "..x.png", "x.jpg.txt",
             "x.tar.gz", "dir.jpg/x", "dir.jpg/", "x.", "x", "jpg", "a/b/c.webp", "a/.hidden/x.gif", "x..bmp"]
    for name in names:
        assert _is_image_name(name) == (posixpath.splitext(name)[1].lower() in EXTENSIONS), name
    assert sum(map(_is_image_name, names)) == 8
