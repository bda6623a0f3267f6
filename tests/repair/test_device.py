"""The torch side follows the device of the view (issue 14), checked without a GPU.

CI has no CUDA device. torch's "meta" device is a second device type that every build
has: a tensor there has a shape and no data, and an op mixing it with a CPU tensor
fails. Training's batches, masks, teacher and loss run there; what needs values back on
the host (a loss as a float, votes, adversarial examples) cannot, so those paths are
covered by the CPU suite only, and a real CUDA run is what benchmarks/scale.py is for.
"""

from __future__ import annotations

import numpy as np
import torch

from inner_onnx.io.data import Dataset
from inner_onnx.io.model import OnnxModel
from inner_onnx.repair.settings import LossWeights, RepairSettings
from inner_onnx.repair.trainer import BatchSource, MaskedTrainer
from inner_onnx.scenarios.base import BadSamples
from tests.support.torch_models import dense_sequence_model

META = torch.device("meta")


def test_the_view_is_made_on_the_asked_device() -> None:
    proto, _ = dense_sequence_model()
    view = OnnxModel(proto).torch_view(frozen=True, device=META)
    assert {p.device for p in view.parameters()} == {META}


def test_batches_masks_teacher_and_loss_follow_the_views_device() -> None:
    proto, _ = dense_sequence_model()
    model = OnnxModel(proto)
    view = model.torch_view(device=META)
    rng = np.random.default_rng(0)
    clean = Dataset(rng.normal(size=(20, 4, 5)).astype(np.float32), rng.integers(0, 3, 20), "c")
    bad = BadSamples(Dataset(clean.x[:6] + 1, clean.y[:6], "b"), target_label=0)
    masks = {"w2": np.ones((28, 3), bool)}
    settings = RepairSettings(loss=LossWeights(clean_mixup=1.0, bad_mixup=1.0))
    trainer = MaskedTrainer(model, view, masks, [], settings)
    assert {mask.device for mask in trainer.masks.values()} == {META}
    assert trainer.teacher is not None and {p.device for p in trainer.teacher.parameters()} == {
        META
    }
    source = BatchSource(view, clean, bad, settings.training, seed=0)
    assert source.original_logits is not None and source.original_logits.device == META
    batch = next(source.epoch(torch.Generator().manual_seed(0), view))
    assert {tensor.device for tensor in batch} == {META}
    assert trainer._step(*batch).device == META
    assert view.parameter("w2").grad is not None and view.parameter("w2").grad.device == META


def test_training_keeps_no_original_logits_it_does_not_use() -> None:
    proto, _ = dense_sequence_model()
    view = OnnxModel(proto).torch_view()
    clean = Dataset(np.zeros((8, 4, 5), np.float32), np.zeros(8, np.int64), "c")
    bad = BadSamples(clean, target_label=None)
    source = BatchSource(view, clean, bad, RepairSettings().training, 0, keep_logits=False)
    assert source.original_logits is None
