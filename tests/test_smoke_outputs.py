"""Checks on what the notebook's smoke run (run first by nbmake) wrote to PNEUMONIA_OUTPUT_DIR."""

import os

import numpy as np
import pandas as pd
import pytest

from conftest import BAD_FILES, SMOKE_DATA, SMOKE_OUTPUT

MODELS = ("small_cnn", "deep_cnn", "vgg16")  # trained
CANDIDATES = MODELS + ("ensemble",)  # what the best model is chosen from
TEST_SETS = ("internal_test", "test")
FIGURES = (
    "sample_images",
    "augmentation",
    "history_small_cnn",
    "history_deep_cnn",
    "history_vgg16",
    "roc_validation",
    "confusion_matrices",
    "roc_test",
    "probabilities_test",
    "normal_image_statistics",
    "gradcam_test",
)
TEST_IMAGES = 20  # synthetic official test folder: 5 patients x 2 images per class


@pytest.fixture(scope="module")
def predictions():
    return pd.read_csv(SMOKE_OUTPUT / "results" / "test_predictions.csv")


def test_run_metadata(metrics):
    assert metrics["mode"] == "smoke" and metrics["seed"] == 42
    assert metrics["best_model"] in CANDIDATES
    assert set(metrics["models"]) == set(CANDIDATES)
    sections = ("data_audit", "input_pipeline", *MODELS, "validation", "test_evaluation")
    for section in (*sections, "total"):
        assert metrics["timings"][section] >= 0
    assert metrics["timings"]["total"] >= sum(
        v for k, v in metrics["timings"].items() if k != "total"
    )
    assert metrics["reference_speed"]["ms_per_image"] > 0


def test_run_used_the_requested_replicas_and_precision(metrics):
    """CI runs the smoke notebook once more with PNEUMONIA_REPLICAS=2 and
    PNEUMONIA_MIXED_PRECISION=1: the run must really have used them (this machine has no GPU, so
    the policy is float32 unless mixed precision is forced)."""
    replicas = os.environ.get("PNEUMONIA_REPLICAS", "1")
    assert metrics["replicas"] == (1 if replicas in ("0", "1") else int(replicas))
    mixed = os.environ.get("PNEUMONIA_MIXED_PRECISION") == "1"
    assert metrics["precision_policy"] == ("mixed_float16" if mixed else "float32")


def test_data_counts_each_image_once_and_lists_bad_files(metrics):
    images = metrics["data"]["images"]
    assert set(images) == {"train", "val", "internal_test", "test"}
    assert sum(images["test"].values()) == TEST_IMAGES
    training_folder = sum(
        sum(images[split].values()) for split in ("train", "val", "internal_test")
    )
    # training images + folded val/ + two PNGs (16-bit, RGBA) + a copy
    assert training_folder == 20 * 2 + 4 + 3
    assert all(count > 0 for split in images.values() for count in split.values())
    assert metrics["data"]["duplicates"] == {
        "groups of byte-identical files": 1,
        "groups spanning the training and test folders": 0,
        "groups spanning patient ids": 1,
        "patient groups merged by a shared file": 1,
    }
    assert metrics["data"]["official_val_images_folded_into_train"] == 4
    left_out = {
        row["path"]: row["status"].split(":")[0] for row in metrics["data"]["left_out_files"]
    }
    assert left_out == BAD_FILES  # listed whole, relative to the data folder
    assert all((SMOKE_DATA / "chest_xray" / path).exists() for path in left_out)
    assert all(count > 0 for count in metrics["data"]["patients"].values())


@pytest.mark.parametrize("model", CANDIDATES)
def test_model_metrics_in_range(metrics, model):
    entry = metrics["models"][model]
    assert entry["params"] > 0 and entry["train_seconds"] > 0
    if model in MODELS:  # stopped by validation loss within the ceiling; the kept epoch ran
        assert 1 <= entry["best_epoch"] <= entry["epochs_run"]
    else:
        assert entry["epochs_run"] == entry["best_epoch"] == 0  # the ensemble trains nothing
    assert 0 <= entry["threshold"] <= 1
    assert entry["val"]["sensitivity"] >= 0.95  # the protocol's threshold rule
    for split, count in (("internal_test", None), ("test", TEST_IMAGES)):
        result = entry[split]
        assert result["threshold"] == entry["threshold"]  # validation's threshold, never refitted
        total = result["tp"] + result["fp"] + result["tn"] + result["fn"]
        assert total == (count or sum(metrics["data"]["images"][split].values()))
        # the best over every threshold is at least what the validation threshold gives
        best = result["best_specificity_at_target"]
        assert 0 <= best <= 1
        if result["sensitivity"] >= 0.90:
            assert best >= result["specificity"] - 1e-12
    for split in ("val", *TEST_SETS):
        for name in ("sensitivity", "specificity", "auc"):  # patient-bootstrap intervals
            value, (low, high) = entry[split][name], entry[split][f"{name}_ci"]
            assert 0 <= low <= value + 1e-9 and value <= high + 1e-9 and high <= 1


def test_vgg16_fine_tunes_every_convolution_after_its_frozen_blocks(metrics):
    vgg16 = metrics["models"]["vgg16"]
    layers_per_block = (2, 2, 3, 3, 3)  # VGG16's 13 convolution layers in five blocks
    assert vgg16["frozen_blocks"] == 3  # the configuration's VGG_FROZEN_BLOCKS
    assert vgg16["conv_layers_trained"] == sum(layers_per_block[vgg16["frozen_blocks"] :]) == 6


@pytest.mark.parametrize("model", CANDIDATES)
def test_predictions_agree_with_metrics(metrics, predictions, model):
    assert set(predictions["split"]) == set(TEST_SETS) and predictions["path"].is_unique
    for split in TEST_SETS:
        rows = predictions[predictions["split"] == split]
        labels = rows["label"].to_numpy()
        assert set(labels) == {0, 1}
        assert (labels == rows["path"].str.contains("PNEUMONIA").to_numpy()).all()
        probs, entry = rows[model].to_numpy(), metrics["models"][model][split]
        assert ((probs >= 0) & (probs <= 1)).all()
        predicted = probs >= entry["threshold"]
        assert int(np.sum(predicted & (labels == 1))) == entry["tp"]
        assert int(np.sum(~predicted & (labels == 0))) == entry["tn"]
    internal = predictions.loc[predictions["split"] == "internal_test", "path"]
    # held-out patients of the training pool (the official val/ folder is folded into it)
    assert not internal.str.startswith("test/").any()


def test_ensemble_is_the_mean_of_its_members(metrics, predictions):
    np.testing.assert_allclose(
        predictions["ensemble"], predictions[list(MODELS)].mean(axis=1), atol=1e-6
    )
    ensemble = metrics["models"]["ensemble"]
    assert ensemble["params"] == sum(metrics["models"][model]["params"] for model in MODELS)


def test_protocol_and_interval_method_are_recorded(metrics):
    protocol = metrics["protocol"]
    assert set(protocol) == {"commit", "threshold_rule", "model_choice", "test_sets", "seeds"}
    assert all(isinstance(text, str) and text for text in protocol.values())
    assert "patients" in metrics["interval_method"]
    assert "bootstrap" in metrics["interval_method"]


def test_the_best_model_follows_the_protocol(metrics):
    choice, models = metrics["model_choice"], metrics["models"]
    aucs = {name: entry["val"]["auc"] for name, entry in models.items()}
    assert aucs[choice["leader"]] == max(aucs.values())
    assert set(choice["lead_intervals"]) == set(CANDIDATES) - {choice["leader"]}
    tied = [choice["leader"]] + [
        name for name, (low, _) in choice["lead_intervals"].items() if low <= 0
    ]
    assert choice["tied"] == tied
    if "ensemble" in tied:
        assert metrics["best_model"] == "ensemble"
    else:
        assert metrics["best_model"] == min(tied, key=lambda name: models[name]["params"])


def test_seed_rows_name_the_best_model(metrics):
    seeds = pd.read_csv(SMOKE_OUTPUT / "results" / "seeds.csv")
    rows = seeds[seeds["seed"] == metrics["seed"]]
    assert set(rows["model"]) == set(CANDIDATES)
    assert (rows["best_model"] == metrics["best_model"]).all()
    for _, row in rows.iterrows():
        entry = metrics["models"][row["model"]]
        assert row["test_auc"] == pytest.approx(entry["test"]["auc"])
        assert row["internal_test_specificity"] == pytest.approx(
            entry["internal_test"]["specificity"]
        )


@pytest.mark.parametrize("figure", FIGURES)
def test_figure_written(figure, metrics):
    path = SMOKE_OUTPUT / "figures" / f"{figure}.png"
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
