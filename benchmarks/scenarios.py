"""Threats, data budgets and the shared state of one benchmark case.

Fashion-MNIST's test split (unseen by every model) is cut once into an
evaluation part and a pool; each seed draws the repair data of a budget from
the pool. A `Case` holds what every method of one (model, threat, budget, seed)
shares: the library's `RepairProblem` (training and validation splits, bad
samples, the fault set localized once and timed) and the evaluation set.
"""

from __future__ import annotations

from dataclasses import dataclass
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
from inner_onnx.context import RunContext
from inner_onnx.io.data import Dataset
from inner_onnx.io.model import OnnxModel
from inner_onnx.io.specs import AttackSpec, BlendSpec, FgsmSpec, PatchSpec, PgdSpec, TriggerSpec
from inner_onnx.measure.evaluation import EvaluationSet
from inner_onnx.repair.problem import RepairProblem
from inner_onnx.repair.settings import RepairSettings
from inner_onnx.runtime import Runner
from inner_onnx.scenarios import BadSource, scenario_named
from inner_onnx.scenarios.triggers import backdoor_bad_samples

CLIP = (0.0, 1.0)  # every model takes raw [0, 1] pixels


@dataclass(frozen=True)
class Threat:
    """A benchmark scenario: the library scenario it is (`kind`) and its trigger or attack."""

    name: str
    kind: str  # a library scenario: "backdoor", "adversarial" or "wrong"
    trigger: TriggerSpec | None = None
    attack: AttackSpec | None = None

    @property
    def target_label(self) -> int | None:
        return TARGET_LABEL if self.trigger is not None else None

    @property
    def bad_metric(self) -> str:
        """The Metrics field (or weak-class accuracy) that says whether the defect is gone."""
        return scenario_named(self.kind).bad_metric


SCENARIOS: dict[str, Threat] = {
    s.name: s
    for s in (
        Threat(
            "badnets",
            "backdoor",
            trigger=PatchSpec(Path("patch-3x3.npy"), *PATCH_AT, pattern=patch_pattern()[0]),
        ),
        Threat(
            "blend",
            "backdoor",
            trigger=BlendSpec(Path("noise-28x28.npy"), BLEND_ALPHA, pattern=blend_pattern()[0]),
        ),
        Threat("fgsm", "adversarial", attack=FgsmSpec(0.05)),
        Threat("pgd", "adversarial", attack=PgdSpec(0.05, steps=5, alpha=0.02)),
        Threat("wrong", "wrong"),
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
    scenario: Threat,
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
    if scenario.attack is not None:
        return clean, None
    if scenario.trigger is None:
        wrong = rest[predictions[rest] != pool.y[rest]]
        return clean, pool.subset(wrong[:budget])
    victims = rest[pool.y[rest] != TARGET_LABEL][:budget]
    x, y = backdoor_bad_samples(
        pool.x[victims], pool.y[victims], scenario.trigger, layout, TARGET_LABEL
    )
    return clean, Dataset(x, y, str(scenario.trigger))


@dataclass
class Case:
    """Everything the methods of one (model, threat, budget, seed) share."""

    model_name: str
    scenario: Threat
    budget: int
    problem: RepairProblem
    evaluation: EvaluationSet
    bad_count: int

    @property
    def model(self) -> OnnxModel:
        return self.problem.model

    @property
    def seed(self) -> int:
        return self.problem.context.seed

    @property
    def kind(self) -> str:
        return self.scenario.kind


def make_case(
    model_name: str,
    model: OnnxModel,
    scenario: Threat,
    split: TestSplit,
    budget: int,
    seed: int,
    settings: RepairSettings,
) -> Case:
    """The repair problem of one case, built as `inner-onnx repair` builds it."""
    torch.manual_seed(seed)
    layout = model.input.layout
    split = split.in_layout(layout)
    pool_predictions = Runner(model, "cpu").predict(split.pool.x)
    clean, bad = draw_budget(scenario, split.pool, pool_predictions, budget, seed, layout)
    source = BadSource(
        scenario.kind,
        attack=scenario.attack,
        target_label=scenario.target_label,
        clip=CLIP if scenario.attack is not None else None,
        bad_data=bad,
    )
    problem = RepairProblem.prepare(
        model, clean, source, settings, RunContext(seed=seed, device="cpu")
    )
    bad_count = len(clean) if bad is None else len(bad)
    return Case(
        model_name,
        scenario,
        budget,
        problem,
        evaluation_set(scenario, split.evaluation, layout),
        bad_count,
    )


def evaluation_set(scenario: Threat, data: Dataset, layout: str) -> EvaluationSet:
    if scenario.trigger is not None:
        x, y = backdoor_bad_samples(data.x, data.y, scenario.trigger, layout, TARGET_LABEL)
        bad = Dataset(x, y, f"{data.source} + {scenario.trigger}")
        return EvaluationSet(data, bad, TARGET_LABEL, name=data.source)
    if scenario.attack is not None:
        return EvaluationSet(data, attack=scenario.attack, clip=CLIP, name=data.source)
    return EvaluationSet(data, name=data.source)
