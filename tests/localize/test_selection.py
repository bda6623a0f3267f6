import math
from pathlib import Path

import numpy as np
import pytest

from inner_onnx.errors import InputError
from inner_onnx.io.data import load_npz
from inner_onnx.io.model import OnnxModel
from inner_onnx.localize.probes import ProbeSet
from inner_onnx.localize.selection import EPSILON, cross_entropy, layer_scores, select_layers
from inner_onnx.runtime import Runner

CLASSES = 4
CENTRES = np.random.default_rng(0).normal(scale=5.0, size=(CLASSES, 6))


def blobs(labels: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=(len(labels), 6))
    return (CENTRES[labels] + noise).astype(np.float32)


@pytest.fixture(scope="module")
def clean() -> tuple[dict[str, np.ndarray], np.ndarray, ProbeSet]:
    labels = np.random.default_rng(1).integers(0, CLASSES, 400)
    features = {"early": blobs(labels, 2), "late": blobs(labels, 3)}
    return features, labels, ProbeSet().fit(features, labels, CLASSES)


def bad_features(moved_to: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """`early` still sees the true class; `late` has moved each sample to `moved_to`."""
    return {"early": blobs(labels, 4), "late": blobs(moved_to, 5)}


def test_backdoor_unit_scores_higher_with_or_without_labels(clean) -> None:
    features, labels, probes = clean
    bad_labels = np.random.default_rng(6).integers(1, CLASSES, 100)
    bad = bad_features(np.zeros_like(bad_labels), bad_labels)  # all sent to target class 0
    correct = np.ones(len(labels), dtype=bool)
    plain = layer_scores(probes, features, correct, bad)
    per_class = layer_scores(probes, features, correct, bad, labels, bad_labels)
    for scores in (plain, per_class):
        assert scores["late"] > scores["early"] + 2
    assert select_layers(plain, top=1) == ["late"]


def test_per_class_scores_see_misclassifications_spread_over_classes(clean) -> None:
    """Bad samples sent to *different* wrong classes: only the per-class comparison sees it."""
    features, labels, probes = clean
    bad_labels = np.random.default_rng(7).integers(0, CLASSES, 200)
    bad = bad_features((bad_labels + 1) % CLASSES, bad_labels)
    correct = np.ones(len(labels), dtype=bool)
    per_class = layer_scores(probes, features, correct, bad, labels, bad_labels)
    plain = layer_scores(probes, features, correct, bad)
    assert per_class["late"] > per_class["early"] + 2
    assert abs(plain["late"] - plain["early"]) < 0.5


def test_only_correct_clean_samples_count(clean) -> None:
    features, labels, probes = clean
    bad_labels = np.arange(40) % CLASSES
    bad = bad_features(np.zeros_like(bad_labels), bad_labels)
    correct = np.arange(len(labels)) % 3 != 0
    masked = layer_scores(probes, features, correct, bad, labels, bad_labels)
    subset = {name: x[correct] for name, x in features.items()}
    everything = np.ones(correct.sum(), dtype=bool)
    direct = layer_scores(probes, subset, everything, bad, labels[correct], bad_labels)
    assert masked == pytest.approx(direct)


def test_layer_score_input_errors(clean) -> None:
    features, labels, probes = clean
    bad = bad_features(np.zeros(5, int), np.ones(5, int))
    with pytest.raises(InputError, match="no clean sample right"):
        layer_scores(probes, features, np.zeros(len(labels), bool), bad)
    only_class_0 = np.where(labels == 0, True, False)
    with pytest.raises(InputError, match="no class has both"):
        layer_scores(probes, features, only_class_0, bad, labels, np.ones(5, int))
    with pytest.raises(ValueError, match="both"):
        layer_scores(probes, features, only_class_0, bad, labels)


def test_cross_entropy_direction() -> None:
    uniform, certain = np.array([0.5, 0.5]), np.array([1.0, 0.0])
    assert cross_entropy(certain, uniform) == pytest.approx(math.log(2), rel=1e-6)
    assert cross_entropy(uniform, certain) == pytest.approx(-0.5 * math.log(EPSILON), rel=1e-6)


def test_select_layers_order_and_ties() -> None:
    scores = {"c": 1.0, "a": 2.0, "b": 2.0, "d": 0.5}
    assert select_layers(scores) == ["a", "b", "c"]
    assert select_layers(scores, top=10) == ["a", "b", "c", "d"]
    with pytest.raises(InputError, match="at least 1"):
        select_layers(scores, top=0)


SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "torch_badnets"


@pytest.mark.skipif(not (SAMPLE / "model.onnx").is_file(), reason="sample model not built")
def test_bundled_backdoor_sample_probes_and_scores() -> None:
    model = OnnxModel.load(SAMPLE / "model.onnx")
    clean = load_npz(SAMPLE / "clean.npz", model)
    bad = load_npz(SAMPLE / "bad.npz", model)
    runner = Runner(model, "cpu")
    clean_capture, bad_capture = runner.capture(clean.x), runner.capture(bad.x)
    probes = ProbeSet().fit(clean_capture.pooled, clean.y, model.num_classes)
    names = [unit.name for unit in model.units]
    assert probes.accuracy[names[0]] < probes.accuracy[names[-2]]
    correct = clean_capture.scores.argmax(axis=1) == clean.y
    scores = layer_scores(probes, clean_capture.pooled, correct, bad_capture.pooled, clean.y, bad.y)
    assert list(scores) == names and all(np.isfinite(list(scores.values())))
    # A patch trigger is not yet a class at the first layer: the route is decided deeper.
    assert select_layers(scores, top=1) != [names[0]]
