"""What a repair method is: the plan it hands the trainer.

A method looks at the prepared `RepairProblem` and returns a `MethodPlan`:
which initializer values may change (masks), the probe terms it adds to the
loss, values it zeroes first (a pruning step), its own loss weights and
optimizer settings if it has them, and whether to fine-tune at all. The
pipeline runs every plan the same way, so methods differ only in what they
decide.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from inner_onnx.repair.settings import LossWeights, TrainingSettings
from inner_onnx.repair.trainer import ProbeTerm

if TYPE_CHECKING:
    from inner_onnx.repair.problem import RepairProblem
    from inner_onnx.torchview import TorchView

Masks = dict[str, np.ndarray]


@dataclass
class MethodPlan:
    # initializer name -> which of its values may change
    masks: Masks
    probe_terms: list[ProbeTerm] = field(default_factory=list)
    # values set to 0 before training; they stay 0 (pruning)
    zeroed: Masks | None = None
    # the method's own loss weights (None: the scenario's)
    loss: LossWeights | None = None
    # the method's own optimizer and schedule (None: the problem's)
    training: TrainingSettings | None = None
    fine_tune: bool = True
    # A view the method has already trained with its own loop (NAD, i-BAU, ...): the pipeline
    # writes it back instead of a fresh view. Its `masks` then say which values the method
    # may have changed, and `fine_tune=False` keeps the MaskedTrainer off it.
    view: TorchView | None = None


class RepairMethod(ABC):
    """A repair method; subclasses register with `@register`."""

    name: ClassVar[str]
    # short name for tables and plots
    label: ClassVar[str]
    # one line for --help
    summary: ClassVar[str]
    # the scenarios it applies to
    scenarios: ClassVar[tuple[str, ...]] = ("backdoor", "adversarial", "wrong")
    # needs INNER's localization (the benchmark adds its time; `--faults` may replace it)
    uses_faults: ClassVar[bool] = False
    # uses no bad samples (clean data only): the benchmark's clean-data track lists these
    clean_only: ClassVar[bool] = False
    # the epoch budget of the method's reference code, used when `--epochs` is not given
    # (None: the scenario's)
    reference_epochs: ClassVar[int | None] = None

    @abstractmethod
    def plan(self, problem: RepairProblem) -> MethodPlan:
        """What the trainer changes and how, for this problem."""


REGISTRY: dict[str, RepairMethod] = {}


def register(cls: type[RepairMethod]) -> type[RepairMethod]:
    """Class decorator: make the method known by its name (one file per method)."""
    REGISTRY[cls.name] = cls()
    return cls
