"""What a scenario is: where its bad samples come from, how it is measured and judged.

A `Scenario` object per defect (backdoor.py, adversarial.py, wrong.py) answers
every question that depends on the defect: which options give its bad samples,
how they are split for validation, its typed repair defaults, what a validation
measurement holds, the objective that picks the kept epoch, whether the targets
are met, and how the report and the benchmark name its figures.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from inner_onnx.batching import GRADIENT_CAP, INFERENCE_CAP, BatchSizes
from inner_onnx.context import as_torch, on_device_of
from inner_onnx.errors import InputError
from inner_onnx.io.data import Dataset, Inputs
from inner_onnx.io.model import OnnxModel
from inner_onnx.io.specs import AttackSpec, TriggerSpec
from inner_onnx.measure.attacks import Domain, generate
from inner_onnx.measure.metrics import Metrics, accuracy, fairness_gap, per_class_accuracy
from inner_onnx.progress import QUIET, Reporter
from inner_onnx.repair.settings import RepairSettings, StoppingRule

Forward = Callable[[torch.Tensor], torch.Tensor]
Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BadSource:
    """The user's choice of bad samples, checked for consistency before any work.

    `bad_path` is a file of bad samples; `bad_data` the same already in memory (the
    benchmark draws its own)."""

    scenario: str
    bad_path: Path | None = None
    trigger: TriggerSpec | None = None
    attack: AttackSpec | None = None
    target_label: int | None = None
    clip: tuple[float, float] | None = None
    bad_data: Dataset | None = None

    def check(self, model: OnnxModel) -> None:
        if self.target_label is not None and not 0 <= self.target_label < model.num_classes:
            raise InputError(
                f"--target-label {self.target_label} out of range: the model has "
                f"{model.num_classes} classes"
            )

    def record(self) -> dict[str, object]:
        """What the provenance says about where the bad samples came from."""
        bad = str(self.bad_path) if self.bad_path else None
        if bad is None and self.bad_data is not None:
            bad = self.bad_data.source
        return {
            "bad": bad,
            "trigger": str(self.trigger) if self.trigger else None,
            "attack": str(self.attack) if self.attack else None,
            "target_label": self.target_label,
        }


@dataclass
class BadSamples:
    data: Dataset
    target_label: int | None
    # adversarial: how to make more against changed weights (repair regenerates them)
    attack: AttackSpec | None = None
    # the valid input range, or a text model's embedding space (attacks.attack_domain)
    clip: Domain | None = None
    # where samples the tool made itself came from (a trigger scan), for the provenance
    origin: dict[str, object] | None = None

    @property
    def follows_weights(self) -> bool:
        """Whether these samples must be made afresh whenever the weights change."""
        return self.attack is not None

    def regenerate(
        self,
        forward: Forward,
        x: np.ndarray | Inputs,
        y: np.ndarray,
        seed: int,
        batch_size: int = GRADIENT_CAP,
    ) -> np.ndarray | Inputs:
        assert self.attack is not None and self.clip is not None
        return generate(self.attack, forward, x, y, self.clip, seed=seed, batch_size=batch_size)


@dataclass(frozen=True)
class Measurement:
    """Validation figures after an epoch: accuracy, the scenario's bad figure, fairness gap,
    weakest class accuracy.

    `bad_kind` names the bad figure: "asr", "bad_accuracy", "robust_accuracy" or None. The
    per-sample outcomes behind the figures are kept so that `resampled` can redo them on a
    bootstrap sample (the noise estimate of a targets-met verdict)."""

    accuracy: float
    bad: float | None
    gap: float
    bad_kind: str | None = None
    weakest: float | None = None
    clean_pred: np.ndarray | None = field(default=None, compare=False, repr=False)
    clean_y: np.ndarray | None = field(default=None, compare=False, repr=False)
    # per bad sample: 1 where it counts toward `bad` (attack succeeded, or sample right)
    bad_hits: np.ndarray | None = field(default=None, compare=False, repr=False)
    # adversarial examples are made from the clean samples: one outcome per clean row
    bad_per_clean_row: bool = False

    def resampled(self, clean_rows: np.ndarray, bad_rows: np.ndarray | None) -> Measurement:
        """The same figures on the given rows (with repeats) of the samples measured."""
        assert self.clean_pred is not None and self.clean_y is not None
        pred, y = self.clean_pred[clean_rows], self.clean_y[clean_rows]
        classes = int(max(self.clean_y.max(), pred.max())) + 1
        bad = self.bad
        if self.bad_hits is not None:
            rows = clean_rows if self.bad_per_clean_row else bad_rows
            bad = float(np.mean(self.bad_hits[rows]))
        acc, gap, weakest = clean_figures(pred, y, classes)
        return Measurement(acc, bad, gap, self.bad_kind, weakest)


@dataclass(frozen=True)
class Sampler:
    """What making bad samples needs besides their source and the clean data: the model,
    its onnxruntime predictions, its torch forward function (attacks), a seed, progress,
    and the batch sizes that fit the model (batching.py)."""

    model: OnnxModel
    predict: Predict
    forward: Forward
    seed: int = 0
    reporter: Reporter = QUIET
    sizes: BatchSizes = field(default_factory=BatchSizes)


def predict_labels(
    forward: Forward, x: np.ndarray | Inputs, batch_size: int = INFERENCE_CAP
) -> np.ndarray:
    """Class labels from a torch forward function, in batches, without gradients; each batch
    goes to the forward's device and only its labels come back."""
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = on_device_of(forward, as_torch(x[start : start + batch_size]))
            out.append(forward(batch).argmax(1).cpu().numpy())
    return np.concatenate(out)


def clean_figures(pred: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[float, float, float]:
    """(accuracy, fairness gap, weakest present class's accuracy) of predictions."""
    per_class = per_class_accuracy(pred, y, num_classes)
    present = [a for a in per_class if a is not None]
    return accuracy(pred, y), fairness_gap(per_class), min(present)


def clean_measurement(
    forward: Forward,
    clean: Dataset,
    num_classes: int,
    bad: float | None = None,
    bad_kind: str | None = None,
    bad_hits: np.ndarray | None = None,
    batch_size: int = INFERENCE_CAP,
) -> Measurement:
    """The clean figures of `forward` on `clean`, with the scenario's bad figure."""
    pred = predict_labels(forward, clean.x, batch_size)
    acc, gap, weakest = clean_figures(pred, clean.y, num_classes)
    return Measurement(
        acc,
        bad,
        gap,
        bad_kind,
        weakest,
        pred,
        clean.y,
        bad_hits,
        bad_hits is not None and len(bad_hits) == len(clean.y) and bad_kind == "robust_accuracy",
    )


def accuracy_kept(now: Measurement, start: Measurement, tolerance: float) -> list[str]:
    drop = start.accuracy - now.accuracy
    if drop > tolerance:
        return [f"accuracy fell {100 * drop:.1f} pt (tolerance {100 * tolerance:.1f})"]
    return []


def bootstrap_confidence(
    scenario: Scenario,
    now: Measurement,
    start: Measurement,
    rule: StoppingRule,
    rounds: int = 200,
    seed: int = 0,
) -> float | None:
    """Share of stratified bootstrap resamples of the validation split on which the targets
    hold (the same rows for `start` and `now`); None when there is nothing to resample."""
    if now.clean_y is None or scenario.missed_targets(now, start, rule) is None:
        return None
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(now.clean_y == c) for c in np.unique(now.clean_y)]
    bad_count = len(now.bad_hits) if now.bad_hits is not None else 0
    held = 0
    for _ in range(rounds):
        clean_rows = np.concatenate([rng.choice(rows, size=len(rows)) for rows in by_class])
        bad_rows = rng.integers(bad_count, size=bad_count) if bad_count else None
        resampled_now = now.resampled(clean_rows, bad_rows)
        resampled_start = start.resampled(clean_rows, bad_rows)
        held += not scenario.missed_targets(resampled_now, resampled_start, rule)
    return held / rounds


def kept_behaviour_penalty(now: Measurement, start: Measurement, rule: StoppingRule) -> float:
    """Losing accuracy beyond the tolerance costs three times the loss, and a wider fairness
    gap than the original's (beyond the tolerance) costs its size."""
    penalty = 3.0 * max(0.0, start.accuracy - rule.accuracy_tolerance - now.accuracy)
    return penalty + max(0.0, now.gap - start.gap - rule.fairness_tolerance)


class Scenario(ABC):
    """One defect inner-onnx repairs. Subclasses register with `@register`."""

    name: ClassVar[str]
    # one line for --help and the README
    summary: ClassVar[str]
    # the options that give its bad samples (empty: they come from the clean data)
    sources: ClassVar[tuple[str, ...]]
    # the Metrics field that says whether the defect is gone, and which way is better
    bad_metric: ClassVar[str]
    bad_metric_higher_is_better: ClassVar[bool]

    @abstractmethod
    def default_settings(self) -> RepairSettings:
        """This scenario's repair defaults, before the user's options."""

    @abstractmethod
    def bad_samples(self, source: BadSource, clean: Dataset, sampler: Sampler) -> BadSamples:
        """Bad samples with their true labels."""

    @abstractmethod
    def split_bad(
        self, source: BadSource, train: Dataset, held: Dataset, fraction: float, sampler: Sampler
    ) -> tuple[BadSamples, BadSamples]:
        """Bad samples for training and for validation, never sharing a source sample."""

    @abstractmethod
    def measure(
        self,
        forward: Forward,
        clean: Dataset,
        bad: BadSamples,
        num_classes: int,
        seed: int,
        sizes: BatchSizes = BatchSizes(),
    ) -> Measurement:
        """Validation figures of the weights behind `forward`, in batches of `sizes`."""

    @abstractmethod
    def objective(self, now: Measurement, start: Measurement, rule: StoppingRule) -> float:
        """Higher is better; picks the kept epoch and ranks benchmark runs."""

    # whether training stops as soon as the targets hold (DESIGN.md step 4); otherwise the
    # verdict is only reported and the objective decides the kept epoch
    stops_when_met: ClassVar[bool] = False

    def missed_targets(
        self, now: Measurement, start: Measurement, rule: StoppingRule
    ) -> list[str] | None:
        """The validation targets `now` misses, in words (None: this scenario states none)."""
        return None

    def targets_met(self, now: Measurement, start: Measurement, rule: StoppingRule) -> bool | None:
        missed = self.missed_targets(now, start, rule)
        return None if missed is None else not missed

    def evaluation_bad(self, held_bad: BadSamples) -> Dataset | None:
        """The bad samples an evaluation on the validation split measures (None: none)."""
        return None

    def headline_field(self, before: Metrics) -> str | None:
        """The Metrics field the report shows first."""
        return self.bad_metric if getattr(before, self.bad_metric, None) is not None else None

    def curve_label(self, has_target: bool) -> str | None:
        """What the validation 'bad' figure of each epoch measures (None: nothing)."""
        return None

    def check_source(self, given: list[str]) -> None:
        """Refuse options that do not fit this scenario, or a missing one."""
        if given and given[0] not in self.sources:
            raise InputError(
                f"{given[0]} does not fit --scenario {self.name}"
                + (
                    f"; use {' or '.join(self.sources)}"
                    if self.sources
                    else " (it uses misclassified data)"
                )
            )
        if self.sources and not given:
            raise InputError(f"--scenario {self.name} needs {' or '.join(self.sources)}")


def infer_target_label(predictions: np.ndarray, y: np.ndarray) -> int | None:
    """The class that bad samples of other classes are pushed to most often, if any."""
    flipped = predictions[predictions != y]
    if not len(flipped):
        return None
    return int(np.bincount(flipped).argmax())


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


REGISTRY: dict[str, Scenario] = {}


def register(cls: type[Scenario]) -> type[Scenario]:
    """Class decorator: make the scenario known by its name (one file per scenario)."""
    REGISTRY[cls.name] = cls()
    return cls
