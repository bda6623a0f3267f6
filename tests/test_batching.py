"""Batch sizes from the model's footprint: bounded by the budget, never above the old sizes."""

from __future__ import annotations

import numpy as np

from inner_onnx.batching import (
    CAPTURE_CAP,
    GRADIENT_CAP,
    INFERENCE_CAP,
    BatchSizes,
    Footprint,
    fitting,
)
from inner_onnx.io.model import OnnxModel
from inner_onnx.runtime import Runner
from tests.support.torch_models import dense_sequence_model


def test_fitting_divides_the_budget_and_keeps_between_one_and_the_cap() -> None:
    assert fitting(1000, cap=512, budget=10_000) == 10
    assert fitting(10, cap=512, budget=10_000) == 512
    assert fitting(10**9, cap=512, budget=10_000) == 1


def test_larger_feature_maps_get_smaller_batches() -> None:
    small = BatchSizes.for_footprint(Footprint(input=4_000, tensors=40_000))
    large = BatchSizes.for_footprint(Footprint(input=12_000, tensors=9_000_000))
    assert (small.inference, small.capture, small.gradient) == (
        INFERENCE_CAP,
        CAPTURE_CAP,
        GRADIENT_CAP,
    )
    assert large.inference < INFERENCE_CAP and large.gradient < large.inference


def test_the_footprint_counts_every_tensor_of_one_sample() -> None:
    proto, _ = dense_sequence_model()
    runner = Runner(OnnxModel(proto), "cpu")
    x = np.zeros((9, 4, 5), np.float32)
    footprint = runner.footprint(x[:1])
    # mm1, dense1_out, dense1_act: [1, 4, 7]; flat: [1, 28]; mm2, logits: [1, 3]
    assert footprint == Footprint(input=4 * 20, tensors=4 * (3 * 28 + 28 + 2 * 3))
    assert runner.batch_sizes(x) == BatchSizes()
