"""Classification metrics from predictions, in plain numpy (onnxruntime predicts elsewhere).

Predictions are class labels [N] or scores [N, classes] (argmax is taken).
Nothing here returns NaN: a class absent from the data has accuracy `None`,
and an attack success rate over no eligible sample is 0.0 (see
`attack_success_rate`).

`sensitivity` is the benchmark's robustness-to-nuisance metric (INNER paper):
1 - accuracy under small rotations (±5°, ±10°) and brightness shifts (±10% of
the value range), pooled over the six perturbed copies of the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from inner_onnx.errors import InputError

ROTATION_DEGREES = (-10.0, -5.0, 5.0, 10.0)
# In units of the data's value range: ±0.1 for pixels scaled to [0, 1].
BRIGHTNESS_SHIFTS = (-0.1, 0.1)


@dataclass
class Metrics:
    """What `evaluate` and `repair` report; optional fields are None when not measured."""

    accuracy: float
    per_class_accuracy: list[float | None]
    fairness_gap: float
    asr: float | None = None
    bad_accuracy: float | None = None
    robust_accuracy: float | None = None
    sensitivity: float | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _labels(pred: np.ndarray) -> np.ndarray:
    pred = np.asarray(pred)
    return pred.argmax(axis=1) if pred.ndim == 2 else pred


def _matched(pred: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, y = _labels(pred), np.asarray(y)
    if labels.shape != y.shape or y.ndim != 1:
        raise ValueError(f"{len(labels)} predictions for {len(y)} labels")
    if len(y) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return labels, y


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    labels, y = _matched(pred, y)
    return float(np.mean(labels == y))


def per_class_accuracy(pred: np.ndarray, y: np.ndarray, num_classes: int) -> list[float | None]:
    """Accuracy on each class's samples; None for a class with no sample in `y`."""
    labels, y = _matched(pred, y)
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels outside 0..{num_classes - 1}")
    correct = np.bincount(y, weights=labels == y, minlength=num_classes)
    counts = np.bincount(y, minlength=num_classes)
    return [float(c / n) if n else None for c, n in zip(correct, counts)]


def fairness_gap(per_class: list[float | None]) -> float:
    """Mean minus minimum of the present classes' accuracies: how far the worst class lags."""
    present = [a for a in per_class if a is not None]
    if not present:
        raise ValueError("no class is present")
    return float(np.mean(present) - min(present))


def attack_success_rate(pred_bad: np.ndarray, y_bad_true: np.ndarray, target: int) -> float:
    """Share of bad samples whose true label is not `target` that are classified as `target`.

    Samples of the target class cannot show the attack and are left out; when
    none is left, no attack succeeded and the rate is 0.0.
    """
    labels, y = _matched(pred_bad, y_bad_true)
    eligible = y != target
    if not eligible.any():
        return 0.0
    return float(np.mean(labels[eligible] == target))


def summarize(
    pred: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    bad_pred: np.ndarray | None = None,
    bad_y: np.ndarray | None = None,
    target: int | None = None,
    robust_pred: np.ndarray | None = None,
) -> Metrics:
    """Clean metrics, plus bad-sample accuracy and ASR (with `target`) and robust accuracy.

    `robust_pred` are predictions on adversarial versions of the same samples,
    so they are scored against `y`.
    """
    per_class = per_class_accuracy(pred, y, num_classes)
    metrics = Metrics(accuracy(pred, y), per_class, fairness_gap(per_class))
    if (bad_pred is None) != (bad_y is None):
        raise ValueError("bad_pred and bad_y go together")
    if target is not None and bad_pred is None:
        raise ValueError("an attack success rate needs bad_pred and bad_y")
    if bad_pred is not None:
        metrics.bad_accuracy = accuracy(bad_pred, bad_y)  # type: ignore[arg-type]
        if target is not None:
            metrics.asr = attack_success_rate(bad_pred, bad_y, target)  # type: ignore[arg-type]
    if robust_pred is not None:
        metrics.robust_accuracy = accuracy(robust_pred, y)
    return metrics


def _to_nchw(x: np.ndarray, layout: str) -> np.ndarray:
    if x.ndim != 4 or layout not in ("NCHW", "NHWC"):
        raise InputError(
            f"sensitivity needs image inputs (NCHW or NHWC); this input is {layout} with shape "
            f"{list(x.shape)}"
        )
    return x if layout == "NCHW" else x.transpose(0, 3, 1, 2)


def rotate(x: np.ndarray, degrees: float, layout: str) -> np.ndarray:
    """Rotate every image about its centre, counter-clockwise as displayed (row 0 on top).

    Bilinear sampling; points that come from outside the image take the nearest
    border value, so no value outside the data's range is introduced.
    """
    images = _to_nchw(x, layout)
    height, width = images.shape[2:]
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    dy, dx = rows - cy, cols - cx
    # Inverse mapping: each output pixel reads the source point it came from.
    src_y = np.clip(cy + sin * dx + cos * dy, 0, height - 1)
    src_x = np.clip(cx + cos * dx - sin * dy, 0, width - 1)
    y0, x0 = np.floor(src_y).astype(np.intp), np.floor(src_x).astype(np.intp)
    y1, x1 = np.minimum(y0 + 1, height - 1), np.minimum(x0 + 1, width - 1)
    fy, fx = (src_y - y0).astype(np.float32), (src_x - x0).astype(np.float32)
    top = images[:, :, y0, x0] * (1 - fx) + images[:, :, y0, x1] * fx
    bottom = images[:, :, y1, x0] * (1 - fx) + images[:, :, y1, x1] * fx
    rotated = (top * (1 - fy) + bottom * fy).astype(x.dtype, copy=False)
    return rotated if layout == "NCHW" else rotated.transpose(0, 2, 3, 1)


def perturbations(
    x: np.ndarray, layout: str, value_range: tuple[float, float] | None = None
) -> list[np.ndarray]:
    """Copies of `x`: one per ROTATION_DEGREES, then one per BRIGHTNESS_SHIFTS.

    `value_range` (default: the data's min and max) scales the brightness shift
    and bounds the shifted values.
    """
    lo, hi = value_range if value_range is not None else (float(x.min()), float(x.max()))
    rotated = [rotate(x, degrees, layout) for degrees in ROTATION_DEGREES]
    brightened = [
        np.clip(x + shift * (hi - lo), lo, hi).astype(x.dtype, copy=False)
        for shift in BRIGHTNESS_SHIFTS
    ]
    return rotated + brightened


def sensitivity(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    layout: str,
    value_range: tuple[float, float] | None = None,
) -> float:
    """1 - accuracy of `predict` over all perturbed copies of (x, y); lower is better."""
    scores = [accuracy(predict(xp), y) for xp in perturbations(x, layout, value_range)]
    return 1.0 - float(np.mean(scores))
