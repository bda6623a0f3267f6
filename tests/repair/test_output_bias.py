"""The backdoor repair's output-bias calibration: a per-class offset that gives the kept
weights back the original model's class prior on the clean training rows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from inner_onnx.io.data import Dataset
from inner_onnx.io.model import OnnxModel
from inner_onnx.repair.settings import LossWeights, RepairSettings
from inner_onnx.repair.trainer import BatchSource, MaskedTrainer
from inner_onnx.scenarios.base import BadSamples
from tests.support.torch_models import dense_sequence_model

SHIFT = np.array([2.0, -1.0, 0.5], np.float32)


def calibrated(
    masks: dict[str, np.ndarray], target_label: int | None, bad_weight: float = 0.0
) -> tuple[bool, np.ndarray, np.ndarray]:
    """Shift the output bias of a view after its original logits were kept, calibrate:
    (whether it changed, original bias, bias after)."""
    proto, weights = dense_sequence_model()
    model = OnnxModel(proto)
    view = model.torch_view()
    rng = np.random.default_rng(0)
    clean = Dataset(rng.normal(size=(60, 4, 5)).astype(np.float32), np.arange(60) % 3, "c")
    bad = BadSamples(Dataset(clean.x[:9] + 1, clean.y[:9], "b"), target_label=target_label)
    settings = RepairSettings(loss=LossWeights(bad=bad_weight))
    training = replace(settings.training, calibrate_output_bias=True)
    settings = replace(settings, training=training)
    trainer = MaskedTrainer(model, view, masks, [], settings)
    source = BatchSource(view, clean, bad, training, 0)
    with torch.no_grad():
        view.parameter("b2").add_(torch.from_numpy(SHIFT))  # a repair's prior shift
    changed = trainer._calibrate_output_bias(source)
    return changed, weights["b2"], view.parameter("b2").detach().numpy().copy()


def test_calibration_undoes_a_prior_shift_up_to_a_constant() -> None:
    changed, original, after = calibrated({"b2": np.ones(3, bool)}, target_label=0)
    assert changed
    offset = after - original
    np.testing.assert_allclose(offset, offset.mean(), atol=1e-2)  # softmax ignores a constant


def test_bad_rows_move_the_offset_away_from_the_distilled_one() -> None:
    _, original, distilled_only = calibrated({"b2": np.ones(3, bool)}, target_label=0)
    _, _, with_bad = calibrated({"b2": np.ones(3, bool)}, target_label=0, bad_weight=1.0)
    spread = np.ptp((with_bad - original) - (distilled_only - original))
    assert spread > 1e-2


def test_no_calibration_where_the_bias_is_not_trainable_or_there_is_no_target() -> None:
    frozen_bias = calibrated({"w2": np.ones((28, 3), bool)}, target_label=0)
    no_target = calibrated({"b2": np.ones(3, bool)}, target_label=None)
    for changed, original, after in (frozen_bias, no_target):
        assert not changed
        np.testing.assert_array_equal(after, original + SHIFT)


def test_only_the_trainable_entries_of_the_bias_move() -> None:
    changed, original, after = calibrated({"b2": np.array([True, True, False])}, target_label=0)
    assert changed
    assert after[2] == original[2] + SHIFT[2]
    assert not np.allclose(after[:2], original[:2] + SHIFT[:2])
