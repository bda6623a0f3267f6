"""Scenarios, data budgets and the shared state of one benchmark case.

Fashion-MNIST's test split (unseen by every model) is cut once into an
evaluation part and a pool; each seed draws the repair data of a budget from
the pool. A `Case` holds what every method of one (model, scenario, budget,
seed) shares: the training and validation splits, the bad samples, the
evaluation set and the fault set, localized once and timed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.models import (
    BLEND_ALPHA,
    PATCH_AT,
    TARGET_LABEL,
    blend_pattern,
    patch_pattern,
)
from inner_onnx.io.data import Dataset
from inner_onnx.io.model import OnnxModel
from inner_onnx.io.specs import AttackSpec, BlendSpec, FgsmSpec, PatchSpec, PgdSpec, TriggerSpec
from inner_onnx.localize.faults import FaultSet
from inner_onnx.localize.pipeline import localize
from inner_onnx.measure.attacks import generate
from inner_onnx.measure.evaluation import EvaluationSet
from inner_onnx.repair.pipeline import RepairSettings, ValidationSplit, split_indices
from inner_onnx.runtime import Runner
from inner_onnx.scenarios.sources import BadSamples
from inner_onnx.scenarios.triggers import backdoor_bad_samples
from inner_onnx.torchview import TorchView

CLIP = (0.0, 1.0)  # every model takes raw [0, 1] pixels


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "backdoor", "adversarial" or "wrong"
    trigger: TriggerSpec | None = None
    attack: AttackSpec | None = None

    @property
    def target_label(self) -> int | None:
        return TARGET_LABEL if self.kind == "backdoor" else None

    @property
    def bad_metric(self) -> str:
        """The Metrics field (or weak-class accuracy) that says whether the defect is gone."""
        return {"backdoor": "asr", "adversarial": "robust_accuracy", "wrong": "weak_accuracy"}[
            self.kind
        ]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "badnets",
            "backdoor",
            trigger=PatchSpec(Path("patch-3x3.npy"), *PATCH_AT, pattern=patch_pattern()[0]),
        ),
        Scenario(
            "blend",
            "backdoor",
            trigger=BlendSpec(Path("noise-28x28.npy"), BLEND_ALPHA, pattern=blend_pattern()[0]),
        ),
        Scenario("fgsm", "adversarial", attack=FgsmSpec(0.05)),
        Scenario("pgd", "adversarial", attack=PgdSpec(0.05, steps=5, alpha=0.02)),
        Scenario("wrong", "wrong"),
    )
}


@dataclass
class TestSplit:
    """Fashion-MNIST test split: a fixed evaluation part and the pool repair data comes from."""

    evaluation: Dataset
    pool: Dataset

    @classmethod
    def cut(cls, x: np.ndarray, y: np.ndarray, evaluation_size: int) -> TestSplit:
        """`x` in NCHW; the same images go to the same part whatever the seed."""
        order = np.random.default_rng(0).permutation(len(y))
        held, rest = order[:evaluation_size], order[evaluation_size:]
        return cls(
            Dataset(x[held], y[held], "fashion-mnist test (evaluation)"),
            Dataset(x[rest], y[rest], "fashion-mnist test (pool)"),
        )

    def in_layout(self, layout: str) -> TestSplit:
        if layout == "NCHW":
            return self
        if layout != "NHWC":
            raise ValueError(f"the benchmark's images need an NCHW or NHWC model, not {layout}")

        def nhwc(data: Dataset) -> Dataset:
            return Dataset(np.ascontiguousarray(data.x.transpose(0, 2, 3, 1)), data.y, data.source)

        return TestSplit(nhwc(self.evaluation), nhwc(self.pool))


def draw_budget(
    scenario: Scenario,
    pool: Dataset,
    predictions: np.ndarray,
    budget: int,
    seed: int,
    layout: str,
) -> tuple[Dataset, Dataset | None]:
    """`budget` clean samples and, for backdoor and wrong, `budget` bad ones (true labels).

    backdoor: the trigger stamped on other pool samples (not of the target class);
    wrong: pool samples the model misclassifies (all of them if fewer exist);
    adversarial: none here, they are generated against the model from the clean ones.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pool))
    clean_rows = order[:budget]
    rest = order[budget:]
    clean = pool.subset(clean_rows)
    if scenario.kind == "adversarial":
        return clean, None
    if scenario.kind == "wrong":
        wrong = rest[predictions[rest] != pool.y[rest]]
        return clean, pool.subset(wrong[:budget])
    victims = rest[pool.y[rest] != TARGET_LABEL][:budget]
    x, y = backdoor_bad_samples(
        pool.x[victims], pool.y[victims], scenario.trigger, layout, TARGET_LABEL
    )
    return clean, Dataset(x, y, str(scenario.trigger))


@dataclass
class Case:
    """Everything the methods of one (model, scenario, budget, seed) share."""

    model_name: str
    model: OnnxModel
    runner: Runner
    scenario: Scenario
    budget: int
    seed: int
    settings: RepairSettings
    train: Dataset
    train_bad: BadSamples
    validation: ValidationSplit
    evaluation: EvaluationSet
    bad_count: int
    _faults: FaultSet | None = field(default=None, repr=False)
    localize_seconds: float = 0.0

    @property
    def kind(self) -> str:
        return self.scenario.kind

    def fresh_view(self) -> TorchView:
        return TorchView(self.model.proto, outputs=[self.model.logits_name]).eval()

    @property
    def faults(self) -> FaultSet:
        """INNER's fault set, localized on first use (its wall time kept in localize_seconds)."""
        if self._faults is None:
            started = time.perf_counter()
            self._faults = localize(
                self.runner,
                self.fresh_view(),
                self.train,
                self.train_bad.data,
                self.settings.localize,
            ).faults
            self.localize_seconds = time.perf_counter() - started
        return self._faults


def make_case(
    model_name: str,
    model: OnnxModel,
    scenario: Scenario,
    split: TestSplit,
    budget: int,
    seed: int,
    settings: RepairSettings,
) -> Case:
    torch.manual_seed(seed)
    runner = Runner(model, "cpu")
    layout = model.input.layout
    split = split.in_layout(layout)
    pool_predictions = runner.predict(split.pool.x)
    clean, bad = draw_budget(scenario, split.pool, pool_predictions, budget, seed, layout)
    train_rows, held_rows = split_indices(clean.y, settings.validation_fraction, seed)
    train, held = clean.subset(train_rows), clean.subset(held_rows)
    target = scenario.target_label
    if scenario.kind == "adversarial":
        view = TorchView(model.proto, outputs=[model.logits_name]).eval().requires_grad_(False)
        x_adv = generate(scenario.attack, view, train.x, train.y, CLIP, seed=seed)
        train_bad = BadSamples(
            Dataset(x_adv, train.y.copy(), str(scenario.attack)), None, scenario.attack, CLIP
        )
        held_bad = BadSamples(held, None, scenario.attack, CLIP)
        bad_count = len(clean)
    else:
        assert bad is not None
        bad_train_rows, bad_held_rows = split_indices(bad.y, settings.validation_fraction, seed)
        train_bad = BadSamples(bad.subset(bad_train_rows), target)
        held_bad = BadSamples(bad.subset(bad_held_rows), target)
        bad_count = len(bad)
    evaluation = evaluation_set(scenario, split.evaluation, layout)
    return Case(
        model_name,
        model,
        runner,
        scenario,
        budget,
        seed,
        settings,
        train,
        train_bad,
        ValidationSplit(held, held_bad, scenario.kind),
        evaluation,
        bad_count,
    )


def evaluation_set(scenario: Scenario, data: Dataset, layout: str) -> EvaluationSet:
    if scenario.kind == "backdoor":
        x, y = backdoor_bad_samples(data.x, data.y, scenario.trigger, layout, TARGET_LABEL)
        bad = Dataset(x, y, f"{data.source} + {scenario.trigger}")
        return EvaluationSet(data, bad, TARGET_LABEL, name=data.source)
    if scenario.kind == "adversarial":
        return EvaluationSet(data, attack=scenario.attack, clip=CLIP, name=data.source)
    return EvaluationSet(data, name=data.source)
