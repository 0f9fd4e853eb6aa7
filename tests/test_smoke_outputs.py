"""Checks on what the notebook's smoke run (run first by nbmake) wrote to PNEUMONIA_OUTPUT_DIR."""

import os

import numpy as np
import pandas as pd
import pytest

from conftest import BAD_FILES, SMOKE_DATA, SMOKE_OUTPUT

MODELS = ("small_cnn", "deep_cnn", "vgg16")  # trained
CANDIDATES = MODELS + ("ensemble",)  # what the best model is chosen from
FIGURES = (
    "sample_images",
    "augmentation",
    "history_small_cnn",
    "history_deep_cnn",
    "history_vgg16",
    "roc_validation",
    "confusion_matrices_test",
    "roc_pr_test",
    "gradcam_test",
    "error_gallery",
    "lung_masks_validation",
)
TEST_IMAGES = 20  # synthetic test split: 5 patients x 2 films per class


@pytest.fixture(scope="module")
def predictions():
    return pd.read_csv(SMOKE_OUTPUT / "results" / "test_predictions.csv")


def test_run_metadata(metrics):
    assert metrics["mode"] == "smoke" and metrics["seed"] == 42
    assert metrics["best_model"] in CANDIDATES
    assert set(metrics["models"]) == set(CANDIDATES)
    sections = ("data_audit", "small_cnn", "deep_cnn", "vgg16", "stress_tests", "occlusion")
    for section in (*sections, "test_evaluation", "total"):
        assert metrics["timings"][section] >= 0
    assert metrics["timings"]["total"] >= sum(
        v for k, v in metrics["timings"].items() if k != "total"
    )


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
    assert sum(images["test"].values()) == TEST_IMAGES
    train_and_val = sum(images["train"].values()) + sum(images["val"].values())
    # train films + folded val/ + two PNGs (16-bit, RGBA) + a copy
    assert train_and_val == 20 * 2 + 4 + 3
    assert metrics["data"]["duplicates"] == {
        "groups": 1,
        "spanning_train_and_test": 0,
        "spanning_patient_ids": 1,
        "merged_patient_groups": 1,
        "ids_in_train_and_test": 0,  # synthetic train and test patients have distinct ids
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
    # the ensemble trains nothing
    assert entry["epochs"] >= 1 if model in MODELS else entry["epochs"] == 0
    assert entry["threshold_source"] == "validation" and 0 <= entry["threshold"] <= 1
    assert 0 <= entry["val"]["auc"] <= 1 and 0 <= entry["brier"] <= 1
    for key in ("test_at_0.5", "test"):
        result = entry[key]
        assert result["tp"] + result["fp"] + result["tn"] + result["fn"] == TEST_IMAGES
        for name in ("sensitivity", "specificity", "accuracy", "auc"):
            assert 0 <= result[name] <= 1
    assert (
        entry["test_at_0.5"]["threshold"] == 0.5
        and entry["test"]["threshold"] == entry["threshold"]
    )
    for name in ("sensitivity", "specificity", "auc"):  # patient-bootstrap intervals
        low, high = entry["test"][f"{name}_ci"]
        assert 0 <= low <= entry["test"][name] + 1e-9 and entry["test"][name] <= high + 1e-9
        assert high <= 1
    assert not any(key.endswith("_ci") for key in entry["test_at_0.5"])  # no intervals at 0.5
    assert "auc_ci" not in entry and "best_min_sensitivity_specificity_on_test" not in entry
    assert entry["threshold_criterion"] == metrics["protocol"]["threshold_rule"]
    assert set(entry["sensitivity_by_type"]) == {"bacteria", "virus"}


@pytest.mark.parametrize("model", CANDIDATES)
def test_predictions_agree_with_metrics(metrics, predictions, model):
    assert len(predictions) == TEST_IMAGES and predictions["path"].is_unique
    assert set(predictions["label"]) == {0, 1}
    assert (predictions["label"] == predictions["path"].str.contains("PNEUMONIA").astype(int)).all()
    probs, labels = predictions[model].to_numpy(), predictions["label"].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    entry = metrics["models"][model]
    for key in ("test_at_0.5", "test"):
        predicted = probs >= entry[key]["threshold"]
        assert int(np.sum(predicted & (labels == 1))) == entry[key]["tp"]
        assert int(np.sum(~predicted & (labels == 0))) == entry[key]["tn"]


def test_ensemble_is_the_mean_of_its_members(metrics, predictions):
    np.testing.assert_allclose(
        predictions["ensemble"], predictions[list(MODELS)].mean(axis=1), atol=1e-6
    )
    ensemble = metrics["models"]["ensemble"]
    assert ensemble["params"] == sum(metrics["models"][model]["params"] for model in MODELS)


def test_operating_points_chosen_on_validation(metrics):
    points = metrics["operating_points"]
    assert [point["val_sensitivity_target"] for point in points] == [0.9, 0.95, 0.98]
    for point in points:
        assert point["val_sensitivity"] >= point["val_sensitivity_target"]


def test_label_free_analysis_is_separate_and_keeps_the_protocol(metrics, predictions):
    analysis = metrics["label_free_analysis"]
    assert analysis["headline"] is False
    assert set(analysis["prevalence"]) == set(CANDIDATES)
    labels = predictions["label"].to_numpy()
    for shares in analysis["prevalence"].values():
        assert 0 < shares["val estimate"] < 1 and 0 < shares["test estimate"] < 1
        assert shares["test true"] == pytest.approx(labels.mean())
    assert set(analysis["adabn"]) == {"deep_cnn"}  # the only model with batch normalisation
    adapted = analysis["adabn"]["deep_cnn"]
    assert adapted["val"]["sensitivity"] >= 0.95  # threshold chosen on (adapted) validation data
    assert adapted["test"]["threshold"] == adapted["threshold"]
    assert (
        adapted["test"]["tp"]
        + adapted["test"]["fp"]
        + adapted["test"]["tn"]
        + adapted["test"]["fn"]
        == TEST_IMAGES
    )
    assert metrics["timings"]["label_free_analysis"] >= 0


def test_lung_share_block_covers_every_single_model_on_random_films(metrics):
    gradcam = metrics["gradcam"]
    assert gradcam["target"] == "logit"  # the probability's gradient vanishes when it saturates
    assert gradcam["region"] and 0 < gradcam["mean_region_fraction"] < 1
    for model in MODELS:
        for split in ("val", "test"):
            result = gradcam[model][split]
            assert result["films"] + result["films_without_heat"] > 0  # found lung fields
            if result["films"]:  # films whose map holds no heat at all have no lung share
                assert 0 <= result["lung_share"] <= 1
    assert set(gradcam["mask_failures"]) == {"val", "test"}


def test_shortcut_probe_and_image_statistics(metrics):
    probe = metrics["shortcut_probe"]
    assert probe["thumbnail_px"] == 8 and 0 <= probe["val_auc"] <= 1 and 0 <= probe["test_auc"] <= 1
    groups = {(row["split"], row["class"]) for row in metrics["image_statistics"]}
    assert groups == {
        (split, name) for split in ("train", "val", "test") for name in ("NORMAL", "PNEUMONIA")
    }
    assert all(
        row["sharpness"] > 0 and 0 < row["brightness"] < 255 for row in metrics["image_statistics"]
    )
    assert all(
        set(row) == {"split", "class", "films", "brightness", "contrast", "sharpness"}
        for row in metrics["image_statistics"]
    )


def test_protocol_and_interval_method_are_recorded(metrics):
    protocol = metrics["protocol"]
    assert set(protocol) == {"commit", "model_choice", "threshold_rule", "headline"}
    assert all(isinstance(text, str) and text for text in protocol.values())
    assert "patients" in metrics["interval_method"]
    assert "bootstrap" in metrics["interval_method"]


def test_stress_tests_cover_every_candidate_and_the_worst_case_is_their_minimum(metrics):
    stresses = metrics["stress_tests"]
    assert set(stresses) == set(CANDIDATES)
    names = set(stresses["vgg16"])
    assert "none" in names and len(names) >= 5
    assert metrics["stress_films"] >= 1
    for model, by_stress in stresses.items():
        assert set(by_stress) == names
        for figures in by_stress.values():
            assert set(figures) == {"val_auc", "val_sensitivity", "val_specificity"}
            assert all(0 <= value <= 1 for value in figures.values())
        worst = metrics["worst_case"][model]
        for key, value in worst.items():
            assert value == min(figures[key] for figures in by_stress.values())


def test_no_stress_reproduces_the_clean_validation_auc_when_every_film_is_drawn(metrics):
    """The stress pipeline (stored film, then crop, equalisation and resize) must give what the
    training pipeline gives: with every validation film drawn (the smoke data is small), the
    unstressed AUC is the clean validation AUC. In mixed precision the two paths may round apart."""
    if metrics["stress_films"] != sum(metrics["data"]["images"]["val"].values()):
        pytest.skip("the stress tests drew a part of the validation films")
    if metrics["precision_policy"] != "float32":
        pytest.skip("float16 rounding can reorder nearly tied films")
    for model, by_stress in metrics["stress_tests"].items():
        clean = metrics["models"][model]["val"]["auc"]
        assert by_stress["none"]["val_auc"] == pytest.approx(clean, abs=1e-6), model


def test_occlusion_of_the_lung_region(metrics):
    occlusion = metrics["occlusion"]
    assert set(MODELS) <= set(occlusion)
    for model in MODELS:
        result = occlusion[model]
        assert result["films"] >= 1
        assert 0 <= result["val_auc_lungs_blanked"] <= 1
        assert 0 <= result["val_auc_lungs_only"] <= 1
    assert 0 < metrics["occlusion_region_fraction"] < 1


def test_the_best_model_follows_the_protocol(metrics):
    choice = metrics["model_choice"]
    assert choice["rule"] == metrics["protocol"]["model_choice"]
    candidates = choice["candidates"]
    assert set(candidates) == set(CANDIDATES)
    for model, figures in candidates.items():
        assert figures["lungs_blanked"] == metrics["occlusion"][model]["val_auc_lungs_blanked"]
        assert figures["worst_specificity"] == metrics["worst_case"][model]["val_specificity"]
        assert figures["parameters"] == metrics["models"][model]["params"]
    lungs_matter = [m for m, c in candidates.items() if c["lungs_blanked"] < c["lungs_only"]]
    assert choice["eligible"] == (lungs_matter or list(candidates))
    top = max(candidates[model]["worst_specificity"] for model in choice["eligible"])
    assert set(choice["tied"]) <= set(choice["eligible"])
    assert all(candidates[model]["worst_specificity"] >= top - 0.01 for model in choice["tied"])
    assert metrics["best_model"] in choice["tied"]
    reference = choice["clean_auc_reference"]
    assert set(choice["clean_auc_differences"]) == set(CANDIDATES) - {reference}
    for low, high in choice["clean_auc_differences"].values():
        assert -1 <= low <= high <= 1


def test_mcnemar_holm_adjustment_never_lowers_a_p_value(metrics):
    mcnemar = metrics["mcnemar"]
    assert len(mcnemar["models"]) == 2 and set(mcnemar["models"]) <= set(MODELS)
    assert set(mcnemar["p"]) == set(mcnemar["p_holm"]) == {"all", "pneumonia", "normal"}
    for group, p in mcnemar["p"].items():
        assert 0 <= p <= mcnemar["p_holm"][group] <= 1
    assert "mcnemar_p" not in metrics


def test_best_balanced_point_per_candidate(metrics):
    balanced = metrics["best_min_sensitivity_specificity_on_test"]
    assert set(balanced) == set(CANDIDATES)
    for model, value in balanced.items():
        chosen = metrics["models"][model]["test"]
        # no threshold does worse than the chosen one on min(sensitivity, specificity)
        assert min(chosen["sensitivity"], chosen["specificity"]) <= value <= 1


def test_seed_rows_name_the_best_model(metrics):
    seeds = pd.read_csv(SMOKE_OUTPUT / "results" / "seeds.csv")
    rows = seeds[seeds["seed"] == metrics["seed"]]
    assert set(rows["model"]) == set(CANDIDATES)
    assert (rows["best_model"] == metrics["best_model"]).all()
    for _, row in rows.iterrows():
        assert row["test_auc"] == pytest.approx(metrics["models"][row["model"]]["test"]["auc"])


@pytest.mark.parametrize("figure", FIGURES)
def test_figure_written(figure, metrics):
    test = metrics["models"][metrics["best_model"]]["test"]
    if figure == "error_gallery" and test["fp"] + test["fn"] == 0:
        # the notebook says instead that the chosen model made no error on the test films
        assert not (SMOKE_OUTPUT / "figures" / f"{figure}.png").exists()
        return
    path = SMOKE_OUTPUT / "figures" / f"{figure}.png"
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
