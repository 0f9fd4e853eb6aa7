"""Unit tests of the notebook's helpers that hold real logic: grouping and the three-way split,
threshold, metrics, the best specificity any threshold reaches, histogram equalisation, the layer
table, Grad-CAM maps, VGG16's clean head statistics and the sharpness test's blur. The choice of
the best model, the patient bootstrap and Grad-CAM from the logit are tested in test_evidence.py."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from notebook_code import load_helpers


@pytest.fixture(scope="module")
def nb():
    return load_helpers()


@pytest.mark.parametrize(
    "name, patient",
    [
        ("person1000_bacteria_2931.jpeg", "person1000"),
        ("person12_virus_39.jpeg", "person12"),
        ("IM-0115-0001.jpeg", "im-0115"),
        ("NORMAL2-IM-0381-0001.jpeg", "normal2-im-0381"),
        ("Scan.PNG", "file:scan"),  # no known pattern: a patient of its own
    ],
)
def test_patient_from_file_name(nb, name, patient):
    assert nb["patient_of"](name) == patient


def make_pool(n_patients=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for patient in range(n_patients):
        label = int(patient % 4 != 0)  # 3 pneumonia patients per normal one
        for image in range(rng.integers(1, 5)):
            rows.append(
                {
                    "patient": f"p{patient}",
                    "group": f"p{patient}",
                    "label": label,
                    "path": f"p{patient}_{image}",
                }
            )
    return pd.DataFrame(rows)


def test_patient_split_keeps_patients_together_and_classes_balanced(nb):
    pool = make_pool()
    val = nb["patient_split"](pool, 0.2, seed=7)
    assert not set(pool.loc[val, "patient"]) & set(pool.loc[~val, "patient"])
    assert 0.1 < val.mean() < 0.3
    assert abs(pool.loc[val, "label"].mean() - pool["label"].mean()) < 0.15
    np.testing.assert_array_equal(val, nb["patient_split"](pool, 0.2, seed=7))
    assert not np.array_equal(val, nb["patient_split"](pool, 0.2, seed=8))


def test_patient_split_keeps_a_merged_group_together(nb):
    pool = make_pool()
    pool.loc[pool["patient"].isin(["p1", "p2", "p3"]), "group"] = "p1"
    for seed in range(10):
        val = nb["patient_split"](pool, 0.2, seed=seed)
        merged = val[(pool["group"] == "p1").to_numpy()]
        assert merged.all() or not merged.any()


def test_linked_groups_merge_patients_through_chains_of_shared_files(nb):
    patients = ["a", "a", "b", "b", "c", "d", "e"]
    hashes = ["h1", "h2", "h2", "h3", "h3", "h4", "h5"]  # a-b share h2, b-c share h3; d, e alone
    groups = nb["linked_groups"](patients, hashes)
    assert len(set(groups[:5])) == 1 and groups[0] in {"a", "b", "c"}
    assert groups[5] == "d" and groups[6] == "e"
    assert (
        nb["linked_groups"](["x", "y"], ["h", "h"])[0]
        == nb["linked_groups"](["x", "y"], ["h", "h"])[1]
    )


def test_choose_threshold_is_highest_meeting_sensitivity(nb):
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(200, int), np.ones(300, int)]
    probs = np.clip(np.r_[rng.normal(0.3, 0.15, 200), rng.normal(0.7, 0.15, 300)], 0, 1)
    for target in (0.9, 0.95, 0.99):
        threshold = nb["choose_threshold"](labels, probs, target)
        assert (probs[labels == 1] >= threshold).mean() >= target
        higher = np.min(probs[probs > threshold]) if np.any(probs > threshold) else 1.1
        assert (probs[labels == 1] >= higher).mean() < target
    assert nb["choose_threshold"](labels, probs, 0.99) <= nb["choose_threshold"](labels, probs, 0.9)


def test_binary_metrics_counts(nb):
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    probs = np.array([0.1, 0.6, 0.2, 0.9, 0.4, 0.8, 0.7])
    metrics = nb["binary_metrics"](labels, probs, 0.5)
    assert (metrics["tp"], metrics["fn"], metrics["tn"], metrics["fp"]) == (3, 1, 2, 1)
    assert metrics["sensitivity"] == pytest.approx(0.75) and metrics[
        "specificity"
    ] == pytest.approx(2 / 3)
    assert metrics["accuracy"] == pytest.approx(5 / 7)


def test_rates_by_threshold_agree_with_binary_metrics(nb):
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(40, int), np.ones(60, int)]
    probs = rng.random(100)
    thresholds = np.sort(np.r_[0.0, rng.random(5), probs[:3], 1.0])  # some on a probability
    sensitivity, specificity = nb["rates_by_threshold"](labels, probs, thresholds)
    for threshold, sens, spec in zip(thresholds, sensitivity, specificity, strict=True):
        expected = nb["binary_metrics"](labels, probs, threshold)
        assert sens == pytest.approx(expected["sensitivity"])
        assert spec == pytest.approx(expected["specificity"])
    assert np.all(np.diff(sensitivity) <= 0) and np.all(np.diff(specificity) >= 0)


def test_best_specificity_is_the_maximum_over_every_threshold(nb):
    rng = np.random.default_rng(2)
    labels = np.r_[np.zeros(50, int), np.ones(70, int)]
    probs = np.round(rng.random(120), 2)  # ties between images, as in real probabilities
    for target in (0.5, 0.9, 1.0):
        best = nb["best_specificity"](labels, probs, target)
        sensitivity, specificity = nb["rates_by_threshold"](labels, probs, np.r_[probs, 1.1])
        assert best == pytest.approx(specificity[sensitivity >= target].max())
    assert nb["best_specificity"](labels, np.where(labels == 1, 0.9, 0.1), 0.9) == 1.0


def test_equalize_histogram_spreads_a_narrow_range(nb):
    tf = nb["tf"]
    image = tf.constant(np.linspace(100, 140, 64 * 64).reshape(64, 64, 1).astype("uint8"))
    equalised = nb["equalize_histogram"](image).numpy()
    assert equalised.min() == 0 and equalised.max() == 255
    order = np.argsort(image.numpy().ravel(), kind="stable")
    assert np.all(np.diff(equalised.ravel()[order].astype(int)) >= 0)  # monotone mapping


def tiny_model(nb, image_size):
    """A (backbone, head) pair like the notebook's models, small enough for a unit test."""
    keras, layers = nb["keras"], nb["layers"]
    inputs = keras.Input((image_size, image_size, 1))
    backbone = keras.Model(inputs, layers.Conv2D(4, 3, padding="same", activation="relu")(inputs))
    head = nb["make_head"]()
    nb["compose"](backbone, head, f"tiny_{image_size}")
    return {"backbone": backbone, "head": head, "image_size": image_size}


def test_explain_averages_member_maps_at_one_size(nb, tmp_path):
    paths = []
    for index in range(2):
        path = tmp_path / f"film{index}.png"
        Image.fromarray(
            np.random.default_rng(index).integers(0, 255, (40, 30), dtype=np.uint8)
        ).save(path)
        paths.append(str(path))
    nb["keras"].utils.set_random_seed(0)
    small, large = tiny_model(nb, 16), tiny_model(nb, 24)
    single = nb["explain"]([large], paths, 24)
    both = nb["explain"]([small, large], paths, 24)
    assert single.shape == both.shape == (2, 24, 24)
    assert 0 <= both.min() and both.max() <= 1 + 1e-6
    small_alone = nb["explain"]([small], paths, 24)
    np.testing.assert_allclose(both, (small_alone + single) / 2, atol=1e-5)


def test_three_way_split_keeps_patients_whole_and_the_shares(nb):
    rng = np.random.default_rng(0)
    rows = []
    for patient in range(300):
        label = int(patient % 4 != 0)  # a quarter of the patients normal
        for _ in range(rng.integers(1, 4)):
            rows.append({"group": f"p{patient}", "label": label})
    pool = pd.DataFrame(rows)
    parts = nb["three_way_split"](pool, 0.15, 0.15, seed=1)
    assert sum(len(part) for part in parts) == len(pool)
    groups = [set(part["group"]) for part in parts]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    for part, share in zip(parts, (0.7, 0.15, 0.15), strict=True):
        assert len(set(part["group"])) / 300 == pytest.approx(share, abs=0.04)
        assert part["label"].mean() == pytest.approx(pool["label"].mean(), abs=0.06)
    again = nb["three_way_split"](pool, 0.15, 0.15, seed=1)
    assert all(a.equals(b) for a, b in zip(parts, again, strict=True))


def test_layer_table_counts_batch_norm_statistics_as_not_trainable(nb):
    keras, layers = nb["keras"], nb["layers"]
    inputs = keras.Input((8, 8, 1))
    features = layers.BatchNormalization()(layers.Conv2D(4, 3, use_bias=False)(inputs))
    model = keras.Model(inputs, features)
    table = {row["kind"]: row for row in nb["layer_table"](model)}
    assert table["Conv2D"]["parameters"] == table["Conv2D"]["trainable"] == 36
    norm = table["BatchNormalization"]
    assert norm["parameters"] == 16 and norm["trainable"] == 8  # gamma, beta; not the statistics


def test_clean_statistics_replace_the_head_statistics_before_validation(nb):
    """Fit one epoch with the callback: the head's batch-norm moving mean and variance end as the
    pooled features' mean and variance on the clean images, the backbone in inference mode (its
    noise layer off), not the noisy training batches' running averages."""
    keras, layers, tf = nb["keras"], nb["layers"], nb["tf"]
    rng = np.random.default_rng(0)
    images = rng.random((24, 8, 8, 1)).astype("float32")
    labels = (rng.random(24) > 0.5).astype("float32")
    inputs = keras.Input((8, 8, 1))
    noisy = layers.GaussianNoise(1.0)(inputs)  # training batches differ from clean images
    backbone = keras.Model(inputs, layers.Conv2D(4, 3, activation="relu")(noisy))
    head = nb["make_head"](layers.MaxPooling2D(padding="same"), normalise=True)
    model = nb["compose"](backbone, head, "clean_statistics")
    model.compile(optimizer="adam", loss="binary_crossentropy")
    clean = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    callback = nb["CleanStatistics"](backbone, head, clean)
    model.fit(
        images, labels, validation_data=(images, labels), epochs=1, callbacks=[callback], verbose=0
    )
    pooled = np.asarray(head.layers[1](head.layers[0](backbone(images, training=False))))
    norm = head.layers[2]
    assert isinstance(norm, layers.BatchNormalization)
    np.testing.assert_allclose(norm.moving_mean.numpy(), pooled.mean(axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        norm.moving_variance.numpy(), pooled.var(axis=0), rtol=1e-4, atol=1e-6
    )


def test_blur_smooths_each_image_alone_and_keeps_width_zero(nb):
    """The sharpness test's blur: nothing at width 0, each image of the batch on its own (no blur
    across the batch or channel axes), and a much lower Laplacian variance at width 1."""
    images = np.random.default_rng(0).random((3, 32, 32, 1))
    np.testing.assert_array_equal(nb["blur"](images, 0.0), images)
    smooth = nb["blur"](images, 1.0)
    np.testing.assert_allclose(smooth[1], nb["blur"](images[1:2], 1.0)[0])
    sharpness = nb["laplacian_variance"](images)
    assert sharpness.shape == (3,)
    assert np.all(nb["laplacian_variance"](smooth) < 0.5 * sharpness)
