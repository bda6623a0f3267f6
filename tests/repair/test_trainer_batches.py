"""Mini-batches: a batch too large for the memory budget goes through the view part by part
(same loss), a backdoor's target-class rows join every batch, and its bad samples mix with
them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

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


def test_the_teacher_shares_only_pristine_weights_it_does_not_train() -> None:
    proto, _ = dense_sequence_model()
    model = OnnxModel(proto)
    view = model.torch_view()
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(6, 4, 5)).astype(np.float32))
    original = model.torch_view(frozen=True)(x)
    with torch.no_grad():
        view.parameter("b1").add_(1.0)  # changed before training (as a pruning plan does)
    settings = RepairSettings(loss=LossWeights(clean_mixup=1.0))
    masks = {"w2": np.ones((28, 3), bool)}
    pristine = frozenset({"w1", "w2", "b2"})
    trainer = MaskedTrainer(model, view, masks, [], settings, pristine=pristine)
    teacher = trainer.teacher
    assert teacher is not None
    assert teacher.parameter("w1") is view.parameter("w1")
    assert teacher.parameter("b2") is view.parameter("b2")
    assert teacher.parameter("w2") is not view.parameter("w2")  # trained
    assert teacher.parameter("b1") is not view.parameter("b1")  # not pristine
    with torch.no_grad():
        view.parameter("w2").mul_(3.0)
    torch.testing.assert_close(teacher(x), original, rtol=0, atol=0)


def test_without_pristine_weights_the_teacher_shares_nothing() -> None:
    proto, _ = dense_sequence_model()
    model = OnnxModel(proto)
    view = model.torch_view()
    settings = RepairSettings(loss=LossWeights(clean_mixup=1.0))
    trainer = MaskedTrainer(model, view, {"w2": np.ones((28, 3), bool)}, [], settings)
    assert trainer.teacher is not None
    for name, parameter in view.onnx_parameters():
        assert trainer.teacher.parameter(name) is not parameter


def batch_labels(target_fraction: float, target_label: int | None) -> list[np.ndarray]:
    proto, _ = dense_sequence_model()
    view = OnnxModel(proto).torch_view()
    rng = np.random.default_rng(0)
    clean = Dataset(rng.normal(size=(40, 4, 5)).astype(np.float32), np.arange(40) % 4, "c")
    bad = BadSamples(Dataset(clean.x[:6] + 1, clean.y[:6], "b"), target_label=target_label)
    training = replace(RepairSettings().training, batch_size=8, target_fraction=target_fraction)
    source = BatchSource(view, clean, bad, training, 0)
    return [yc.numpy() for _, yc, _, _, _ in source.epoch(torch.Generator().manual_seed(0), view)]


def test_target_rows_join_every_batch_and_the_epoch_still_walks_the_data_once() -> None:
    plain = batch_labels(0.0, target_label=2)
    with_target = batch_labels(0.5, target_label=2)
    assert [len(y) for y in plain] == [8] * 5
    assert [len(y) for y in with_target] == [12] * 5
    for before, after in zip(plain, with_target):
        np.testing.assert_array_equal(after[:8], before)
        np.testing.assert_array_equal(after[8:], 2)


def test_without_a_target_label_no_rows_are_added() -> None:
    assert [len(y) for y in batch_labels(0.5, target_label=None)] == [8] * 5


def target_batch_setup(
    loss: LossWeights, sizes: BatchSizes = BatchSizes()
) -> tuple[MaskedTrainer, BatchSource]:
    """A trainer of w2 and batches of 4 clean rows plus 4 rows of the target class 0."""
    proto, _ = dense_sequence_model()
    model = OnnxModel(proto)
    view = model.torch_view()
    x = np.random.default_rng(0).normal(size=(24, 4, 5)).astype(np.float32)
    clean = Dataset(x, np.arange(24) % 3, "c")
    bad = BadSamples(Dataset(x[:6] + 1, (np.arange(6) % 2) + 1, "b"), target_label=0)
    training = replace(RepairSettings().training, batch_size=4, target_fraction=1.0)
    settings = RepairSettings(training=training, loss=loss)
    trainer = MaskedTrainer(model, view, {"w2": np.ones((28, 3), bool)}, [], settings, sizes=sizes)
    return trainer, BatchSource(view, clean, bad, training, 0, sizes)


def test_a_part_longer_than_the_budget_goes_in_chunks_with_the_same_loss() -> None:
    def one_step(sizes: BatchSizes) -> tuple[float, np.ndarray, int]:
        trainer, source = target_batch_setup(LossWeights(clean_mixup=1.0, bad_mixup=1.0), sizes)
        view = trainer.view
        batch = next(source.epoch(torch.Generator().manual_seed(0), view))
        assert len(batch[0]) == 8  # 4 clean rows and 4 of the target class
        rows_per_call: list[int] = []
        forward = view.forward

        def counted(x: torch.Tensor, *args, **kwargs):
            rows_per_call.append(len(x))
            return forward(x, *args, **kwargs)

        view.forward = counted
        loss = float(trainer._step(*batch))
        return loss, view.parameter("w2").grad.numpy().copy(), max(rows_per_call)

    whole_loss, whole_grad, whole_rows = one_step(BatchSizes())
    # a budget below the training batch: even the 4 clean rows go in chunks
    chunked_loss, chunked_grad, chunked_rows = one_step(BatchSizes(gradient=3))
    assert whole_rows > 8 and chunked_rows == 3
    assert np.isclose(chunked_loss, whole_loss, rtol=1e-6)
    np.testing.assert_allclose(chunked_grad, whole_grad, rtol=1e-5, atol=1e-7)


def target_mixup_step(target_mixup: float, target_label: int | None) -> tuple[float, tuple]:
    """One step's loss on a batch of 4 clean rows and 4 target rows (label 0), and the batch."""
    trainer, source = target_batch_setup(LossWeights(target_mixup=target_mixup))
    trainer.target_label = target_label  # as fit sets it from the bad samples
    batch = next(source.epoch(torch.Generator(), trainer.view))
    return float(trainer._step(*batch)), batch


def test_target_mixtures_mix_each_bad_sample_with_a_target_row_and_mix_their_labels() -> None:
    plain, batch = target_mixup_step(0.0, target_label=0)
    mixed, _ = target_mixup_step(2.0, target_label=0)
    x_clean, y_clean, _, x_bad, y_bad = batch
    target_rows = torch.nonzero(y_clean == 0).flatten()
    assert len(target_rows) >= 4
    draws = torch.Generator().manual_seed(1)  # the trainer's mixing generator, seed + 1
    share = torch.rand(len(x_bad), generator=draws)
    pick = torch.randint(len(target_rows), (len(x_bad),), generator=draws)
    weights = share.reshape(-1, 1, 1)
    mixtures = weights * x_bad + (1 - weights) * x_clean[target_rows][pick]
    view = OnnxModel(dense_sequence_model()[0]).torch_view()
    with torch.no_grad():
        logits = view(mixtures)
    term = share * F.cross_entropy(logits, y_bad, reduction="none") + (1 - share) * (
        F.cross_entropy(logits, torch.zeros_like(y_bad), reduction="none")
    )
    assert np.isclose(mixed - plain, 2.0 * float(term.mean()), rtol=1e-5)


def test_without_a_target_label_there_are_no_target_mixtures() -> None:
    plain, _ = target_mixup_step(0.0, target_label=None)
    mixed, _ = target_mixup_step(2.0, target_label=None)
    assert mixed == plain
