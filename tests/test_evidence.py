"""Unit tests of the helpers behind the report's evidence: acquisition stresses, occlusion of the
lung region, the protocol's choice of the best model, patient-bootstrap intervals, Holm's
adjustment, Grad-CAM from the logit and the lung-emphasis helpers."""

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from conftest import ConstantModel
from notebook_code import load_helpers


@pytest.fixture(scope="module")
def nb():
    return load_helpers()


def mean_abs_laplacian(film):
    return float(np.abs(ndimage.laplace(film.astype("float64"))).mean())


def textured_film(shape=(224, 240), seed=0):
    """A stored film (2-D uint8) with fine texture on a slow pattern, away from 0 and 255 so that
    sharpening is not clipped away."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    pattern = 128 + 50 * np.sin(rows / 9.0) * np.cos(cols / 7.0)
    texture = ndimage.gaussian_filter(rng.normal(0.0, 25.0, shape), 0.7)
    return np.clip(pattern + texture, 20, 235).round().astype("uint8")


def many_level_film(shape=(160, 192), seed=1):
    """A textured film whose gray levels are spread evenly over 0-255 (every level present)."""
    field = textured_film(shape, seed).astype("float64")
    field += np.random.default_rng(seed).random(shape)  # break ties between equal pixels
    ranks = field.ravel().argsort().argsort().reshape(shape)
    return np.floor(ranks / ranks.size * 256).astype("uint8")


# --- acquisition stresses -------------------------------------------------------------------------


def test_every_stress_keeps_the_shape_and_uint8(nb):
    film = textured_film((200, 250))  # not square: each side is scaled on its own
    assert {"none", "blur_1px", "blur_2px", "sharpen", "gamma_0.6"} <= set(nb["STRESSES"])
    for stress in nb["STRESSES"]:
        stressed = nb["stress_film"](film, stress)
        assert stressed.shape == film.shape and stressed.dtype == np.uint8, stress
        if stress != "none":
            assert not np.array_equal(stressed, film), f"{stress} changed nothing"


def test_no_stress_returns_the_film_unchanged(nb):
    film = textured_film()
    np.testing.assert_array_equal(nb["stress_film"](film, "none"), film)


def test_blur_lowers_and_sharpening_raises_the_mean_absolute_laplacian(nb):
    film = textured_film()
    clean = mean_abs_laplacian(film)
    one, two = (mean_abs_laplacian(nb["stress_film"](film, s)) for s in ("blur_1px", "blur_2px"))
    sharpened = mean_abs_laplacian(nb["stress_film"](film, "sharpen"))
    assert two < one < 0.5 * clean  # the wider blur removes more of the fine texture
    assert sharpened > 1.3 * clean


def test_stress_widths_scale_with_the_stored_film(nb):
    """Widths are given for a film stored at 224 px: 1 px there is 2 px on a 448 px film."""
    large = np.kron(textured_film((224, 224)), np.ones((2, 2), dtype="uint8"))
    reference = ndimage.gaussian_filter(large.astype("float64"), 2.0)
    expected = np.clip(np.round(reference), 0, 255).astype("uint8")
    np.testing.assert_array_equal(nb["stress_film"](large, "blur_1px"), expected)


def test_gamma_change_is_undone_by_the_histogram_equalisation(nb):
    tf = nb["tf"]
    film = many_level_film()
    assert len(np.unique(film)) == 256
    gamma = nb["stress_film"](film, "gamma_0.6")

    def equalised(image):
        return nb["equalize_histogram"](tf.constant(image[..., None])).numpy()[..., 0].astype(int)

    # a monotonic change of exposure: the stored film differs a lot ...
    assert np.abs(gamma.astype(int) - film.astype(int)).max() > 30
    # ... and the equalised films agree within rounding (levels merged by the gamma's rounding)
    assert np.abs(equalised(gamma) - equalised(film)).max() <= 3
    # as do the model inputs (crop, equalisation, resize)
    prepared = [
        nb["prepare_film"](tf.constant(image[..., None]), 64).numpy() for image in (film, gamma)
    ]
    assert np.abs(prepared[0] - prepared[1]).max() <= 3 / 255
    # a change that is not monotonic in the gray level is not undone
    blurred = nb["stress_film"](film, "blur_1px")
    assert np.abs(equalised(blurred) - equalised(film)).max() > 30


def test_worst_case_is_the_lowest_value_over_the_stresses(nb):
    by_stress = {
        "none": {"val_auc": 0.9, "val_specificity": 0.8},
        "blur_1px": {"val_auc": 0.7, "val_specificity": 0.85},
        "gamma_0.6": {"val_auc": 0.95, "val_specificity": 0.6},
    }
    assert nb["worst_case"](by_stress) == {"val_auc": 0.7, "val_specificity": 0.6}


def test_random_films_keep_each_class_share(nb):
    frame = pd.DataFrame(
        {
            "class": ["PNEUMONIA"] * 300 + ["NORMAL"] * 100,
            "path": [f"f{index:03d}" for index in range(400)],
        }
    )
    drawn = nb["random_films"](frame, 40, seed=0)
    assert drawn["class"].value_counts().to_dict() == {"PNEUMONIA": 30, "NORMAL": 10}
    assert drawn["path"].is_monotonic_increasing and drawn["path"].is_unique
    assert len(nb["random_films"](frame, 1000, seed=0)) == 400  # never more than there is


def test_member_probs_average_the_members_for_the_ensemble(nb):
    models = {
        "a": {"model": ConstantModel([0.2, 0.9]), "image_size": 16},
        "b": {"model": ConstantModel([0.4, 0.5]), "image_size": 24},
        "both": {"members": ("a", "b"), "image_size": 24},
    }
    probs = nb["member_probs"](models, {16: None, 24: None})
    np.testing.assert_allclose(probs["both"], [0.3, 0.7], atol=1e-7)
    np.testing.assert_allclose(probs["a"], [0.2, 0.9], atol=1e-7)


# --- occlusion ------------------------------------------------------------------------------------


@pytest.mark.parametrize("inside", [True, False])
def test_fill_region_fills_exactly_the_region_or_its_complement(nb, inside):
    rng = np.random.default_rng(0)
    images = rng.random((3, 10, 12, 1)) * np.array([1.0, 2.0, 4.0])[:, None, None, None]
    regions = rng.random((3, 10, 12, 1)) < 0.4
    filled = nb["fill_region"](images, regions, inside)
    assert filled.shape == images.shape and filled.dtype == np.float32
    means = images.mean(axis=(1, 2, 3))
    assert len(set(np.round(means, 3))) == 3  # each film has its own mean
    changed = regions if inside else ~regions
    for film in range(3):
        np.testing.assert_allclose(filled[film][changed[film]], means[film], rtol=1e-6)
        np.testing.assert_allclose(
            filled[film][~changed[film]], images[film][~changed[film]], rtol=1e-6
        )


def test_lungs_only_and_lungs_blanked_are_complementary(nb):
    rng = np.random.default_rng(1)
    images = rng.random((2, 8, 8, 1))
    regions = rng.random((2, 8, 8, 1)) < 0.5
    blanked = nb["fill_region"](images, regions, True)
    only = nb["fill_region"](images, regions, False)
    np.testing.assert_allclose(np.where(regions, only, blanked), images, rtol=1e-6)


# --- the choice of the best model -----------------------------------------------------------------


def candidate(blanked, only, specificity, auc, parameters):
    return {
        "lungs_blanked": blanked,
        "lungs_only": only,
        "worst_specificity": specificity,
        "worst_auc": auc,
        "parameters": parameters,
    }


def test_choice_needs_the_lungs_to_matter(nb):
    candidates = {
        "shortcut": candidate(0.95, 0.90, 0.99, 0.99, 10),  # better without the lungs: not eligible
        "level": candidate(0.80, 0.80, 0.98, 0.98, 10),  # no better with them: not eligible
        "lungs": candidate(0.60, 0.90, 0.70, 0.90, 10),
    }
    best, eligible, tied = nb["choose_model"](candidates, 0.01)
    assert (best, eligible, tied) == ("lungs", ["lungs"], ["lungs"])


def test_choice_ties_within_the_tolerance_go_to_the_worst_case_auc_then_fewer_parameters(nb):
    candidates = {
        "top": candidate(0.5, 0.9, 0.900, 0.90, 100),
        "close": candidate(0.5, 0.9, 0.893, 0.95, 100),  # within 0.01 of the top: tied
        "far": candidate(0.5, 0.9, 0.880, 0.99, 1),  # 0.02 below: not tied
    }
    best, eligible, tied = nb["choose_model"](candidates, 0.01)
    assert eligible == ["top", "close", "far"] and tied == ["top", "close"]
    assert best == "close"  # the higher worst-case AUC among the tied
    best, _, tied = nb["choose_model"](candidates, 0.001)
    assert (best, tied) == ("top", ["top"])  # a narrower tolerance: no tie
    candidates["close"]["worst_auc"] = 0.90  # equal AUCs: fewer parameters win
    candidates["top"]["parameters"] = 200
    assert nb["choose_model"](candidates, 0.01)[0] == "close"
    candidates["top"]["parameters"] = 50
    assert nb["choose_model"](candidates, 0.01)[0] == "top"


def test_choice_falls_back_to_every_candidate_when_none_is_eligible(nb):
    candidates = {
        "a": candidate(0.9, 0.8, 0.70, 0.9, 10),
        "b": candidate(0.9, 0.9, 0.85, 0.8, 10),
        "c": candidate(0.95, 0.7, 0.60, 0.99, 10),
    }
    best, eligible, tied = nb["choose_model"](candidates, 0.01)
    assert eligible == ["a", "b", "c"] and tied == ["b"] and best == "b"


# --- patient-bootstrap intervals and Holm's adjustment --------------------------------------------


def grouped_films(seed=0, patients=30):
    """labels and groups of films: patients with 1-4 films each, about a third of them normal."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for patient in range(patients):
        label = int(patient % 3 != 0)
        for _ in range(rng.integers(1, 5)):
            labels.append(label)
            groups.append(f"patient{patient}")
    order = rng.permutation(len(labels))  # a patient's films need not be next to each other
    return np.array(labels)[order], np.array(groups)[order]


def test_patient_resamples_draw_whole_patients_and_keep_the_class_counts(nb):
    labels, groups = grouped_films()
    patients = pd.Series(labels).groupby(groups).first()
    counts_by_class = patients.value_counts().to_dict()
    resamples = list(nb["patient_resamples"](labels, groups, 50, seed=3))
    assert len(resamples) == 50
    repeated = False
    for rows in resamples:
        drawn = np.bincount(rows, minlength=len(labels))
        times = pd.Series(drawn).groupby(groups).agg(["min", "max"])
        # each patient's films are all drawn, equally often, or none of them
        assert (times["min"] == times["max"]).all()
        per_patient = times["min"]
        # as many pneumonia and normal patients in each resample as in the data
        assert per_patient.groupby(patients).sum().to_dict() == counts_by_class
        repeated |= per_patient.max() > 1
    assert repeated, "no patient was ever drawn twice: not a bootstrap"
    assert len({tuple(np.sort(rows)) for rows in resamples}) > 40  # the resamples differ
    again = list(nb["patient_resamples"](labels, groups, 50, seed=3))
    assert all(np.array_equal(a, b) for a, b in zip(resamples, again, strict=True))


def test_patient_interval_of_a_constant_has_no_width(nb):
    labels, groups = grouped_films()
    assert nb["patient_interval"](lambda rows: 0.7, labels, groups, 100, seed=0) == (0.7, 0.7)
    low, high = nb["patient_interval"](lambda rows: labels[rows].mean(), labels, groups, 200, 0)
    assert low < labels.mean() < high  # the share of pneumonia films varies with the patients


def test_patient_interval_of_several_values_is_one_interval_per_value(nb):
    labels, groups = grouped_films()
    rng = np.random.default_rng(5)
    scores = rng.random(len(labels))

    def share(rows):
        return labels[rows].mean()

    def mean_score(rows):
        return scores[rows].mean()

    both = nb["patient_interval"](
        lambda rows: [share(rows), mean_score(rows)], labels, groups, 100, 0
    )
    assert len(both) == 2
    for interval, statistic in zip(both, (share, mean_score), strict=True):
        alone = nb["patient_interval"](statistic, labels, groups, 100, 0)
        assert tuple(interval) == pytest.approx(alone) and alone[0] < alone[1]


def test_patient_interval_brackets_the_auc(nb):
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(100, int), np.ones(150, int)]
    probs = np.r_[rng.random(100) * 0.7, 0.3 + rng.random(150) * 0.7]
    groups = np.arange(len(labels))  # one film per patient

    def auc(rows):
        return roc_auc_score(labels[rows], probs[rows])

    low, high = nb["patient_interval"](auc, labels, groups, 300, seed=0)
    assert low < roc_auc_score(labels, probs) < high and high - low < 0.15


def test_patient_interval_is_wider_when_films_of_a_patient_are_alike(nb):
    """Five identical films per patient carry the information of one: the interval over patients
    must be as wide as for one film per patient, not narrower as a film bootstrap would make it."""
    rng = np.random.default_rng(2)
    labels = np.r_[np.zeros(20, int), np.ones(30, int)]
    probs = np.r_[rng.random(20) * 0.7, 0.3 + rng.random(30) * 0.7]
    repeated_labels, repeated_probs = np.repeat(labels, 5), np.repeat(probs, 5)

    def interval(statistic_labels, statistic_probs, groups):
        def auc(rows):
            return roc_auc_score(statistic_labels[rows], statistic_probs[rows])

        low, high = nb["patient_interval"](auc, statistic_labels, groups, 300, seed=0)
        return high - low

    by_patient = interval(repeated_labels, repeated_probs, np.repeat(np.arange(50), 5))
    by_film = interval(repeated_labels, repeated_probs, np.arange(250))
    one_film_each = interval(labels, probs, np.arange(50))
    assert by_patient > 1.5 * by_film
    assert by_patient == pytest.approx(one_film_each, rel=0.25)


def test_holm_adjustment_by_hand(nb):
    adjusted = nb["holm"]({"a": 0.01, "b": 0.04, "c": 0.03})
    assert list(adjusted) == ["a", "b", "c"]  # the caller's order
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    assert nb["holm"]({"x": 0.5, "y": 0.6}) == {"x": 1.0, "y": 1.0}  # capped at 1
    assert nb["holm"]({"only": 0.02}) == {"only": 0.02}


def test_holm_never_lowers_a_p_value_and_keeps_the_order(nb):
    rng = np.random.default_rng(0)
    raw = {f"h{index}": float(p) for index, p in enumerate(rng.random(8) ** 3)}
    adjusted = nb["holm"](raw)
    assert all(raw[key] <= adjusted[key] <= 1 for key in raw)
    ordered = sorted(raw, key=raw.get)
    assert [adjusted[key] for key in ordered] == sorted(adjusted.values())


def test_test_metrics_adds_patient_intervals_around_the_point_estimates(nb):
    rng = np.random.default_rng(4)
    labels, groups = grouped_films(seed=4, patients=60)
    probs = np.clip(0.35 + 0.3 * labels + rng.normal(0, 0.2, len(labels)), 0, 1)
    metrics = nb["test_metrics"](labels, probs, 0.5, groups)
    point = nb["binary_metrics"](labels, probs, 0.5)
    for key in ("sensitivity", "specificity", "auc"):
        assert metrics[key] == point[key]
        low, high = metrics[f"{key}_ci"]
        assert 0 <= low < metrics[key] < high <= 1


# --- Grad-CAM from the logit ----------------------------------------------------------------------


def tiny_backbone_and_head(nb, dense_weight):
    """One ReLU convolution with all-one weights, and the notebook's head with its logit's weights
    set to dense_weight (bias 0)."""
    keras, layers = nb["keras"], nb["layers"]
    inputs = keras.Input((8, 8, 1))
    conv = layers.Conv2D(2, 3, padding="same", activation="relu", kernel_initializer="ones")
    backbone = keras.Model(inputs, conv(inputs))
    head = nb["make_head"]()
    nb["compose"](backbone, head, "tiny")
    logit = head.get_layer("logit")
    logit.set_weights([np.full((2, 1), dense_weight, "float32"), np.zeros(1, "float32")])
    return backbone, head


def film_with_a_bright_patch():
    image = np.full((1, 8, 8, 1), 0.1, "float32")
    image[0, 2:5, 3:6, 0] = 1.0
    return image


def probability_cam(nb, backbone, head, images):
    """Grad-CAM computed as the notebook computes it, but from the head's probability."""
    tf = nb["tf"]
    feature_maps = backbone(images, training=False)
    with tf.GradientTape() as tape:
        tape.watch(feature_maps)
        probs = head(feature_maps, training=False)
    gradients = tape.gradient(probs, feature_maps)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * feature_maps, axis=-1, keepdims=True))
    cams = cams / (tf.reduce_max(cams, axis=(1, 2, 3), keepdims=True) + 1e-8)
    return tf.image.resize(cams, images.shape[1:3]).numpy()[..., 0], probs.numpy().ravel()


def test_make_head_ends_in_a_logit_and_a_sigmoid(nb):
    head = nb["make_head"](nb["layers"].MaxPooling2D())
    names = [type(layer).__name__ for layer in head.layers]
    assert names == [
        "MaxPooling2D",
        "GlobalAveragePooling2D",
        "Dropout",
        "Dense",
        "Activation",
    ]
    assert head.layers[-2].name == "logit" and head.layers[-1].name == "probability"


def test_grad_cam_of_the_logit_survives_a_saturated_probability(nb):
    backbone, head = tiny_backbone_and_head(nb, dense_weight=20.0)
    image = film_with_a_bright_patch()
    logit = nb["head_logits"](head, backbone(image, training=False)).numpy().item()
    assert logit >= 40  # sigmoid(40) is 1.0 in float32
    cams, probs = nb["grad_cam"](backbone, head, image)
    assert probs.tolist() == [1.0] and cams.shape == (1, 8, 8)
    assert cams.max() == pytest.approx(1.0, abs=1e-5) and cams.min() >= 0
    assert cams[0, 3, 4] > cams[0, 7, 0]  # the heat lies on the bright patch
    saturated, head_probs = probability_cam(nb, backbone, head, image)
    assert head_probs.tolist() == [1.0]
    assert np.all(saturated == 0), "the probability's gradient should vanish at 1.0"


def test_grad_cam_of_the_logit_matches_the_probability_where_it_is_not_saturated(nb):
    backbone, head = tiny_backbone_and_head(nb, dense_weight=0.05)
    image = film_with_a_bright_patch()
    cams, probs = nb["grad_cam"](backbone, head, image)
    from_probability, head_probs = probability_cam(nb, backbone, head, image)
    assert 0.5 < probs[0] < 0.99 and probs == pytest.approx(head_probs, abs=1e-6)
    assert cams.max() > 0.99
    np.testing.assert_allclose(cams, from_probability, atol=1e-4)  # same map once scaled


# --- lung emphasis --------------------------------------------------------------------------------


def test_dim_outside_keeps_the_region_and_cuts_the_contrast_outside(nb):
    rng = np.random.default_rng(0)
    image = rng.random((12, 12, 1)).astype("float32")
    region = np.zeros((12, 12, 1), "float32")
    region[3:9, 2:7] = 1.0
    inside, outside = region.astype(bool), ~region.astype(bool)
    mean = image.mean()
    erased = np.asarray(nb["dim_outside"](image, region, 0.0))
    np.testing.assert_allclose(erased[inside], image[inside], rtol=1e-6)
    np.testing.assert_allclose(erased[outside], mean, rtol=1e-6)
    half = np.asarray(nb["dim_outside"](image, region, 0.5))
    np.testing.assert_allclose(half[outside], mean + 0.5 * (image[outside] - mean), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(nb["dim_outside"](image, region, 1.0)), image, atol=1e-6)
