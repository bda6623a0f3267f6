"""A batch too large for the memory budget goes through the view part by part, same loss."""

from __future__ import annotations

import numpy as np
import torch

from inner_onnx.batching import BatchSizes
from inner_onnx.io.data import Dataset
from inner_onnx.io.model import OnnxModel
from inner_onnx.repair.settings import LossWeights, RepairSettings
from inner_onnx.repair.trainer import BatchSource, MaskedTrainer
from inner_onnx.scenarios.base import BadSamples
from tests.support.torch_models import dense_sequence_model


def gradient_of_one_step(sizes: BatchSizes) -> tuple[float, np.ndarray]:
    proto, _ = dense_sequence_model()
    model = OnnxModel(proto)
    view = model.torch_view()
    rng = np.random.default_rng(0)
    clean = Dataset(rng.normal(size=(20, 4, 5)).astype(np.float32), rng.integers(0, 3, 20), "c")
    bad = BadSamples(Dataset(clean.x[:6] + 1, clean.y[:6], "b"), target_label=0)
    settings = RepairSettings(loss=LossWeights(clean_mixup=1.0, bad_mixup=1.0))
    trainer = MaskedTrainer(model, view, {"w2": np.ones((28, 3), bool)}, [], settings, sizes=sizes)
    source = BatchSource(view, clean, bad, settings.training, 0, sizes)
    loss = trainer._step(*next(source.epoch(torch.Generator().manual_seed(0), view)))
    return float(loss), view.parameter("w2").grad.numpy().copy()


def test_part_by_part_gives_the_loss_and_gradient_of_one_call() -> None:
    whole_loss, whole_grad = gradient_of_one_step(BatchSizes())
    parts_loss, parts_grad = gradient_of_one_step(BatchSizes(gradient=1))
    assert np.isclose(parts_loss, whole_loss, rtol=1e-6)
    np.testing.assert_allclose(parts_grad, whole_grad, rtol=1e-5, atol=1e-7)
