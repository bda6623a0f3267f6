"""Where the bad samples of each scenario come from (DESIGN.md, the scenario table).

backdoor:    `--bad BAD.npz` (triggered inputs with true labels) or `--trigger SPEC`
             stamped on the clean data, with `--target-label`
adversarial: `--attack SPEC`, generated against the model in its input space
wrong:       the samples of the clean data that the model misclassifies
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from inner_onnx.errors import InputError
from inner_onnx.io.data import Dataset, load_npz
from inner_onnx.io.model import OnnxModel
from inner_onnx.io.specs import AttackSpec, TriggerSpec
from inner_onnx.measure.attacks import generate, input_range
from inner_onnx.progress import QUIET, Reporter
from inner_onnx.scenarios.triggers import backdoor_bad_samples

SCENARIOS = ("backdoor", "adversarial", "wrong")

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BadSource:
    """The user's choice of bad samples, checked for consistency before any work."""

    scenario: str
    bad_path: Path | None = None
    trigger: TriggerSpec | None = None
    attack: AttackSpec | None = None
    target_label: int | None = None
    clip: tuple[float, float] | None = None

    @classmethod
    def from_options(
        cls,
        scenario: str | None,
        bad_path: Path | None = None,
        trigger: TriggerSpec | None = None,
        attack: AttackSpec | None = None,
        target_label: int | None = None,
        clip: tuple[float, float] | None = None,
    ) -> BadSource:
        given = [
            name
            for name, value in (("--bad", bad_path), ("--trigger", trigger), ("--attack", attack))
            if value
        ]
        if len(given) > 1:
            raise InputError(f"give one source of bad samples, not {' and '.join(given)}")
        if scenario is None:
            if not given:
                raise InputError("give --bad, --trigger, --attack or --scenario wrong")
            scenario = "adversarial" if attack else "backdoor"
        if scenario not in SCENARIOS:
            raise InputError(f"unknown scenario {scenario!r}; choose {', '.join(SCENARIOS)}")
        expected = {"backdoor": ("--bad", "--trigger"), "adversarial": ("--attack",), "wrong": ()}
        allowed = expected[scenario]
        if given and given[0] not in allowed:
            raise InputError(
                f"{given[0]} does not fit --scenario {scenario}"
                + (f"; use {' or '.join(allowed)}" if allowed else " (it uses misclassified data)")
            )
        if allowed and not given:
            raise InputError(f"--scenario {scenario} needs {' or '.join(allowed)}")
        if trigger is not None and target_label is None:
            raise InputError("--trigger needs --target-label (the attacker's class)")
        return cls(scenario, bad_path, trigger, attack, target_label, clip)

    def check(self, model: OnnxModel) -> None:
        if self.target_label is not None and not 0 <= self.target_label < model.num_classes:
            raise InputError(
                f"--target-label {self.target_label} out of range: the model has "
                f"{model.num_classes} classes"
            )


@dataclass
class BadSamples:
    data: Dataset
    target_label: int | None
    # adversarial: how to make more against changed weights (repair regenerates them)
    attack: AttackSpec | None = None
    clip: tuple[float, float] | None = None

    def regenerate(self, forward: Forward, x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
        assert self.attack is not None and self.clip is not None
        return generate(self.attack, forward, x, y, self.clip, seed=seed)


def infer_target_label(predictions: np.ndarray, y: np.ndarray) -> int | None:
    """The class that bad samples of other classes are pushed to most often, if any."""
    flipped = predictions[predictions != y]
    if not len(flipped):
        return None
    return int(np.bincount(flipped).argmax())


def make_bad_samples(
    source: BadSource,
    model: OnnxModel,
    clean: Dataset,
    predict: Callable[[np.ndarray], np.ndarray],
    forward: Forward,
    seed: int = 0,
    reporter: Reporter = QUIET,
) -> BadSamples:
    """Bad samples with their true labels for `source`; `predict` runs the model (onnxruntime)."""
    source.check(model)
    layout = model.input.layout
    if source.bad_path is not None:
        data = load_npz(source.bad_path, model)
        target = source.target_label
        if source.scenario == "backdoor" and target is None:
            target = infer_target_label(predict(data.x), data.y)
        return BadSamples(data, target)
    if source.trigger is not None:
        x, y = backdoor_bad_samples(
            clean.x,
            clean.y,
            source.trigger,
            layout,
            source.target_label,  # type: ignore[arg-type]
        )
        return BadSamples(Dataset(x, y, f"{clean.source} + {source.trigger}"), source.target_label)
    if source.attack is not None:
        clip = input_range(clean.x, source.clip)
        with reporter.step(f"attack {source.attack}", len(clean)) as advance:
            x = generate(
                source.attack, forward, clean.x, clean.y, clip, seed=seed, progress=advance
            )
        return BadSamples(Dataset(x, clean.y.copy(), str(source.attack)), None, source.attack, clip)
    wrong = predict(clean.x) != clean.y
    if not wrong.any():
        raise InputError(f"{clean.source}: the model classifies every sample right: nothing to fix")
    return BadSamples(clean.subset(np.flatnonzero(wrong)), None)
