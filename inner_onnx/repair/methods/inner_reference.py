"""INNER with the loss of the paper's reference code (github.com/implicitDeclaration/inner,
`main.py`): the probe loss of DESIGN.md step 4 is the main term, next to the output
cross-entropy on bad and clean samples, without distillation toward the original model
or mixup. The fault set and probe terms are INNER's own."""

from __future__ import annotations

from inner_onnx.repair.methods.base import MethodPlan, RepairMethod, register
from inner_onnx.repair.problem import RepairProblem
from inner_onnx.repair.settings import LossWeights

REFERENCE_LOSS = LossWeights(
    probe=1.0, bad=1.0, clean_distillation=0.0, clean_mixup=0.0, bad_mixup=0.0
)


@register
class InnerReference(RepairMethod):
    name = "inner_ref"
    label = "INNER (reference loss)"
    summary = "INNER's fault set with the reference code's loss (probe loss as the main term)"
    uses_faults = True

    def plan(self, problem: RepairProblem) -> MethodPlan:
        return MethodPlan(
            problem.faults.masks(problem.model), problem.probe_terms(), loss=REFERENCE_LOSS
        )
