"""INNER (Sun et al., ISSTA 2024): fine-tune only the fault neurons that probes and neuron
routing found (DESIGN.md steps 1-4), with the probe terms of the selected units."""

from __future__ import annotations

from inner_onnx.repair.methods.base import MethodPlan, RepairMethod, register
from inner_onnx.repair.problem import RepairProblem


@register
class Inner(RepairMethod):
    name = "inner"
    label = "INNER"
    summary = "fine-tune the fault neurons, with the probe loss (INNER)"
    uses_faults = True

    def plan(self, problem: RepairProblem) -> MethodPlan:
        return MethodPlan(problem.faults.masks(problem.model), problem.probe_terms())
