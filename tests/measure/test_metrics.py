"""Accuracy, per-class accuracy, fairness gap, ASR, summaries and the sensitivity metric."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from inner_onnx.errors import InputError
from inner_onnx.measure.metrics import (
    Metrics,
    accuracy,
    attack_success_rate,
    fairness_gap,
    per_class_accuracy,
    perturbations,
    rotate,
    sensitivity,
    summarize,
)


def test_accuracy_from_labels_or_scores() -> None:
    y = np.array([0, 1, 2, 1])
    assert accuracy(np.array([0, 1, 1, 1]), y) == 0.75
    scores = np.eye(3)[[0, 2, 2, 1]] + 0.1
    assert accuracy(scores, y) == 0.75


def test_accuracy_refuses_mismatched_or_empty() -> None:
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        accuracy(np.zeros(3, dtype=int), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="empty"):
        accuracy(np.zeros(0, dtype=int), np.zeros(0, dtype=int))


def test_per_class_with_absent_classes() -> None:
    y = np.array([0, 0, 2, 2, 2, 4])
    pred = np.array([0, 1, 2, 2, 0, 1])
    per_class = per_class_accuracy(pred, y, num_classes=5)
    assert per_class == [0.5, None, pytest.approx(2 / 3), None, 0.0]
    assert not any(isinstance(a, float) and math.isnan(a) for a in per_class)
    # Mean of the present classes (0.5, 2/3, 0) minus the worst one (0).
    assert fairness_gap(per_class) == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)


def test_per_class_refuses_labels_beyond_num_classes() -> None:
    with pytest.raises(ValueError, match=r"labels outside 0..2"):
        per_class_accuracy(np.array([0, 3]), np.array([0, 3]), num_classes=3)


def test_fairness_gap_is_zero_when_classes_are_equal() -> None:
    assert fairness_gap([0.8, None, 0.8]) == 0.0
    with pytest.raises(ValueError, match="no class"):
        fairness_gap([None, None])


def test_asr_counts_only_non_target_samples() -> None:
    y = np.array([0, 1, 2, 3, 3])
    pred = np.array([3, 3, 2, 3, 0])
    # Two of the three non-target samples flip; counting the target's own would say 3 of 5.
    assert attack_success_rate(pred, y, target=3) == pytest.approx(2 / 3)


def test_asr_extremes() -> None:
    y = np.array([0, 1, 2])
    assert attack_success_rate(np.array([5, 5, 5]), y, target=5) == 1.0
    assert attack_success_rate(y, y, target=5) == 0.0


def test_asr_is_zero_when_every_sample_has_the_target_label() -> None:
    y = np.full(4, 2)
    assert attack_success_rate(np.full(4, 2), y, target=2) == 0.0


def test_asr_from_scores() -> None:
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert attack_success_rate(scores, np.array([0, 0, 1]), target=1) == 0.5


def test_summarize_clean_only_is_json_ready() -> None:
    metrics = summarize(np.array([0, 1, 1]), np.array([0, 1, 0]), num_classes=3)
    assert metrics.accuracy == pytest.approx(2 / 3)
    assert metrics.per_class_accuracy == [0.5, 1.0, None]
    assert metrics.fairness_gap == pytest.approx(0.25)
    assert metrics.asr is None and metrics.bad_accuracy is None and metrics.robust_accuracy is None
    decoded = json.loads(json.dumps(metrics.to_dict(), allow_nan=False))
    assert decoded["per_class_accuracy"] == [0.5, 1.0, None]
    assert set(decoded) == {
        "accuracy",
        "per_class_accuracy",
        "fairness_gap",
        "asr",
        "bad_accuracy",
        "robust_accuracy",
        "sensitivity",
    }


def test_summarize_with_bad_and_robust_predictions() -> None:
    y = np.array([0, 1, 2, 0])
    metrics = summarize(
        y,
        y,
        3,
        bad_pred=np.array([2, 2, 2, 0]),
        bad_y=np.array([0, 1, 2, 0]),
        target=2,
        robust_pred=np.array([0, 0, 0, 0]),
    )
    assert metrics == Metrics(
        accuracy=1.0,
        per_class_accuracy=[1.0, 1.0, 1.0],
        fairness_gap=0.0,
        asr=pytest.approx(2 / 3),
        bad_accuracy=0.5,
        robust_accuracy=0.5,
    )


def test_summarize_refuses_half_given_bad_set() -> None:
    y = np.array([0, 1])
    with pytest.raises(ValueError, match="go together"):
        summarize(y, y, 2, bad_pred=y)
    with pytest.raises(ValueError, match="needs bad_pred"):
        summarize(y, y, 2, target=1)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_rotation_by_zero_is_identity(layout: str) -> None:
    x = np.random.default_rng(0).random((3, 2, 7, 9) if layout == "NCHW" else (3, 7, 9, 2))
    x = x.astype(np.float32)
    np.testing.assert_array_equal(rotate(x, 0.0, layout), x)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_rotation_by_90_matches_rot90(layout: str) -> None:
    x = np.random.default_rng(1).random((2, 3, 5, 5)).astype(np.float32)
    expected = np.rot90(x, k=1, axes=(2, 3))  # counter-clockwise as displayed
    if layout == "NHWC":
        x, expected = x.transpose(0, 2, 3, 1), expected.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(rotate(x, 90.0, layout), expected, atol=1e-6)


def test_small_rotation_interpolates_and_keeps_the_centre() -> None:
    x = np.zeros((1, 1, 9, 9), dtype=np.float32)
    x[0, 0, 4, :] = 1.0  # a horizontal bar through the centre
    out = rotate(x, 10.0, "NCHW")
    assert out[0, 0, 4, 4] == pytest.approx(1.0)
    assert 0.0 < out.max() <= 1.0 and out.min() >= 0.0
    # Counter-clockwise: the bar's right end rises (smaller row), its left end drops.
    assert out[0, 0, 3, 8] > out[0, 0, 5, 8] and out[0, 0, 5, 0] > out[0, 0, 3, 0]


def test_perturbations_stay_in_the_value_range_and_keep_the_input() -> None:
    x = np.random.default_rng(2).random((4, 1, 8, 8)).astype(np.float32)
    before = x.copy()
    copies = perturbations(x, "NCHW")
    np.testing.assert_array_equal(x, before)
    assert len(copies) == 6
    for copy in copies:
        assert copy.shape == x.shape and copy.dtype == np.float32
        assert copy.min() >= x.min() and copy.max() <= x.max()
    brighter = copies[-1]
    middle = (x > x.min() + 0.11) & (x < x.max() - 0.11)
    span = float(x.max() - x.min())
    np.testing.assert_allclose((brighter - x)[middle], 0.1 * span, rtol=1e-5)


def test_brightness_shift_scales_with_the_value_range() -> None:
    x = np.full((1, 1, 4, 4), 100.0, dtype=np.float32)
    darker, brighter = perturbations(x, "NCHW", value_range=(0.0, 255.0))[-2:]
    assert darker[0, 0, 0, 0] == pytest.approx(74.5)
    assert brighter[0, 0, 0, 0] == pytest.approx(125.5)


def test_sensitivity_of_a_constant_predictor() -> None:
    x = np.random.default_rng(3).random((10, 8, 8, 1)).astype(np.float32)
    y = np.array([1, 1, 1, 0, 2, 1, 0, 1, 2, 2])
    calls: list[tuple[int, ...]] = []

    def always_one(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return np.ones(len(batch), dtype=int)

    # Perturbations cannot change a constant answer: 1 - accuracy of answering 1 (5 of 10).
    assert sensitivity(always_one, x, y, "NHWC") == pytest.approx(0.5)
    assert calls == [x.shape] * 6


def test_sensitivity_separates_robust_and_fragile_predictors() -> None:
    x = np.zeros((6, 1, 9, 9), dtype=np.float32)
    x[:, 0, 4, 4] = 1.0  # a centred dot: rotation keeps it, a brightness shift does not matter
    x[3:, 0, 0, 0] = 1.0  # class 1 also has a corner dot
    y = np.array([0, 0, 0, 1, 1, 1])

    def corner_dot(batch: np.ndarray) -> np.ndarray:
        return (batch[:, 0, 0, 0] > 0.5).astype(int)

    def exact_pixels(batch: np.ndarray) -> np.ndarray:
        # Right only on the exact original pictures.
        return np.where(np.isin(batch[:, 0, 0, 0], (0.0, 1.0)), y, 1 - y)

    assert sensitivity(corner_dot, x, y, "NCHW") < sensitivity(exact_pixels, x, y, "NCHW")


def test_sensitivity_needs_images() -> None:
    with pytest.raises(InputError, match="needs image inputs"):
        sensitivity(lambda b: np.zeros(len(b)), np.zeros((3, 5)), np.zeros(3, dtype=int), "NC")
