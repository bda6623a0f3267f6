"""Repair (DESIGN.md steps 4-5): masked optimization, write-back, verification.

`MaskedTrainer` fine-tunes the torch view with a gradient mask per
initializer: INNER masks the fault neurons, plain fine-tuning masks nothing
out, and the benchmark's other methods bring their own masks. The loss is the
output cross-entropy on clean and bad samples plus, per selected unit, the
probe loss `0.8·CE(probe(x_bad), y) + 0.2·KD_T(teacher_y ‖ probe(x_bad))`,
where the teacher is the probe's mean tempered softmax over the clean samples
of class y that the original model gets right. Two optional mixup terms widen
the little data a user has: distillation from the original model on mixtures
of clean samples (the repaired model keeps the original's behaviour between
the samples, not only at them), and cross-entropy on mixtures of two bad
samples with mixed labels (a backdoor trigger is the same in both, so every
mixture still carries it). A validation split of the user's data decides early
stopping and which epoch is kept; with `average_epochs` the weights of the
last epochs are averaged instead and the validation split checks the average.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from inner_onnx import __version__
from inner_onnx.errors import InputError
from inner_onnx.io.data import Dataset
from inner_onnx.io.model import OnnxModel
from inner_onnx.localize.faults import FaultSet
from inner_onnx.localize.pipeline import (
    Localization,
    LocalizeSettings,
    localize,
    pinned_threads,
    probes_for_faults,
)
from inner_onnx.localize.probes import LinearProbe
from inner_onnx.localize.routing import RoutingSettings
from inner_onnx.measure.attacks import input_range
from inner_onnx.measure.evaluation import EvaluationSet, evaluate
from inner_onnx.measure.metrics import (
    Metrics,
    accuracy,
    attack_success_rate,
    fairness_gap,
    per_class_accuracy,
)
from inner_onnx.progress import QUIET, Reporter
from inner_onnx.runtime import Runner, pool_activation_torch
from inner_onnx.scenarios.sources import BadSamples, BadSource, make_bad_samples
from inner_onnx.torchview import TorchView

METHODS = ("inner", "ft")
KD_TEMPERATURE = 3.0


@dataclass(frozen=True)
class RepairSettings:
    method: str = "inner"
    epochs: int = 20
    batch_size: int = 64
    # bad samples per batch, as a share of the clean ones
    bad_fraction: float = 0.25
    learning_rate: float = 0.01
    momentum: float = 0.9
    # Triggered samples start with huge losses (the backdoor's logit dominates): clipping keeps
    # the first steps from wrecking the clean behaviour.
    max_grad_norm: float = 1.0
    validation_fraction: float = 0.2
    patience: int = 5
    asr_target: float = 0.02
    accuracy_tolerance: float = 0.005
    fairness_tolerance: float = 0.01
    probe_loss_weight: float = 0.2
    # Output-level terms: CE on bad samples (weighted) and, on clean samples, CE plus
    # distillation from the original model, which keeps what the model did right.
    bad_loss_weight: float = 0.2
    clean_distillation_weight: float = 10.0
    # Mixup terms (see the module docstring); 0 switches them off.
    clean_mixup_weight: float = 0.0
    bad_mixup_weight: float = 0.0
    # Average the trainable weights over the last N epochs and keep the average; 0 keeps the
    # best single epoch by the validation objective.
    average_epochs: int = 0
    seed: int = 0
    localize: LocalizeSettings = field(default_factory=LocalizeSettings)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}; choose {', '.join(METHODS)}")
        if not 0 < self.validation_fraction < 1:
            raise InputError(f"--val-fraction must be in (0, 1), got {self.validation_fraction}")
        if self.epochs < 1:
            raise InputError(f"--epochs must be at least 1, got {self.epochs}")
        if not 0 <= self.average_epochs <= self.epochs:
            raise InputError(
                f"average_epochs must be in [0, epochs={self.epochs}], got {self.average_epochs}"
            )


# Robustness has to be learned, not just unlearned: adversarial repair needs more of the
# network to move (every unit, half of its neurons), a larger step, the adversarial loss at
# full weight and no distillation toward the original, non-robust outputs. Measured on the
# bundled MNIST sample: benchmarks/repair_targets.py.
#
# Backdoor: a trigger sits in a few input positions, which whole neurons cannot single out
# (a Dense neuron reads every position, a Conv channel runs everywhere), so routing works on
# weight elements. Mixtures of bad samples multiply the few the user has; distillation on
# mixtures of clean ones and the average of the last 10 epochs keep the class boundaries
# where the original had them (the single best epoch by a small validation split swings by
# several points of per-class accuracy). Measured on both bundled samples, 3 seeds each:
# benchmarks/repair_targets.py and benchmarks/RESULTS.md.
SCENARIO_DEFAULTS: dict[str, dict[str, object]] = {
    "backdoor": {
        "granularity": "weight",
        "epochs": 30,
        "average_epochs": 10,
        "clean_mixup_weight": 20.0,
        "bad_mixup_weight": 4.0,
    },
    # The original's outputs are what is wrong here: no distillation toward them.
    "wrong": {"clean_distillation_weight": 0.0},
    "adversarial": {
        "epochs": 30,
        "patience": 30,
        "learning_rate": 0.02,
        "bad_loss_weight": 1.0,
        "clean_distillation_weight": 0.0,
        "layers": 4,
        "top_fraction": 0.5,
        "max_weight_fraction": None,
    },
}


# The SCENARIO_DEFAULTS keys that configure localization; the rest are RepairSettings fields.
LOCALIZE_KEYS = ("granularity", "layers", "top_fraction", "max_weight_fraction")


def localize_settings_for(
    scenario: str,
    *,
    seed: int = 0,
    layers: int | None = None,
    granularity: str | None = None,
    top_k: int | None = None,
    threads: int = 1,
) -> LocalizeSettings:
    """Localization settings with the scenario's defaults, overridden by what the user gave
    (`localize` and `repair` share them, so `repair --faults` gets the set repair would find)."""
    defaults = SCENARIO_DEFAULTS.get(scenario, {})
    routing = RoutingSettings(
        granularity=granularity or str(defaults.get("granularity", RoutingSettings.granularity)),
        top_k=top_k,
        top_fraction=float(defaults.get("top_fraction", RoutingSettings.top_fraction)),
    )
    return LocalizeSettings(
        layers if layers is not None else int(defaults.get("layers", LocalizeSettings.layers)),
        routing,
        seed,
        threads=threads,
        max_weight_fraction=defaults.get(  # type: ignore[arg-type]
            "max_weight_fraction", LocalizeSettings.max_weight_fraction
        ),
    )


def settings_for(
    scenario: str,
    *,
    method: str = "inner",
    seed: int = 0,
    epochs: int | None = None,
    layers: int | None = None,
    granularity: str | None = None,
    top_k: int | None = None,
    validation_fraction: float = 0.2,
    threads: int = 1,
) -> RepairSettings:
    """Settings with the scenario's defaults, overridden by what the user gave."""
    defaults = {
        key: value
        for key, value in SCENARIO_DEFAULTS.get(scenario, {}).items()
        if key not in LOCALIZE_KEYS
    }
    if epochs is not None:
        defaults["epochs"] = epochs
        defaults["patience"] = min(int(defaults.get("patience", RepairSettings.patience)), epochs)
        average = int(defaults.get("average_epochs", RepairSettings.average_epochs))
        defaults["average_epochs"] = min(average, epochs)
    return RepairSettings(
        method=method,
        seed=seed,
        validation_fraction=validation_fraction,
        localize=localize_settings_for(
            scenario,
            seed=seed,
            layers=layers,
            granularity=granularity,
            top_k=top_k,
            threads=threads,
        ),
        **defaults,  # type: ignore[arg-type]
    )


@dataclass
class ProbeTerm:
    """A selected unit's frozen probe and its per-class teacher distributions."""

    unit_name: str
    probe: LinearProbe
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


class ValidationSplit:
    """The held-out part of the user's data, measured on the torch view between epochs."""

    def __init__(self, clean: Dataset, bad: BadSamples, scenario: str):
        self.clean = clean
        self.bad = bad
        self.scenario = scenario

    def measure(
        self, forward: Callable[[torch.Tensor], torch.Tensor], num_classes: int, seed: int
    ) -> Measurement:
        pred = _predict(forward, self.clean.x)
        acc = accuracy(pred, self.clean.y)
        gap = fairness_gap(per_class_accuracy(pred, self.clean.y, num_classes))
        if self.scenario == "adversarial":
            x_adv = self.bad.regenerate(forward, self.clean.x, self.clean.y, seed)
            return Measurement(acc, accuracy(_predict(forward, x_adv), self.clean.y), gap)
        if self.scenario == "wrong":
            return Measurement(acc, None, gap)
        bad_pred = _predict(forward, self.bad.data.x)
        if self.bad.target_label is not None:
            asr = attack_success_rate(bad_pred, self.bad.data.y, self.bad.target_label)
            return Measurement(acc, asr, gap)
        return Measurement(acc, accuracy(bad_pred, self.bad.data.y), gap)


def _predict(
    forward: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray, batch_size: int = 512
) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out.append(forward(torch.from_numpy(x[start : start + batch_size])).argmax(1).numpy())
    return np.concatenate(out)


@dataclass(frozen=True)
class Measurement:
    """Validation figures after an epoch: accuracy, the scenario's bad figure, fairness gap."""

    accuracy: float
    bad: float | None
    gap: float


def objective(
    scenario: str, has_target: bool, now: Measurement, start: Measurement, settings: RepairSettings
) -> float:
    """Higher is better. Losing accuracy beyond the tolerance costs three times the loss, and a
    wider fairness gap than the original's (beyond the tolerance) costs its size."""
    penalty = 3.0 * max(0.0, start.accuracy - settings.accuracy_tolerance - now.accuracy)
    penalty += max(0.0, now.gap - start.gap - settings.fairness_tolerance)
    if scenario == "backdoor":
        bad = now.bad if has_target else -now.bad  # ASR goes down; bad-sample accuracy up
        return now.accuracy - bad - penalty  # type: ignore[operator]
    if scenario == "adversarial":
        return now.accuracy + now.bad - penalty  # type: ignore[operator]
    return now.accuracy - now.gap - penalty


def backdoor_targets_met(now: Measurement, start: Measurement, settings: RepairSettings) -> bool:
    return (
        now.bad is not None
        and now.bad <= settings.asr_target
        and now.accuracy >= start.accuracy - settings.accuracy_tolerance
        and now.gap <= start.gap + settings.fairness_tolerance
    )


def make_optimizer(
    parameters: list[torch.nn.Parameter], settings: RepairSettings
) -> torch.optim.Optimizer:
    # Masked-out values must not move: no weight decay, and their zero gradients keep the
    # momentum buffers at zero, so their step is exactly zero.
    return torch.optim.SGD(parameters, lr=settings.learning_rate, momentum=settings.momentum)


class BatchSource:
    """Mini-batches of (clean x, clean y, original clean logits, bad x, bad y).

    Each epoch walks the clean training data once; bad samples cycle alongside, a fixed
    share of each batch. Adversarial bad samples are made afresh against the current
    weights for every batch.
    """

    def __init__(
        self,
        view: TorchView,
        clean: Dataset,
        bad: BadSamples,
        scenario: str,
        settings: RepairSettings,
    ):
        self.bad = bad
        self.scenario = scenario
        self.batch_size = settings.batch_size
        self.bad_batch = max(1, round(settings.batch_size * settings.bad_fraction))
        self.rng = np.random.default_rng(settings.seed)
        self.x_clean = torch.from_numpy(clean.x)
        self.y_clean = torch.from_numpy(clean.y.astype(np.int64))
        with torch.no_grad():
            self.original_logits = torch.cat(
                [view(self.x_clean[i : i + 512]) for i in range(0, len(self.x_clean), 512)]
            )
        self.x_bad = torch.from_numpy(bad.data.x)
        self.y_bad = torch.from_numpy(bad.data.y.astype(np.int64))

    def epoch(
        self, generator: torch.Generator, forward: Callable[[torch.Tensor], torch.Tensor]
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        order = torch.randperm(len(self.x_clean), generator=generator)
        bad_order = torch.randperm(len(self.x_bad), generator=generator)
        for index, start in enumerate(range(0, len(order), self.batch_size)):
            rows = order[start : start + self.batch_size]
            xc, yc = self.x_clean[rows], self.y_clean[rows]
            if self.scenario == "adversarial":
                seed = int(self.rng.integers(1 << 31))
                xb = torch.from_numpy(self.bad.regenerate(forward, xc.numpy(), yc.numpy(), seed))
                yb = yc
            else:
                window = torch.arange(index * self.bad_batch, (index + 1) * self.bad_batch)
                pick = bad_order[window % len(bad_order)]
                xb, yb = self.x_bad[pick], self.y_bad[pick]
            yield xc, yc, self.original_logits[rows], xb, yb


def _distillation(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    return F.kl_div(
        F.log_softmax(logits, dim=1), F.softmax(teacher_logits, dim=1), reduction="batchmean"
    )


class MaskedTrainer:
    """Fine-tunes only the masked values of the view's initializers."""

    def __init__(
        self,
        model: OnnxModel,
        view: TorchView,
        masks: dict[str, np.ndarray],
        probe_terms: list[ProbeTerm],
        settings: RepairSettings,
    ):
        self.model = model
        self.view = view
        self.settings = settings
        self.probe_terms = probe_terms
        self.masks = {name: torch.from_numpy(mask) for name, mask in masks.items() if mask.any()}
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
        # The original model, frozen, scores the clean mixtures (they are new every batch).
        self.teacher: TorchView | None = None
        if settings.clean_mixup_weight:
            self.teacher = (
                TorchView(model.proto, outputs=[model.logits_name]).eval().requires_grad_(False)
            )
        self.mixing = torch.Generator().manual_seed(settings.seed + 1)

    def _mix(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each sample mixed with a random partner: (mixtures, its own share, partner rows)."""
        share = torch.rand(len(x), generator=self.mixing)
        partner = torch.randperm(len(x), generator=self.mixing)
        weights = share.reshape(-1, *([1] * (x.dim() - 1)))
        return weights * x + (1 - weights) * x[partner], share, partner

    def _loss(
        self,
        x_clean: torch.Tensor,
        y_clean: torch.Tensor,
        original_clean: torch.Tensor,
        x_bad: torch.Tensor,
        y_bad: torch.Tensor,
    ) -> torch.Tensor:
        settings = self.settings
        captures = [self.units[t.unit_name].activation for t in self.probe_terms]
        batches = [x_clean, x_bad]
        if settings.clean_mixup_weight:
            clean_mixtures, _, _ = self._mix(x_clean)
            batches.append(clean_mixtures)
        if settings.bad_mixup_weight:
            bad_mixtures, bad_share, bad_partner = self._mix(x_bad)
            batches.append(bad_mixtures)
        x = torch.cat(batches)
        if captures:
            logits, captured = self.view(x, capture=captures)
        else:
            logits, captured = self.view(x), {}
        parts = iter(torch.split(logits, [len(b) for b in batches]))
        clean_logits, bad_logits = next(parts), next(parts)
        loss = (
            F.cross_entropy(clean_logits, y_clean)
            + settings.clean_distillation_weight * _distillation(clean_logits, original_clean)
            + settings.bad_loss_weight * F.cross_entropy(bad_logits, y_bad)
        )
        if settings.clean_mixup_weight:
            assert self.teacher is not None
            with torch.no_grad():
                teacher_logits = self.teacher(clean_mixtures)
            loss = loss + settings.clean_mixup_weight * _distillation(next(parts), teacher_logits)
        if settings.bad_mixup_weight:
            mixed = next(parts)
            mixed_loss = bad_share * F.cross_entropy(mixed, y_bad, reduction="none") + (
                1 - bad_share
            ) * F.cross_entropy(mixed, y_bad[bad_partner], reduction="none")
            loss = loss + settings.bad_mixup_weight * mixed_loss.mean()
        bad_rows = slice(len(x_clean), len(x_clean) + len(x_bad))
        for term in self.probe_terms:
            unit = self.units[term.unit_name]
            pooled = pool_activation_torch(captured[unit.activation][bad_rows], unit)
            probe_logits = term.probe.torch_logits(pooled)
            distillation = (
                F.kl_div(
                    F.log_softmax(probe_logits / KD_TEMPERATURE, dim=1),
                    term.teachers[y_bad],
                    reduction="batchmean",
                )
                * KD_TEMPERATURE**2
            )
            loss = loss + settings.probe_loss_weight * (
                0.8 * F.cross_entropy(probe_logits, y_bad) + 0.2 * distillation
            ) / len(self.probe_terms)
        return loss

    def fit(
        self,
        train_clean: Dataset,
        train_bad: BadSamples,
        validation: ValidationSplit,
        scenario: str,
        reporter: Reporter = QUIET,
    ) -> TrainOutcome:
        settings = self.settings
        generator = torch.Generator().manual_seed(settings.seed)
        optimizer = make_optimizer(self.trainable, settings)
        has_target = train_bad.target_label is not None
        start = validation.measure(self.view, self.model.num_classes, settings.seed)
        history = [EpochRecord(0, None, start.accuracy, start.bad, start.gap)]
        best_score, kept_epoch = objective(scenario, has_target, start, start, settings), 0
        best_state = self._snapshot()
        stale = 0
        stopped_early = False
        averager = WeightAverage(settings.epochs - settings.average_epochs + 1)
        batches = BatchSource(self.view, train_clean, train_bad, scenario, settings)
        with reporter.step("repair epochs", settings.epochs) as advance:
            for epoch in range(1, settings.epochs + 1):
                # Linear decay to a tenth: late epochs settle instead of oscillating.
                for group in optimizer.param_groups:
                    group["lr"] = settings.learning_rate * (
                        1 - 0.9 * (epoch - 1) / max(1, settings.epochs - 1)
                    )
                losses = []
                for batch in batches.epoch(generator, self.view):
                    optimizer.zero_grad(set_to_none=True)
                    loss = self._loss(*batch)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(self.trainable, settings.max_grad_norm)
                    optimizer.step()
                    losses.append(float(loss.detach()))
                now = validation.measure(self.view, self.model.num_classes, settings.seed + epoch)
                history.append(
                    EpochRecord(epoch, float(np.mean(losses)), now.accuracy, now.bad, now.gap)
                )
                advance(1)
                if settings.average_epochs:
                    averager.add(epoch, self._snapshot())
                    continue  # a fixed schedule: the average is judged at the end
                score = objective(scenario, has_target, now, start, settings)
                met = (
                    scenario == "backdoor"
                    and has_target
                    and backdoor_targets_met(now, start, settings)
                )
                if score > best_score or met:
                    best_score, kept_epoch, best_state, stale = score, epoch, self._snapshot(), 0
                else:
                    stale += 1
                if met or stale >= settings.patience:
                    stopped_early = epoch < settings.epochs
                    break
        average_record, averaged_epochs = None, 0
        if averager.average is not None:
            self._restore(averager.average)
            averaged = validation.measure(self.view, self.model.num_classes, settings.seed)
            average_record = EpochRecord(
                settings.epochs, None, averaged.accuracy, averaged.bad, averaged.gap
            )
            # The average is kept unless the untouched model scores better on validation.
            if objective(scenario, has_target, averaged, start, settings) >= best_score:
                best_state, kept_epoch = averager.average, settings.epochs
                averaged_epochs = averager.count
        self._restore(best_state)
        return TrainOutcome(history, kept_epoch, stopped_early, average_record, averaged_epochs)

    def _snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.trainable]

    def _restore(self, state: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for parameter, value in zip(self.trainable, state):
                parameter.copy_(value)


def split_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, validation) indices; every class with 2+ samples lands in both."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        count = round(len(rows) * fraction) if len(rows) > 1 else 0
        count = min(max(count, 1 if len(rows) > 1 else 0), len(rows) - 1)
        held.append(rows[:count])
        train.append(rows[count:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def checked_split(data: Dataset, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    train, held = split_indices(data.y, fraction, seed)
    if not len(held) or not len(train):
        raise InputError(
            f"{data.source}: too few samples for a validation split (need at least 2 of a class)"
        )
    return train, held


def teacher_distributions(
    probe: LinearProbe,
    features: np.ndarray,
    labels: np.ndarray,
    correct: np.ndarray,
    num_classes: int,
) -> torch.Tensor:
    """Per class: the probe's mean tempered softmax over clean samples the model gets right."""
    with torch.no_grad():
        logits = probe.torch_logits(torch.from_numpy(features))
        tempered = F.softmax(logits / KD_TEMPERATURE, dim=1)
    teachers = torch.full((num_classes, num_classes), 1.0 / num_classes)
    for label in range(num_classes):
        rows = torch.from_numpy(np.flatnonzero(correct & (labels == label)))
        if len(rows):
            teachers[label] = tempered[rows].mean(dim=0)
    return teachers


@dataclass
class RepairResult:
    proto: onnx.ModelProto
    scenario: str
    method: str
    before: Metrics
    after: Metrics
    evaluation_name: str
    faults: FaultSet | None
    changed: dict[str, int]
    weights_total: int
    outcome: TrainOutcome
    seconds: float
    settings: dict = field(default_factory=dict)

    @property
    def changed_count(self) -> int:
        return sum(self.changed.values())

    def summary(self) -> dict[str, object]:
        faults = None
        if self.faults is not None:
            faults = {
                "granularity": self.faults.granularity,
                "selected_units": self.faults.selected_units,
                "neurons": len(self.faults.neurons),
                "top_neurons": [asdict(n) for n in self.faults.neurons[:10]],
            }
        return {
            "scenario": self.scenario,
            "method": self.method,
            "evaluated_on": self.evaluation_name,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "faults": faults,
            "changed_weights": {
                "count": self.changed_count,
                "fraction": self.changed_count / self.weights_total if self.weights_total else 0,
                "tensors": self.changed,
            },
            "epochs_run": len(self.outcome.history) - 1,
            "kept_epoch": self.outcome.kept_epoch,
            "averaged_epochs": self.outcome.averaged_epochs,
            "history": [asdict(r) for r in self.outcome.history],
            "average": asdict(self.outcome.average) if self.outcome.average else None,
        }


def _split_bad(
    source: BadSource,
    model: OnnxModel,
    train: Dataset,
    held: Dataset,
    runner: Runner,
    view: TorchView,
    fraction: float,
    seed: int,
    reporter: Reporter,
) -> tuple[BadSamples, BadSamples]:
    """Bad samples for training and for validation, never sharing a source sample."""

    if source.bad_path is not None:
        every = make_bad_samples(source, model, train, runner.predict, view, seed)
        train_rows, held_rows = checked_split(every.data, fraction, seed)
        return (
            BadSamples(every.data.subset(train_rows), every.target_label),
            BadSamples(every.data.subset(held_rows), every.target_label),
        )
    train_bad = make_bad_samples(source, model, train, runner.predict, view, seed, reporter)
    if source.scenario == "wrong":
        return train_bad, BadSamples(held, None)
    if source.scenario == "adversarial":
        return train_bad, BadSamples(held, None, train_bad.attack, train_bad.clip)
    return train_bad, make_bad_samples(source, model, held, runner.predict, view, seed)


def fault_masks(model: OnnxModel, faults: FaultSet | None) -> dict[str, np.ndarray]:
    """INNER: the fault set's masks; without one (plain fine-tuning): every unit value."""
    if faults is not None:
        return faults.masks(model)
    masks = {}
    for unit in model.units:
        for name in (unit.weight, unit.bias):
            if name is not None:
                masks[name] = np.ones(tuple(model.initializers[name].dims), dtype=bool)
    return masks


def repair(
    model: OnnxModel,
    clean: Dataset,
    source: BadSource,
    settings: RepairSettings,
    faults: FaultSet | None = None,
    evaluation: EvaluationSet | None = None,
    device: str = "auto",
    reporter: Reporter = QUIET,
) -> RepairResult:
    """Repair `model`; the result's proto is checked and every "after" number is onnxruntime's."""
    with pinned_threads(settings.localize.threads):
        return _repair(model, clean, source, settings, faults, evaluation, device, reporter)


def _repair(
    model: OnnxModel,
    clean: Dataset,
    source: BadSource,
    settings: RepairSettings,
    faults: FaultSet | None,
    evaluation: EvaluationSet | None,
    device: str,
    reporter: Reporter,
) -> RepairResult:
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    runner = Runner(model, device)
    view = TorchView(model.proto, outputs=[model.logits_name]).eval()
    if source.attack is not None and source.clip is None:
        # One valid range for every split: the training part alone may not span the rest.
        source = replace(source, clip=input_range(clean.x, None))
    train_rows, held_rows = checked_split(clean, settings.validation_fraction, settings.seed)
    train, held = clean.subset(train_rows), clean.subset(held_rows)
    train_bad, held_bad = _split_bad(
        source,
        model,
        train,
        held,
        runner,
        view,
        settings.validation_fraction,
        settings.seed,
        reporter,
    )
    probe_terms: list[ProbeTerm] = []
    if settings.method == "inner":
        if faults is None:
            found = localize(runner, view, train, train_bad.data, settings.localize, reporter)
            faults = found.faults
            probe_terms = _probe_terms(found, train.y, model.num_classes)
        else:
            probe_terms = probe_terms_for_faults(runner, train, faults, settings, reporter)
    else:
        faults = None
    if evaluation is None:
        evaluation = EvaluationSet(
            held,
            held_bad.data if source.scenario == "backdoor" else None,
            held_bad.target_label,
            source.attack,
            held_bad.clip,
            "validation split",
        )
    elif evaluation.bad is not None and evaluation.target_label is None:
        evaluation = replace(evaluation, target_label=train_bad.target_label)
    before = evaluate(runner, evaluation, settings.seed, reporter)
    trainer = MaskedTrainer(model, view, fault_masks(model, faults), probe_terms, settings)
    validation = ValidationSplit(held, held_bad, source.scenario)
    outcome = trainer.fit(train, train_bad, validation, source.scenario, reporter)
    proto = view.write_back()
    changed = changed_values(model, proto)
    repaired = OnnxModel(proto)
    after = evaluate(Runner(repaired, device), evaluation, settings.seed, reporter)
    weights_total = sum(u.parameters for u in model.units)
    result = RepairResult(
        proto,
        source.scenario,
        settings.method,
        before,
        after,
        evaluation.name or evaluation.data.source,
        faults,
        changed,
        weights_total,
        outcome,
        0.0,
        _settings_record(settings, source),
    )
    result.proto = with_provenance(proto, result)
    verify(result.proto, repaired, evaluation.data.x)
    result.seconds = time.perf_counter() - started
    return result


def probe_terms_for_faults(
    runner: Runner,
    train: Dataset,
    faults: FaultSet,
    settings: RepairSettings,
    reporter: Reporter = QUIET,
) -> list[ProbeTerm]:
    """Probe terms for a given fault set (read from a file, or made by another method)."""
    found = probes_for_faults(runner, train, faults, settings.localize, reporter)
    return _probe_terms(found, train.y, runner.model.num_classes)


def _probe_terms(found: Localization, labels: np.ndarray, num_classes: int) -> list[ProbeTerm]:
    """The selected units' probes, each with its per-class teachers."""
    return [
        ProbeTerm(
            name,
            found.probes.probes[name],
            teacher_distributions(
                found.probes.probes[name],
                found.clean_features[name],
                labels,
                found.clean_correct,
                num_classes,
            ),
        )
        for name in found.faults.selected_units
    ]


def changed_values(model: OnnxModel, proto: onnx.ModelProto) -> dict[str, int]:
    """Initializer name -> how many of its values differ from the original."""
    changed = {}
    for init in proto.graph.initializer:
        before = onnx.numpy_helper.to_array(model.initializers[init.name])
        after = onnx.numpy_helper.to_array(init)
        count = int(np.count_nonzero(before != after))
        if count:
            changed[init.name] = count
    return changed


def _settings_record(settings: RepairSettings, source: BadSource) -> dict[str, object]:
    record = asdict(settings)
    record["bad_source"] = {
        "bad": str(source.bad_path) if source.bad_path else None,
        "trigger": str(source.trigger) if source.trigger else None,
        "attack": str(source.attack) if source.attack else None,
        "target_label": source.target_label,
    }
    return record


def with_provenance(proto: onnx.ModelProto, result: RepairResult) -> onnx.ModelProto:
    """The repaired model with what was done recorded in metadata_props (no timings: the
    same inputs and seed must give the same bytes)."""
    stamped = onnx.ModelProto()
    stamped.CopyFrom(proto)
    record = {
        "tool": f"inner-onnx {__version__}",
        "scenario": result.scenario,
        "method": result.method,
        "seed": result.settings.get("seed"),
        "settings": result.settings,
        "changed_tensors": result.changed,
        "evaluated_on": result.evaluation_name,
        "before": result.before.to_dict(),
        "after": result.after.to_dict(),
    }
    kept = [p for p in stamped.metadata_props if p.key != "inner_onnx.provenance"]
    del stamped.metadata_props[:]
    stamped.metadata_props.extend(kept)
    entry = stamped.metadata_props.add()
    entry.key, entry.value = "inner_onnx.provenance", json.dumps(record, sort_keys=True)
    return stamped


def verify(proto: onnx.ModelProto, measured: OnnxModel, x: np.ndarray) -> None:
    """Full ONNX check, then the bytes to be written must score exactly as the model measured."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise RuntimeError(f"repaired model fails the ONNX checker: {exc}") from None
    written = OnnxModel(onnx.load_from_string(proto.SerializeToString()))
    sample = x[:256]
    if not np.array_equal(
        Runner(written, "cpu").scores(sample), Runner(measured, "cpu").scores(sample)
    ):
        raise RuntimeError("repaired model scores changed when its provenance was attached")
