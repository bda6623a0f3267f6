"""Fine-tuning on clean data only: BackdoorBench's "ft" defence (github.com/SCLBD/BackdoorBench,
`defense/ft.py`, `config/defense/ft/config.yaml`), the baseline Liu et al. (RAID 2018) set
next to Fine-Pruning: every unit fine-tuned on the defender's clean samples, nothing else."""

from __future__ import annotations

from typing import ClassVar

from inner_onnx.repair.methods.base import MethodPlan, RepairMethod, register
from inner_onnx.repair.methods.clean_training import (
    BACKDOORBENCH_EPOCHS,
    cross_entropy,
    descent_step,
    fine_tuned_plan,
)
from inner_onnx.repair.problem import RepairProblem


@register
class FineTuneClean(RepairMethod):
    name = "ft_clean"
    label = "fine-tune (clean data)"
    summary = "fine-tune every unit on clean data only (BackdoorBench's ft)"
    scenarios = ("backdoor",)
    clean_only: ClassVar[bool] = True
    reference_epochs: ClassVar[int | None] = BACKDOORBENCH_EPOCHS

    def plan(self, problem: RepairProblem) -> MethodPlan:
        return fine_tuned_plan(
            problem, problem.train, lambda view, _: descent_step(cross_entropy(view))
        )
