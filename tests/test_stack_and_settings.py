"""The notebook on every supported stack and under careless settings: the version check, the
hardware strategy, the sharpness augmentation written for old Keras releases (keras.ops only) and
the output folder of smoke runs."""

import os
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import pytest
from scipy import ndimage

from notebook_code import NOTEBOOK, load_helpers


@pytest.fixture(scope="module")
def nb():
    return load_helpers()


def cell_source(marker):
    """The source of the one code cell that contains marker."""
    cells = [
        cell.source
        for cell in nbformat.read(NOTEBOOK, as_version=4).cells
        if cell.cell_type == "code" and marker in cell.source
    ]
    assert len(cells) == 1, marker
    return cells[0]


MINIMUM = {"tensorflow": "2.16.1", "keras": "3.3.3"}


@pytest.mark.parametrize(
    "installed",
    [{"tensorflow": "2.16.1", "keras": "3.3.3"}, {"tensorflow": "2.21.0rc1", "keras": "3.10.0"}],
)
def test_supported_stacks_pass_the_check(nb, installed):
    nb["check_stack"](MINIMUM, installed.get)  # versions compare as numbers: 3.10 is newer than 3.3


@pytest.mark.parametrize(
    "installed, problem",
    [
        ({"tensorflow": "2.15.1", "keras": "3.3.3"}, "tensorflow 2.15.1 is older than 2.16.1"),
        ({"tensorflow": "2.18.1", "keras": "3.2.1"}, "keras 3.2.1 is older than 3.3.3"),
        ({"keras": "3.13.2"}, "tensorflow is not installed"),
    ],
)
def test_old_or_missing_stack_stops_with_the_install_line(nb, installed, problem):
    with pytest.raises(
        RuntimeError, match=problem + r'.*%pip install -U "tensorflow>=2.16.1" "keras>=3.3.3"'
    ):
        nb["check_stack"](MINIMUM, installed.get)


def test_an_excluded_version_stops_with_an_install_line_that_skips_it(nb):
    installed = {"tensorflow": "2.18.0", "keras": "3.7.0"}
    with pytest.raises(
        RuntimeError,
        match=r'keras 3.7.0 is a version this notebook cannot use.*"keras>=3.3.3,!=3.7.0"',
    ):
        nb["check_stack"](MINIMUM, installed.get, {"keras": "3.7.0"})
    nb["check_stack"](MINIMUM, {"tensorflow": "2.18.0", "keras": "3.7.1"}.get, {"keras": "3.7.0"})


def test_installed_stack_meets_the_minimum(nb):
    nb["check_stack"](nb["MINIMUM_VERSIONS"], nb["module_version"], nb["EXCLUDED_VERSIONS"])


def test_a_cpu_without_replicas_trains_on_one_device(nb):
    strategy, description = nb["detect_strategy"](0)
    assert description in ("CPU", "1 GPU") and strategy.num_replicas_in_sync == 1


def films(count, seed=0, size=12):
    return np.random.default_rng(seed).random((count, size, size, 1)).astype("float32")


def gaussian_reference(batch, sigma, taps=5):
    """A separable Gaussian of `taps` taps over rows and columns, zero outside the film."""
    offsets = np.arange(taps) - (taps - 1) / 2
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    for axis in (1, 2):
        batch = ndimage.convolve1d(batch, kernel / kernel.sum(), axis=axis, mode="constant")
    return batch


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.5])
def test_gaussian_blur_is_a_five_tap_gaussian(nb, sigma):
    batch = films(4, seed=1)
    blurred = np.asarray(nb["gaussian_blur"](batch, nb["keras"].ops.convert_to_tensor(sigma)))
    np.testing.assert_allclose(blurred, gaussian_reference(batch, sigma), atol=1e-5)


def test_sharpness_is_the_identity_outside_training(nb):
    layer = nb["RandomSharpness"]((-1.0, 1.0), (0.5, 1.5), seed=3)
    batch = films(8)
    np.testing.assert_array_equal(np.asarray(layer(batch, training=False)), batch)
    np.testing.assert_array_equal(np.asarray(layer(batch)), batch)
    assert not np.allclose(np.asarray(layer(batch, training=True)), batch)


def test_sharpness_of_amount_minus_one_is_the_blur(nb):
    """film + a * (film - blur) with a = -1 is the blurred film."""
    batch = films(4, seed=2)
    layer = nb["RandomSharpness"]((-1.0, -1.0), (1.0, 1.0), seed=0)
    blurred = np.asarray(layer(batch, training=True))
    np.testing.assert_allclose(blurred, gaussian_reference(batch, 1.0), atol=1e-5)


def test_sharpness_amount_is_drawn_per_film(nb):
    """One film repeated through the layer: each copy gets its own amount (the width is shared by
    the batch), recovered as the least-squares factor of (output - film) on (film - blur)."""
    film = films(1, seed=4, size=16)
    batch = np.repeat(film, 64, axis=0)
    layer = nb["RandomSharpness"]((-1.0, 1.0), (1.0, 1.0), seed=5)
    change = np.asarray(layer(batch, training=True)) - batch
    detail = batch - gaussian_reference(batch, 1.0)
    amounts = (change * detail).sum(axis=(1, 2, 3)) / (detail**2).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(change, amounts[:, None, None, None] * detail, atol=1e-5)
    assert amounts.min() >= -1 - 1e-4 and amounts.max() <= 1 + 1e-4
    assert amounts.min() < -0.5 and amounts.max() > 0.5  # both blurred and sharpened copies
    assert len(np.unique(np.round(amounts, 4))) > 50


def test_augmenter_sharpens_adds_noise_and_is_the_identity_outside_training(nb):
    augmenter = nb["make_augmenter"]()
    kinds = {type(layer).__name__: layer for layer in augmenter.layers}
    assert "RandomSharpness" in kinds and "RandomBlur" not in kinds
    assert kinds["RandomSharpness"].amount_range == nb["AUGMENT_SHARPNESS"]
    assert kinds["GaussianNoise"].stddev == nb["AUGMENT_NOISE"]
    batch = films(3, size=16)
    np.testing.assert_allclose(np.asarray(augmenter(batch, training=False)), batch, atol=1e-6)


def configuration(monkeypatch, tmp_path, **env):
    """The configuration cell run with only the given PNEUMONIA_* variables set, from tmp_path."""
    for name in [name for name in os.environ if name.startswith("PNEUMONIA_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    namespace = {"os": os, "Path": Path}
    exec(cell_source('SMOKE = os.environ.get("PNEUMONIA_SMOKE"'), namespace)
    return namespace


def test_smoke_run_without_output_folder_keeps_off_the_report(monkeypatch, tmp_path):
    config = configuration(monkeypatch, tmp_path, PNEUMONIA_SMOKE="1")
    assert config["OUTPUT_DIR"] == tmp_path / "smoke_output"
    # a full run writes the report
    assert configuration(monkeypatch, tmp_path)["OUTPUT_DIR"] == tmp_path
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "smoke_output/results/metrics.json"], cwd=NOTEBOOK.parent
    ).returncode
    assert ignored == 0, "smoke_output/ must be ignored by git"


def test_output_folder_and_weights_expand_home_and_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WEIGHTS_DIR", "/opt/weights")
    config = configuration(
        monkeypatch,
        tmp_path,
        PNEUMONIA_OUTPUT_DIR="~/runs/one",
        PNEUMONIA_VGG16_WEIGHTS="$WEIGHTS_DIR/vgg16.h5",
    )
    assert config["OUTPUT_DIR"] == tmp_path / "runs" / "one"
    assert config["VGG16_WEIGHTS"] == "/opt/weights/vgg16.h5"
