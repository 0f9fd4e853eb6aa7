"""Unit tests of the helpers behind the report's evidence: histogram equalisation, the protocol's
choice of the best model, patient-bootstrap intervals and Grad-CAM from the logit."""

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from conftest import ConstantModel
from notebook_code import NOTEBOOK, load_helpers


@pytest.fixture(scope="module")
def nb():
    return load_helpers()


def textured_film(shape=(224, 240), seed=0):
    """A stored image (2-D uint8) with fine texture on a slow pattern, away from 0 and 255."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    pattern = 128 + 50 * np.sin(rows / 9.0) * np.cos(cols / 7.0)
    texture = ndimage.gaussian_filter(rng.normal(0.0, 25.0, shape), 0.7)
    return np.clip(pattern + texture, 20, 235).round().astype("uint8")


def many_level_film(shape=(160, 192), seed=1):
    """A textured image whose gray levels are spread evenly over 0-255 (every level present)."""
    field = textured_film(shape, seed).astype("float64")
    field += np.random.default_rng(seed).random(shape)  # break ties between equal pixels
    ranks = field.ravel().argsort().argsort().reshape(shape)
    return np.floor(ranks / ranks.size * 256).astype("uint8")


def test_a_change_of_exposure_is_undone_by_the_histogram_equalisation(nb):
    tf = nb["tf"]
    film = many_level_film()
    assert len(np.unique(film)) == 256
    gamma = np.round(255.0 * (film / 255.0) ** 0.6).astype("uint8")  # a monotonic change

    def equalised(image):
        return nb["equalize_histogram"](tf.constant(image[..., None])).numpy()[..., 0].astype(int)

    assert np.abs(gamma.astype(int) - film.astype(int)).max() > 30  # the stored images differ
    assert np.abs(equalised(gamma) - equalised(film)).max() <= 3  # the equalised ones agree
    blurred = np.round(ndimage.gaussian_filter(film.astype("float64"), 1.0)).astype("uint8")
    assert np.abs(equalised(blurred) - equalised(film)).max() > 30  # not monotonic: not undone


# --- the choice of the best model -----------------------------------------------------------------


def test_a_clear_leader_is_chosen_alone(nb):
    aucs = {"small": 0.95, "deep": 0.99, "vgg": 0.97, "ensemble": 0.98}
    leads = {"small": (0.02, 0.06), "vgg": (0.005, 0.04), "ensemble": (0.001, 0.02)}
    params = {"small": 1, "deep": 10, "vgg": 100, "ensemble": 111}
    assert nb["choose_model"](aucs, leads, params, "ensemble") == ("deep", ["deep"])


def test_a_tie_goes_to_the_preferred_candidate_then_to_fewer_parameters(nb):
    aucs = {"small": 0.95, "deep": 0.99, "vgg": 0.995, "ensemble": 0.993}
    params = {"small": 1, "deep": 10, "vgg": 100, "ensemble": 111}
    leads = {"small": (0.02, 0.06), "deep": (-0.001, 0.01), "ensemble": (0.0, 0.004)}
    best, tied = nb["choose_model"](aucs, leads, params, "ensemble")
    assert (best, tied) == ("ensemble", ["vgg", "deep", "ensemble"])  # an interval reaching 0
    leads["ensemble"] = (0.0001, 0.004)  # the ensemble is beaten clearly: fewer parameters win
    assert nb["choose_model"](aucs, leads, params, "ensemble") == ("deep", ["vgg", "deep"])
    assert nb["choose_model"](aucs, leads, params, "small") == ("deep", ["vgg", "deep"])


def test_runs_that_repeat_the_previous_run_share_one_row_and_others_keep_theirs(nb):
    looks = pd.DataFrame(
        {
            "run": ["1", "2", "3", "4", "5", "this run"],
            "date": ["d1", "d1", "d2", "d2", "d3", "d3"],
            "best model": ["VGG16", "VGG16", "VGG16", "ensemble", "VGG16", "VGG16"],
            "specificity": [0.75, 0.70, 0.70, 0.70, 0.75, 0.75],
        }
    )
    merged = nb["merge_repeats"](looks, ["run", "date"])
    assert merged["run"].tolist() == ["1", "2–3", "4", "5–this run"]
    assert merged["date"].tolist() == ["d1", "d1", "d2", "d3"]  # the first run's date
    assert merged["best model"].tolist() == ["VGG16", "VGG16", "ensemble", "VGG16"]
    assert merged["specificity"].tolist() == [0.75, 0.70, 0.70, 0.75]  # run 1 and 5 stay apart


def test_the_auc_lead_is_the_paired_difference_on_the_resampled_rows(nb):
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(40, int), np.ones(60, int)]
    first, second = rng.random(100) + 0.5 * labels, rng.random(100) + 0.2 * labels
    nb["splits"] = {"val": pd.DataFrame({"label": labels})}
    nb["models"] = {"a": {"probs": {"val": first}}, "b": {"probs": {"val": second}}}
    rows = rng.choice(100, 100)
    expected = roc_auc_score(labels[rows], first[rows]) - roc_auc_score(labels[rows], second[rows])
    assert nb["auc_lead"]("a", "b")(rows) == pytest.approx(expected)
    assert nb["auc_lead"]("a", "b")(np.arange(100)) > 0


def test_predictions_average_the_members_and_scores_keep_the_validation_thresholds(nb):
    labels = np.array([0, 0, 1, 1, 1, 0, 1, 0])
    groups = np.array(["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"])
    frame = pd.DataFrame({"label": labels, "group": groups})
    nb["splits"] = {"val": frame, "test": frame}
    nb["BOOTSTRAP_SAMPLES"] = 20
    a, b = [0.1, 0.3, 0.7, 0.9, 0.8, 0.2, 0.6, 0.4], [0.3, 0.1, 0.9, 0.5, 0.6, 0.4, 0.8, 0.2]
    nb["models"] = {
        "a": {"model": ConstantModel(a), "data": {"val": None, "test": None}, "probs": {}},
        "b": {"model": ConstantModel(b), "data": {"val": None, "test": None}, "probs": {}},
        "both": {"members": ("a", "b"), "probs": {}},
    }
    nb["predict_split"]("val")
    models = nb["models"]
    np.testing.assert_allclose(models["both"]["probs"]["val"], (np.array(a) + b) / 2, atol=1e-7)
    for entry in models.values():  # as the validation cell sets them
        entry["threshold"] = nb["choose_threshold"](labels, entry["probs"]["val"], 0.95)
    nb["score_split"]("val")
    for entry in models.values():
        assert entry["val"]["sensitivity"] >= 0.95
        assert entry["val"]["threshold"] == entry["threshold"]
    threshold = models["a"]["threshold"]
    models["a"]["model"] = ConstantModel(np.array(a) * 0 + 0.55)  # another split, new scores
    nb["predict_split"]("test")
    nb["score_split"]("test")
    assert models["a"]["threshold"] == threshold  # the test split keeps validation's threshold
    assert models["a"]["test"]["threshold"] == threshold
    assert models["a"]["test"]["auc"] == 0.5
    np.testing.assert_allclose(models["both"]["probs"]["test"], (0.55 + np.array(b)) / 2, atol=1e-7)


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


def test_scored_metrics_adds_patient_intervals_around_the_point_estimates(nb):
    rng = np.random.default_rng(4)
    labels, groups = grouped_films(seed=4, patients=60)
    probs = np.clip(0.35 + 0.3 * labels + rng.normal(0, 0.2, len(labels)), 0, 1)
    nb["splits"] = {"internal_test": pd.DataFrame({"label": labels, "group": groups})}
    nb["BOOTSTRAP_SAMPLES"] = 200
    metrics = nb["scored_metrics"]("internal_test", probs, 0.5)
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


def test_a_class_without_errors_gets_an_exact_interval_instead_of_a_collapsed_one(nb):
    labels, groups = grouped_films(seed=5, patients=60)
    probs = np.where(labels == 1, 0.9, 0.1)
    probs[np.flatnonzero(labels == 1)[:3]] = 0.2  # three missed pneumonia images, no false alarm
    nb["splits"] = {"internal_test": pd.DataFrame({"label": labels, "group": groups})}
    nb["BOOTSTRAP_SAMPLES"] = 200
    metrics = nb["scored_metrics"]("internal_test", probs, 0.5)
    normals = int((labels == 0).sum())
    assert metrics["specificity"] == 1.0 and metrics["fp"] == 0
    # Clopper-Pearson for 0 errors in n: the lower bound solves (1 - p)^0 * p^n = 0.025
    low, high = metrics["specificity_ci"]
    assert high == 1.0 and low == pytest.approx(0.025 ** (1 / normals)) and low < 1.0
    low, high = metrics["sensitivity_ci"]  # with errors: the patient bootstrap as before
    assert low < metrics["sensitivity"] < 1.0 and high <= 1.0


def test_an_ensemble_reuses_its_members_predictions_and_averages_any_input(nb):
    calls = []

    class CountingModel(ConstantModel):
        def predict(self, data, **options):
            calls.append(data)
            return super().predict(data, **options)

    frame = pd.DataFrame({"label": [0, 1], "group": ["p0", "p1"]})
    nb["splits"] = {"val": frame}
    nb["models"] = {
        "a": {"model": CountingModel([0.2, 0.6]), "data": {"val": "a-val"}, "probs": {}},
        "b": {"model": CountingModel([0.4, 1.0]), "data": {"val": "b-val"}, "probs": {}},
        "both": {"members": ("a", "b"), "probs": {}},
    }
    nb["predict_split"]("val")
    assert calls == ["a-val", "b-val"]  # each member predicted once, not again for the ensemble
    np.testing.assert_allclose(nb["models"]["both"]["probs"]["val"], [0.3, 0.8], atol=1e-7)
    # the sharpness test's use: any input per member, here doubled probabilities
    doubled = nb["candidate_probs"](nb["models"]["both"], lambda m: 2 * m["probs"]["val"])
    np.testing.assert_allclose(doubled, [0.6, 1.6], atol=1e-6)


def test_every_recorded_validation_decision_has_an_outcome(nb):
    history = pd.read_csv(NOTEBOOK.parent / "results" / "validation_history.csv")
    outcomes = history["decision"].iloc[4:].map(nb["decision_outcome"])  # this version: run 5 on
    assert set(outcomes) <= {
        "reference",
        "adopted",
        "not adopted",
        "first repeat",
        "partly adopted",
    }
    assert outcomes[5] == "partly adopted"  # run 6: custom CNNs kept 64 px, VGG16 took 48 px
    assert outcomes[21] == "adopted" and outcomes[20] == "first repeat"  # runs 22 and 21
    assert nb["decision_outcome"]("something new") == "see the file"
