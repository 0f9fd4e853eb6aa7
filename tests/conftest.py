"""Test set-up: a messy synthetic data set for the notebook's smoke run, written to a temporary
folder.

`pytest` runs the notebook through nbmake first (it is listed first in `testpaths`), in smoke mode,
with PNEUMONIA_DATA_DIR and PNEUMONIA_OUTPUT_DIR pointing here, so the committed report is never
overwritten. The tests in this folder then check what that run wrote. The test settings
PNEUMONIA_REPLICAS and PNEUMONIA_MIXED_PRECISION are left as the caller set them (CI runs the
smoke notebook once more with them), and test_smoke_outputs.py checks that the run used them.
"""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import synthetic  # noqa: E402

SMOKE_ROOT = Path(tempfile.gettempdir()) / f"pneumonia_smoke_{os.getpid()}"
SMOKE_DATA = SMOKE_ROOT / "data"
SMOKE_OUTPUT = SMOKE_ROOT / "output"


def make_messy_kaggle_tree(parent):
    """The Kaggle download's shape: chest_xray/{train,val,test}, a nested chest_xray/chest_xray
    copy, a __MACOSX tree, system files, non-images, unreadable images, PNGs of other modes, and one
    film saved again under a second patient id."""
    root = synthetic.make_tree(Path(parent) / "chest_xray", val=True)
    shutil.copytree(root, root / "chest_xray", ignore=shutil.ignore_patterns("chest_xray"))
    mac = Path(parent) / "__MACOSX" / "chest_xray" / "train" / "NORMAL"
    mac.mkdir(parents=True)
    (mac / "._IM-0001-0001.jpeg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    normal, pneumonia = root / "train" / "NORMAL", root / "train" / "PNEUMONIA"
    for junk in (".DS_Store", "Thumbs.db", "._IM-0001-0001.jpeg"):
        (normal / junk).write_bytes(b"junk")
    (normal / "notes.txt").write_text("not an image")
    (normal / "IM-0900-0001.jpeg").write_bytes(b"")  # zero bytes
    (pneumonia / "person900_virus_1.jpeg").write_text("not an image")  # text named .jpeg
    good = next(pneumonia.glob("*.jpeg")).read_bytes()
    # the same film under a second patient id
    (pneumonia / "person903_bacteria_4.jpeg").write_bytes(good)
    (pneumonia / "person901_bacteria_2.jpeg").write_bytes(good[: len(good) // 3])  # truncated
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((64, 64)) * 65535).astype(np.uint16)).save(
        normal / "IM-0901-0001.png"
    )
    Image.fromarray((rng.random((64, 64, 4)) * 255).astype(np.uint8), "RGBA").save(
        pneumonia / "person902_virus_3.png"
    )
    return root


BAD_FILES = {
    "train/NORMAL/.DS_Store": "ignored",
    "train/NORMAL/Thumbs.db": "ignored",
    "train/NORMAL/._IM-0001-0001.jpeg": "ignored",
    "train/NORMAL/notes.txt": "ignored",
    "train/NORMAL/IM-0900-0001.jpeg": "unreadable",
    "train/PNEUMONIA/person900_virus_1.jpeg": "unreadable",
    "train/PNEUMONIA/person901_bacteria_2.jpeg": "unreadable",
}


def pytest_configure(config):
    if SMOKE_ROOT.exists():
        shutil.rmtree(SMOKE_ROOT)
    make_messy_kaggle_tree(SMOKE_DATA)
    os.environ.update(
        {
            "PNEUMONIA_SMOKE": "1",
            "PNEUMONIA_DATA_DIR": str(SMOKE_DATA),
            "PNEUMONIA_OUTPUT_DIR": str(SMOKE_OUTPUT),
            "PNEUMONIA_SEED": "42",
        }
    )
    os.environ.pop("PNEUMONIA_VGG16_WEIGHTS", None)
    # PNEUMONIA_REPLICAS and PNEUMONIA_MIXED_PRECISION stay as the caller set them.


def pytest_unconfigure(config):
    shutil.rmtree(SMOKE_ROOT, ignore_errors=True)


@pytest.fixture(scope="module")
def metrics():
    """metrics.json of the smoke run that nbmake made first."""
    path = SMOKE_OUTPUT / "results" / "metrics.json"
    if not path.exists():
        pytest.fail(
            f"{path} is missing: run `pytest` from the repository root so that nbmake runs "
            "pneumonia_cnn.ipynb before these tests."
        )
    return json.loads(path.read_text())


class ConstantModel:
    """Stands in for a Keras model: predicts fixed probabilities, whatever it is given."""

    def __init__(self, probs):
        self.probs = np.asarray(probs, dtype="float32").reshape(-1, 1)

    def predict(self, data, **options):
        return self.probs
