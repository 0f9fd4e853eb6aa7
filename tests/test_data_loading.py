"""The loader finds the one right copy of the data in every layout, lists bad files and fails
clearly."""

import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import synthetic
from conftest import BAD_FILES, make_messy_kaggle_tree
from notebook_code import load_helpers


@pytest.fixture(scope="module")
def nb():
    return load_helpers()


def no_download():
    raise ConnectionError("no network")


def locate(
    nb,
    data_dir="",
    kaggle_input="/nonexistent/kaggle/input",
    local_dir="/nonexistent/data",
    download=no_download,
):
    return nb["locate_data"](data_dir, kaggle_input, local_dir, download)


def counts(files):
    kept = files[files["status"] == "ok"]
    return kept.groupby(["source_folder", "class"]).size().to_dict()


EXPECTED = {
    ("train", "NORMAL"): 20,
    ("train", "PNEUMONIA"): 20,
    ("test", "NORMAL"): 10,
    ("test", "PNEUMONIA"): 10,
}


def test_kaggle_download_layout_counts_each_image_once(nb, tmp_path):
    root = make_messy_kaggle_tree(tmp_path)
    found, ignored, _ = locate(nb, tmp_path)
    assert found == root and root / "chest_xray" in ignored
    files = nb["scan_dataset"](found)
    assert counts(files) == {
        **EXPECTED,
        ("train", "NORMAL"): 21,
        ("train", "PNEUMONIA"): 22,
        ("val", "NORMAL"): 2,
        ("val", "PNEUMONIA"): 2,
    }
    assert (files.loc[files["source_folder"] == "val", "split"] == "train").all()
    status = {
        str(Path(p).relative_to(root)): s.split(":")[0]
        for p, s in zip(files["path"], files["status"], strict=True)
        if s != "ok"
    }
    assert status == BAD_FILES
    assert not any("__MACOSX" in path for path in files["path"])


def test_kaggle_input_read_only(nb, tmp_path):
    dataset = tmp_path / "input" / "chest-xray-pneumonia"
    root = synthetic.make_tree(dataset / "chest_xray")
    for path in [dataset, *dataset.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        found, _, source = locate(nb, kaggle_input=tmp_path / "input")
        assert found == root and source.startswith("Kaggle input")
        assert counts(nb["scan_dataset"](found)) == EXPECTED
    finally:
        for path in [dataset, *dataset.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_mendeley_zip_is_extracted_once(nb, tmp_path):
    source = synthetic.make_tree(tmp_path / "src" / "chest_xray")
    archive = tmp_path / "ChestXRay2017.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in source.rglob("*"):
            zipped.write(path, path.relative_to(tmp_path / "src"))
        zipped.writestr("__MACOSX/chest_xray/train/NORMAL/._IM-0001-0001.jpeg", b"junk")
    local = tmp_path / "data"
    found, _, _ = locate(nb, archive, local_dir=local)
    assert found == local / "ChestXRay2017" / "chest_xray"
    assert counts(nb["scan_dataset"](found)) == EXPECTED
    marker = local / "ChestXRay2017" / ".extracted"
    before = marker.stat().st_mtime_ns
    assert locate(nb, archive, local_dir=local)[0] == found and marker.stat().st_mtime_ns == before


def test_plain_folder_any_letter_case_and_local_data_dir(nb, tmp_path):
    root = synthetic.make_tree(tmp_path / "data" / "xray", class_case=str.lower)
    found, _, source = locate(nb, local_dir=tmp_path / "data")
    assert found == root and source.startswith("local folder")
    assert counts(nb["scan_dataset"](found)) == EXPECTED


def test_image_modes_decode_to_one_channel(nb, tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "gray.png": (rng.random((40, 50)) * 255).astype(np.uint8),
        "rgb.jpeg": (rng.random((40, 50, 3)) * 255).astype(np.uint8),
        "rgba.png": (rng.random((40, 50, 4)) * 255).astype(np.uint8),
        "gray16.png": (rng.random((40, 50)) * 65535).astype(np.uint16),
    }
    for name, array in arrays.items():
        Image.fromarray(array).save(tmp_path / name)
        assert nb["inspect_image"](tmp_path / name)[0] == ""
        image = nb["load_image"](str(tmp_path / name), 32).numpy()
        assert (
            image.shape == (32, 32, 1) and 0 <= image.min() and image.max() <= 1 and image.std() > 0
        )


def test_no_data_anywhere_gives_one_clear_message(nb, tmp_path):
    with pytest.raises(nb["DataError"]) as error:
        locate(nb, kaggle_input=tmp_path / "kaggle", local_dir=tmp_path / "data")
    message = str(error.value)
    assert "Kaggle input" in message and "local folder" in message and "no network" in message
    assert "PNEUMONIA_DATA_DIR" in message


def test_data_dir_that_does_not_exist(nb, tmp_path):
    with pytest.raises(nb["DataError"], match="PNEUMONIA_DATA_DIR=.*not a folder"):
        locate(nb, tmp_path / "missing")


def test_folder_without_train_split(nb, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(nb["DataError"], match="no folder with a train/ split"):
        locate(nb, tmp_path / "empty")


def test_missing_test_split(nb, tmp_path):
    root = synthetic.make_tree(tmp_path / "chest_xray")
    shutil.rmtree(root / "test")
    with pytest.raises(nb["DataError"], match="No test/ folder"):
        nb["scan_dataset"](root)


@pytest.mark.parametrize("damage", ["remove", "empty", "junk only"])
def test_missing_or_empty_class(nb, tmp_path, damage):
    root = synthetic.make_tree(tmp_path / "chest_xray")
    folder = root / "train" / "NORMAL"
    shutil.rmtree(folder)
    if damage != "remove":
        folder.mkdir()
    if damage == "junk only":
        (folder / ".DS_Store").write_bytes(b"junk")
        (folder / "IM-0001-0001.jpeg").write_bytes(b"")
    with pytest.raises(nb["DataError"], match="No readable NORMAL images"):
        nb["scan_dataset"](root)


def test_vgg16_weights_file_must_exist(nb, tmp_path):
    with pytest.raises(nb["DataError"], match="PNEUMONIA_VGG16_WEIGHTS"):
        nb["vgg16_weights"](str(tmp_path / "missing.h5"), smoke=False, download=no_download)
    weights = tmp_path / "weights.h5"
    weights.write_bytes(b"h5")
    assert nb["vgg16_weights"](str(weights), smoke=False, download=no_download) == str(weights)
    assert (
        nb["vgg16_weights"]("", smoke=False, download=lambda: "/cache/vgg16.h5")
        == "/cache/vgg16.h5"
    )
    assert nb["vgg16_weights"]("", smoke=True, download=no_download) is None


def test_vgg16_weights_without_internet_stop_with_the_fix(nb):
    with pytest.raises(
        nb["DataError"], match="ConnectionError: no network.*PNEUMONIA_VGG16_WEIGHTS"
    ):
        nb["vgg16_weights"]("", smoke=False, download=no_download)


def kaggle_mount(input_dir, nested):
    """The data set mounted as Kaggle does: /kaggle/input/<slug>/chest_xray (classic) or
    /kaggle/input/datasets/<owner>/<slug>/chest_xray (newer)."""
    parent = input_dir / ("datasets/paultimothymooney" if nested else "") / "chest-xray-pneumonia"
    return synthetic.make_tree(parent / "chest_xray")


@pytest.mark.parametrize("nested", [False, True], ids=["classic mount", "datasets mount"])
def test_kaggle_mounts_with_a_second_data_set_attached(nb, tmp_path, nested):
    root = kaggle_mount(tmp_path / "input", nested)
    cats = tmp_path / "input" / "other-ds" / "train" / "cats"
    cats.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(cats / "cat.jpeg")
    found, _, source = locate(nb, kaggle_input=tmp_path / "input")
    assert found == root and source.startswith("Kaggle input")
    assert counts(nb["scan_dataset"](found)) == EXPECTED


def test_relative_data_dir_names_the_absolute_path_tried(nb, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(nb["DataError"]) as error:
        locate(nb, "chest_xray")
    assert str(tmp_path / "chest_xray") in str(error.value) and "notebook's folder" in str(
        error.value
    )


def test_data_dir_expands_home_and_variables(nb, tmp_path, monkeypatch):
    root = synthetic.make_tree(tmp_path / "xray" / "chest_xray")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XRAY_DATA", str(tmp_path / "xray"))
    assert locate(nb, "~/xray")[0] == root
    assert locate(nb, "$XRAY_DATA/chest_xray")[0] == root
    assert locate(nb, "${HOME}/xray")[0] == root


def test_sample_per_class_shows_what_there_is(nb):
    frame = pd.DataFrame(
        {"class": ["PNEUMONIA"] * 9 + ["NORMAL"] * 2, "path": [f"f{index}" for index in range(11)]}
    )
    samples = nb["sample_per_class"](frame, 4, seed=0)
    assert samples["class"].value_counts().to_dict() == {"PNEUMONIA": 4, "NORMAL": 2}
    assert samples["class"].iloc[0] == "NORMAL"


def test_file_status_names_the_reason(nb, tmp_path):
    Image.fromarray(np.zeros((6, 9), np.uint8)).save(tmp_path / "IM-0001-0001.png")
    (tmp_path / "IM-0002-0001.jpeg").write_bytes(b"")
    (tmp_path / "IM-0003-0001.jpeg").write_text("not an image")
    (tmp_path / "notes.txt").write_text("text")
    (tmp_path / "._IM-0001-0001.png").write_bytes(b"fork")
    status = {path.name: nb["file_status"](path) for path in tmp_path.iterdir()}
    assert status["IM-0001-0001.png"] == ("ok", 6, 9, 1)
    assert status["IM-0002-0001.jpeg"] == ("unreadable: empty file", 0, 0, 0)
    assert status["IM-0003-0001.jpeg"][0].startswith("unreadable: cannot be decoded")
    assert status["notes.txt"] == ("ignored: not an image file", 0, 0, 0)
    assert status["._IM-0001-0001.png"] == ("ignored: system file", 0, 0, 0)


def test_data_places_look_in_order_and_a_data_dir_replaces_them(nb, tmp_path):
    places = nb["data_places"]("", tmp_path / "kaggle", tmp_path / "local", lambda: tmp_path / "dl")
    assert [label for label, _ in places] == [
        "Kaggle input",
        "local folder",
        "kagglehub download",
    ]
    assert [place() for _, place in places] == [
        tmp_path / "kaggle",
        tmp_path / "local",
        tmp_path / "dl",
    ]
    places = nb["data_places"](str(tmp_path), tmp_path / "kaggle", tmp_path / "local", no_download)
    assert [(label, place()) for label, place in places] == [("PNEUMONIA_DATA_DIR", tmp_path)]
