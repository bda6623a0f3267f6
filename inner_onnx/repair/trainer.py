"""Masked optimization of the torch view (DESIGN.md step 4).

`MaskedTrainer` fine-tunes the view with a gradient mask per initializer: a
repair method decides the masks (INNER: the fault neurons; plain fine-tuning:
every unit value) and may add probe terms. The loss is the output cross-entropy
on clean and bad samples plus, per selected unit, the probe loss
`0.8·CE(probe(x_bad), y) + 0.2·KD_T(teacher_y ‖ probe(x_bad))`, where the
teacher is the probe's mean tempered softmax over the clean samples of class y
that the original model gets right. Two optional mixup terms widen the little
data a user has: distillation from the original model on mixtures of clean
samples (the repaired model keeps the original's behaviour between the samples,
not only at them), and cross-entropy on mixtures of two bad samples with mixed
labels (a backdoor trigger is the same in both, so every mixture still carries
it). A validation split of the user's data decides early stopping and which
epoch is kept; with `average_epochs` the weights of the last epochs are averaged
instead and the validation split checks the average.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from inner_onnx.batching import BatchSizes
from inner_onnx.context import as_numpy, as_torch, device_of
from inner_onnx.errors import InputError
from inner_onnx.io.data import Dataset, Inputs
from inner_onnx.io.model import OnnxModel
from inner_onnx.localize.probes import Probe
from inner_onnx.progress import QUIET, Reporter
from inner_onnx.repair.settings import (
    LossWeights,
    RepairSettings,
    StoppingRule,
    TrainingSettings,
)
from inner_onnx.scenarios.base import (
    BadSamples,
    Forward,
    Measurement,
    Scenario,
    bootstrap_confidence,
)
from inner_onnx.torchview import TorchView
from inner_onnx.torchview.inputs import cat_batches

KD_TEMPERATURE = 3.0
Masks = dict[str, np.ndarray]
# One part of a batch's loss: the mean over the part's rows `rows` (a slice of the part),
# from those rows' logits.
Term = Callable[[torch.Tensor, slice], torch.Tensor]
EVERY_ROW = slice(None)


@dataclass
class ProbeTerm:
    """A selected unit's frozen probe and its per-class teacher distributions."""

    unit_name: str
    probe: Probe
    teachers: torch.Tensor  # [classes, classes], tempered softmax means


@dataclass
class EpochRecord:
    epoch: int
    loss: float | None  # None before training (epoch 0)
    val_accuracy: float
    val_bad: float | None  # ASR (backdoor with target), robust or bad-sample accuracy
    val_fairness_gap: float


@dataclass
class TrainOutcome:
    history: list[EpochRecord]
    kept_epoch: int
    stopped_early: bool
    # validation figures of the weights averaged over the last epochs (average_epochs > 0),
    # and how many epochs the kept weights average (0: one epoch's weights were kept)
    average: EpochRecord | None = None
    averaged_epochs: int = 0
    # whether the kept weights meet the scenario's validation targets (None: it states none),
    # which ones they miss, and the share of bootstrap resamples of the validation split on
    # which they hold (how sure the verdict is)
    targets_met: bool | None = None
    kept: Measurement | None = None
    start: Measurement | None = None
    missed: list[str] | None = None
    confidence: float | None = None

    def judge(self, scenario: Scenario, rule: StoppingRule, seed: int) -> None:
        """Fill in the targets verdict of the kept weights."""
        assert self.kept is not None and self.start is not None
        self.missed = scenario.missed_targets(self.kept, self.start, rule)
        self.targets_met = None if self.missed is None else not self.missed
        self.confidence = bootstrap_confidence(scenario, self.kept, self.start, rule, seed=seed)


class ValidationSplit:
    """The held-out part of the user's data, measured on the torch view between epochs in
    batches of `sizes`."""

    def __init__(
        self, clean: Dataset, bad: BadSamples, scenario: Scenario, sizes: BatchSizes = BatchSizes()
    ):
        self.clean = clean
        self.bad = bad
        self.scenario = scenario
        self.sizes = sizes

    def measure(self, forward: Forward, num_classes: int, seed: int) -> Measurement:
        return self.scenario.measure(forward, self.clean, self.bad, num_classes, seed, self.sizes)


class WeightAverage:
    """Running mean of the trainable weights over the epochs from `first_epoch` on."""

    def __init__(self, first_epoch: int):
        self.first_epoch = first_epoch
        self.count = 0
        self.average: list[torch.Tensor] | None = None

    def add(self, epoch: int, weights: list[torch.Tensor]) -> None:
        if epoch < self.first_epoch:
            return
        self.count += 1
        if self.average is None:
            self.average = weights
        else:
            self.average = [a + (w - a) / self.count for a, w in zip(self.average, weights)]


class BatchSource:
    """Mini-batches of (clean x, clean y, original clean logits or None, bad x, bad y), on
    the view's device.

    Each epoch walks the clean training data once; bad samples cycle alongside, a fixed
    share of each batch, and so, with `target_fraction`, do the clean samples of a
    backdoor's target class (added to the batch's clean part). Bad samples that follow the
    weights (adversarial examples) are made afresh against the current weights for every
    batch. The data stays in host memory (a view of the user's arrays); only each batch goes
    to the device. The original model's logits of the clean rows ([N, classes]) are kept
    only when the loss distils from them.
    """

    def __init__(
        self,
        view: TorchView,
        clean: Dataset,
        bad: BadSamples,
        training: TrainingSettings,
        seed: int,
        sizes: BatchSizes = BatchSizes(),
        keep_logits: bool = True,
    ):
        self.bad = bad
        self.sizes = sizes
        self.device = device_of(view)
        self.batch_size = training.batch_size
        self.bad_batch = max(1, round(training.batch_size * training.bad_fraction))
        self.rng = np.random.default_rng(seed)
        clean_x = clean.x
        if isinstance(bad.data.x, Inputs) and not isinstance(clean_x, Inputs):
            # A one-input text model's adversarial samples carry an embedding offset beside
            # the token ids (attacks.embedding_attack): clean rows get the same form, so that
            # the parts of a batch concatenate.
            clean_x = Inputs({view.input_names[0]: clean_x})
        self.x_clean = as_torch(clean_x)
        self.y_clean = torch.from_numpy(clean.y.astype(np.int64))
        self.original_logits = (
            view_logits(view, self.x_clean, sizes.inference) if keep_logits else None
        )
        self.target_batch = round(training.batch_size * training.target_fraction)
        protect = bool(self.target_batch) and bad.target_label is not None
        protect = protect and not bad.follows_weights
        self.target_rows = torch.from_numpy(
            np.flatnonzero(clean.y == bad.target_label) if protect else np.zeros(0, np.int64)
        )
        self.x_bad = as_torch(bad.data.x)
        self.y_bad = torch.from_numpy(bad.data.y.astype(np.int64))

    def epoch(
        self, generator: torch.Generator, forward: Forward
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        order = torch.randperm(len(self.x_clean), generator=generator)
        bad_order = torch.randperm(len(self.x_bad), generator=generator)
        target_order = self.target_rows
        if len(target_order):
            target_order = target_order[torch.randperm(len(target_order), generator=generator)]
        for index, start in enumerate(range(0, len(order), self.batch_size)):
            rows = order[start : start + self.batch_size]
            if len(target_order):
                rows = torch.cat([rows, cycled(target_order, index, self.target_batch)])
            xc, yc = self.x_clean[rows], self.y_clean[rows]
            if self.bad.follows_weights:
                seed = int(self.rng.integers(1 << 31))
                made = self.bad.regenerate(
                    forward, as_numpy(xc), yc.numpy(), seed, self.sizes.gradient
                )
                xb, yb = as_torch(made), yc
            else:
                pick = cycled(bad_order, index, self.bad_batch)
                xb, yb = self.x_bad[pick], self.y_bad[pick]
            logits = None if self.original_logits is None else self.original_logits[rows]
            device = self.device
            yield xc.to(device), yc.to(device), logits, xb.to(device), yb.to(device)


def view_logits(view: TorchView, x: Inputs | torch.Tensor, step: int) -> torch.Tensor:
    """The view's logits of `x`, in batches of `step` rows, without gradients, on its device."""
    device = device_of(view)
    with torch.no_grad():
        return torch.cat([view(x[i : i + step].to(device)) for i in range(0, len(x), step)])


def cycled(order: torch.Tensor, index: int, count: int) -> torch.Tensor:
    """Batch `index`'s `count` entries of `order`, which repeats as often as the batches need."""
    window = torch.arange(index * count, (index + 1) * count)
    return order[window % len(order)]


def teacher_view(model: OnnxModel, student: TorchView, shared: set[str]) -> TorchView:
    """The original model, frozen, on the student's device, with the student's own tensors
    for the weights named in `shared` (a copy of each would double a large model's weights
    in memory)."""
    teacher = model.torch_view(frozen=True, device=device_of(student))
    for name, parameter in student.onnx_parameters():
        if name in shared:
            teacher.share_parameter(name, parameter)
    return teacher


def distillation(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    return F.kl_div(
        F.log_softmax(logits, dim=1), F.softmax(teacher_logits, dim=1), reduction="batchmean"
    )


def mix_rows(x: torch.Tensor, partners: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """Row i: `share[i]` of `x[i]` and the rest of `partners[i]`."""
    weights = share.reshape(-1, *([1] * (x.dim() - 1)))
    return weights * x + (1 - weights) * partners


def mixed_cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, share: torch.Tensor, y_partner: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy on mixtures toward both labels, each weighted by its share."""
    mixed = share * F.cross_entropy(logits, y, reduction="none") + (1 - share) * F.cross_entropy(
        logits, y_partner, reduction="none"
    )
    return mixed.mean()


def probe_loss(term: ProbeTerm, probe_logits: torch.Tensor, y_bad: torch.Tensor) -> torch.Tensor:
    """DESIGN.md step 4: 0.8·CE toward the true label + 0.2·KD toward the class teacher."""
    kd = (
        F.kl_div(
            F.log_softmax(probe_logits / KD_TEMPERATURE, dim=1),
            term.teachers[y_bad],
            reduction="batchmean",
        )
        * KD_TEMPERATURE**2
    )
    return 0.8 * F.cross_entropy(probe_logits, y_bad) + 0.2 * kd


class MaskedTrainer:
    """Fine-tunes only the masked values of the view's initializers."""

    def __init__(
        self,
        model: OnnxModel,
        view: TorchView,
        masks: Masks,
        probe_terms: list[ProbeTerm],
        settings: RepairSettings,
        seed: int = 0,
        loss: LossWeights | None = None,
        sizes: BatchSizes = BatchSizes(),
        pristine: frozenset[str] = frozenset(),
    ):
        """`pristine`: the view's weights that still hold the model's values; the teacher
        shares those it does not train."""
        self.model = model
        self.view = view
        self.settings = settings
        self.weights = loss or settings.loss
        self.seed = seed
        self.probe_terms = probe_terms
        self.device = device_of(view)
        self.sizes = sizes
        self.masks = {
            name: torch.from_numpy(mask).to(self.device)
            for name, mask in masks.items()
            if mask.any()
        }
        self.trainable: list[torch.nn.Parameter] = []
        for name, parameter in view.onnx_parameters():
            parameter.requires_grad_(name in self.masks)
            if name in self.masks:
                mask = self.masks[name].to(parameter.dtype)
                parameter.register_hook(lambda grad, mask=mask: grad * mask)
                self.trainable.append(parameter)
        if not self.trainable:
            raise InputError("the fault set selects no weights to repair")
        self.units = {term.unit_name: model.unit(term.unit_name) for term in probe_terms}
        mask = model.mask_input
        self.mask_name = mask.name if mask is not None else None
        # Token ids (a text model's inputs) have no mixtures: the mixup terms are left out.
        self.mixable = not model.is_text
        # The original model, frozen, scores the clean mixtures (they are new every batch).
        self.teacher = (
            teacher_view(model, view, set(pristine) - set(self.masks))
            if self.weights.clean_mixup and self.mixable
            else None
        )
        self.mixing = torch.Generator().manual_seed(seed + 1)
        # the backdoor's target class, set by `fit` from the bad samples (None: no target)
        self.target_label: int | None = None

    def _target_rows(self, y_clean: torch.Tensor) -> torch.Tensor | None:
        """The batch's clean rows of the backdoor's target class when the target mixtures are
        on (None: no such term)."""
        if not (self.weights.target_mixup and self.mixable and self.target_label is not None):
            return None
        rows = torch.nonzero(y_clean == self.target_label).flatten()
        return rows if len(rows) else None

    def _mix_with(
        self, x: torch.Tensor, partners: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row of `x` mixed with a random row of `partners`: (mixtures, its own share)."""
        share = torch.rand(len(x), generator=self.mixing).to(x.device)
        pick = torch.randint(len(partners), (len(x),), generator=self.mixing).to(x.device)
        return mix_rows(x, partners[pick], share), share

    def _mix(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each sample mixed with a random partner: (mixtures, its own share, partner rows)."""
        # Drawn on the CPU generator whatever the device: the same draws on every device.
        share = torch.rand(len(x), generator=self.mixing).to(x.device)
        partner = torch.randperm(len(x), generator=self.mixing).to(x.device)
        return mix_rows(x, x[partner], share), share, partner

    def _step(
        self,
        x_clean: torch.Tensor,
        y_clean: torch.Tensor,
        original_clean: torch.Tensor | None,
        x_bad: torch.Tensor,
        y_bad: torch.Tensor,
    ) -> torch.Tensor:
        """The batch's loss, its gradient accumulated into the parameters; returns the loss.

        The parts of a batch (clean, bad, then the mixtures) go through the view in one
        call when their backward fits the memory budget (`BatchSizes.gradient`); a model too
        large for that runs them one after the other, each part's backward before the next
        forward, and a part longer than the budget's batch in chunks of that size, so only
        one chunk's activations are kept at a time (the sums of a part's gradients then come
        in another order: the same loss, other last bits)."""
        weights = self.weights

        def clean(logits: torch.Tensor, rows: slice) -> torch.Tensor:
            original = None if original_clean is None else original_clean[rows]
            return self._clean_term(logits, y_clean[rows], original)

        terms: list[tuple[torch.Tensor, Term]] = [
            (x_clean, clean),
            (x_bad, lambda logits, rows: weights.bad * F.cross_entropy(logits, y_bad[rows])),
        ]
        if weights.clean_mixup and self.mixable:
            clean_mixtures, _, _ = self._mix(x_clean)
            terms.append(
                (
                    clean_mixtures,
                    lambda logits, rows: self._teacher_term(logits, clean_mixtures[rows]),
                )
            )
        if weights.bad_mixup and self.mixable:
            bad_mixtures, share, partner = self._mix(x_bad)
            terms.append(
                (
                    bad_mixtures,
                    lambda logits, rows: (
                        weights.bad_mixup
                        * mixed_cross_entropy(
                            logits, y_bad[rows], share[rows], y_bad[partner[rows]]
                        )
                    ),
                )
            )
        target_rows = self._target_rows(y_clean)
        if target_rows is not None:
            target_mixtures, target_share = self._mix_with(x_bad, x_clean[target_rows])
            y_target = torch.full_like(y_bad, self.target_label)
            terms.append(
                (
                    target_mixtures,
                    lambda logits, rows: (
                        weights.target_mixup
                        * mixed_cross_entropy(
                            logits, y_bad[rows], target_share[rows], y_target[rows]
                        )
                    ),
                )
            )
        if sum(len(x) for x, _ in terms) > self.sizes.gradient:
            return self._step_by_part(terms, y_bad)
        x = cat_batches([part for part, _ in terms])
        logits, captured = self._forward(x)
        parts = torch.split(logits, [len(part) for part, _ in terms])
        loss = terms[0][1](parts[0], EVERY_ROW) + terms[1][1](parts[1], EVERY_ROW)
        for (_, term), part_logits in zip(terms[2:], parts[2:]):
            loss = loss + term(part_logits, EVERY_ROW)
        bad_rows = slice(len(x_clean), len(x_clean) + len(x_bad))
        loss = self._with_probe_terms(loss, {k: v[bad_rows] for k, v in captured.items()}, y_bad)
        loss.backward()
        return loss.detach()

    def _step_by_part(
        self, terms: list[tuple[torch.Tensor, Term]], y_bad: torch.Tensor
    ) -> torch.Tensor:
        chunk = self.sizes.gradient
        total = torch.zeros((), device=self.device)
        for index, (x, term) in enumerate(terms):
            split = len(x) > chunk
            for start in range(0, len(x), chunk):
                rows = slice(start, start + chunk) if split else EVERY_ROW
                part = x[rows]
                logits, captured = self._forward(part) if index == 1 else (self.view(part), {})
                loss = term(logits, rows)
                if index == 1:  # the bad samples: the probe terms read their activations
                    loss = self._with_probe_terms(loss, captured, y_bad[rows])
                if split:  # a part's loss is the mean over its rows
                    loss = loss * (len(part) / len(x))
                loss.backward()
                total = total + loss.detach()
        return total

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits, and the activations of the probe terms' units (with a text model's attention
        mask, which their pooling reads)."""
        captures = [self.units[t.unit_name].activation for t in self.probe_terms]
        if captures and self.mask_name is not None:
            captures.append(self.mask_name)
        if captures:
            return self.view(x, capture=captures)
        return self.view(x), {}

    def _clean_term(
        self, logits: torch.Tensor, y: torch.Tensor, original: torch.Tensor | None
    ) -> torch.Tensor:
        loss = F.cross_entropy(logits, y)
        if original is None:
            return loss
        return loss + self.weights.clean_distillation * distillation(logits, original)

    def _teacher_term(self, logits: torch.Tensor, mixtures: torch.Tensor) -> torch.Tensor:
        assert self.teacher is not None
        with torch.no_grad():
            teacher_logits = self.teacher(mixtures)
        return self.weights.clean_mixup * distillation(logits, teacher_logits)

    def _with_probe_terms(
        self, loss: torch.Tensor, captured: dict[str, torch.Tensor], y_bad: torch.Tensor
    ) -> torch.Tensor:
        """`loss` plus each selected unit's probe loss on the bad samples' activations."""
        for term in self.probe_terms:
            unit = self.units[term.unit_name]
            mask = captured.get(self.mask_name) if self.mask_name is not None else None
            features = term.probe.torch_features(captured[unit.activation], unit, mask)
            loss = loss + self.weights.probe * probe_loss(
                term, term.probe.torch_logits(features), y_bad
            ) / len(self.probe_terms)
        return loss

    def _epoch(
        self, epoch: int, batches: BatchSource, optimizer: torch.optim.Optimizer, generator
    ) -> float:
        """One pass over the training data; returns the mean loss."""
        training = self.settings.training
        for group in optimizer.param_groups:
            group["lr"] = training.learning_rate_at(epoch)
        losses = []
        for batch in batches.epoch(generator, self.view):
            optimizer.zero_grad(set_to_none=True)
            loss = self._step(*batch)
            if training.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.trainable, training.max_grad_norm)
            optimizer.step()
            losses.append(float(loss.detach()))
        return float(np.mean(losses))

    def fit(
        self,
        train_clean: Dataset,
        train_bad: BadSamples,
        validation: ValidationSplit,
        reporter: Reporter = QUIET,
    ) -> TrainOutcome:
        training, rule, scenario = (
            self.settings.training,
            self.settings.stopping,
            validation.scenario,
        )
        seed, classes = self.seed, self.model.num_classes
        generator = torch.Generator().manual_seed(seed)
        # Masked-out values must not move: no weight decay, and their zero gradients keep the
        # momentum buffers at zero, so their step is exactly zero.
        optimizer = torch.optim.SGD(
            self.trainable, lr=training.learning_rate, momentum=training.momentum
        )
        if not train_bad.follows_weights:
            self.target_label = train_bad.target_label
        start = validation.measure(self.view, classes, seed)
        history = [EpochRecord(0, None, start.accuracy, start.bad, start.gap)]
        best_score, kept_epoch, kept = scenario.objective(start, start, rule), 0, start
        best_state = self._snapshot()
        stale = 0
        stopped_early = False
        averager = WeightAverage(training.epochs - training.average_epochs + 1)
        batches = BatchSource(
            self.view,
            train_clean,
            train_bad,
            training,
            seed,
            self.sizes,
            keep_logits=self.weights.clean_distillation != 0,
        )
        with reporter.step("repair epochs", training.epochs) as advance:
            for epoch in range(1, training.epochs + 1):
                loss = self._epoch(epoch, batches, optimizer, generator)
                now = validation.measure(self.view, classes, seed + epoch)
                history.append(EpochRecord(epoch, loss, now.accuracy, now.bad, now.gap))
                advance(1)
                if training.average_epochs:
                    averager.add(epoch, self._snapshot())
                    continue  # a fixed schedule: the average is judged at the end
                score = scenario.objective(now, start, rule)
                met = scenario.stops_when_met and bool(scenario.targets_met(now, start, rule))
                if score > best_score or met:
                    best_score, kept_epoch, best_state, stale = score, epoch, self._snapshot(), 0
                    kept = now
                else:
                    stale += 1
                if met or stale >= rule.patience:
                    stopped_early = epoch < training.epochs
                    break
        outcome = TrainOutcome(history, kept_epoch, stopped_early, kept=kept, start=start)
        if averager.average is not None:
            best_state = self._judge_average(averager, validation, outcome, best_score, best_state)
        self._restore(best_state)
        if training.calibrate_output_bias and self._calibrate_output_bias(batches):
            outcome.kept = validation.measure(self.view, classes, seed)
        outcome.judge(scenario, rule, seed)
        return outcome

    def _calibrate_output_bias(self, batches: BatchSource) -> bool:
        """Shift the output unit's bias by the per-class offset that brings the kept
        weights' class scores on the clean training rows closest to the original model's
        (distillation; cross-entropy to the labels when there are none) while scoring the
        bad rows by their true labels (weighted as in training). Only where the class scores
        move by exactly that offset (up to a constant per row) and the bias is trainable;
        returns whether it changed."""
        unit = self.model.units[-1]
        if batches.bad.target_label is None or batches.bad.follows_weights:
            return False
        if unit.bias is None or unit.bias not in self.masks:
            return False
        bias = self.view.parameter(unit.bias)
        classes = self.model.num_classes
        if bias.numel() != classes:
            return False
        allowed = self.masks[unit.bias].reshape(-1).to(bias.dtype)
        with torch.no_grad():
            step = self.sizes.inference
            clean_logits = view_logits(self.view, batches.x_clean, step).cpu()
            bad_logits = view_logits(self.view, batches.x_bad, step).cpu()
            probe = torch.linspace(-1.0, 1.0, classes, device=bias.device, dtype=bias.dtype)
            probe = probe * allowed
            rows = batches.x_clean[:8]
            bias += probe.reshape(bias.shape)
            moved = view_logits(self.view, rows, step).cpu()
            bias -= probe.reshape(bias.shape)
            expected = F.log_softmax(clean_logits[:8] + probe.cpu(), dim=1)
            if not torch.allclose(F.log_softmax(moved, dim=1), expected, atol=1e-4):
                return False
        # In double precision: the objective is flat where most rows are confident, and float32
        # steps stop short of its minimum.
        clean_logits, bad_logits = clean_logits.double(), bad_logits.double()
        offset = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([offset], max_iter=100, line_search_fn="strong_wolfe")
        mask = allowed.cpu().double()
        y_clean, y_bad = batches.y_clean, batches.y_bad
        original = batches.original_logits
        original = None if original is None else original.cpu().double()

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            shift = offset * mask
            if original is None:
                loss = F.cross_entropy(clean_logits + shift, y_clean)
            else:
                loss = distillation(clean_logits + shift, original)
            loss = loss + self.weights.bad * F.cross_entropy(bad_logits + shift, y_bad)
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            bias += (offset.detach() * mask).to(bias.device, bias.dtype).reshape(bias.shape)
        return True

    def _judge_average(
        self,
        averager: WeightAverage,
        validation: ValidationSplit,
        outcome: TrainOutcome,
        best_score: float,
        best_state: list[torch.Tensor],
    ) -> list[torch.Tensor]:
        """Measure the averaged weights and keep them unless the untouched model scores
        better on validation; records both in `outcome` and returns the state to keep."""
        assert averager.average is not None and outcome.start is not None
        epochs = self.settings.training.epochs
        self._restore(averager.average)
        averaged = validation.measure(self.view, self.model.num_classes, self.seed)
        outcome.average = EpochRecord(epochs, None, averaged.accuracy, averaged.bad, averaged.gap)
        score = validation.scenario.objective(averaged, outcome.start, self.settings.stopping)
        if score < best_score:
            return best_state
        outcome.kept_epoch, outcome.kept, outcome.averaged_epochs = epochs, averaged, averager.count
        return averager.average

    def _snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.trainable]

    def _restore(self, state: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for parameter, value in zip(self.trainable, state):
                parameter.copy_(value)


def teacher_distributions(
    probe: Probe,
    features: np.ndarray,
    labels: np.ndarray,
    correct: np.ndarray,
    num_classes: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Per class: the probe's mean tempered softmax over clean samples the model gets right
    (computed on the CPU, where the features are; returned on `device`)."""
    with torch.no_grad():
        tempered = F.softmax(probe.logits(features) / KD_TEMPERATURE, dim=1)
    teachers = torch.full((num_classes, num_classes), 1.0 / num_classes)
    for label in range(num_classes):
        rows = torch.from_numpy(np.flatnonzero(correct & (labels == label)))
        if len(rows):
            teachers[label] = tempered[rows].mean(dim=0)
    return teachers.to(device)
