"""INNER with one deviation from this project's defaults undone toward the paper's reference
code (github.com/implicitDeclaration/inner), each measured on its own (issue 12):
`inner_union` keeps every neuron or weight with at least one routing vote (the reference's
rule; its top-k cut is commented out), `inner_noout` never selects the classifier unit."""

from __future__ import annotations

from dataclasses import replace

from inner_onnx.localize.pipeline import LocalizeSettings
from inner_onnx.repair.methods.base import MethodPlan, RepairMethod, register
from inner_onnx.repair.problem import RepairProblem


def plan_with(problem: RepairProblem, settings: LocalizeSettings) -> MethodPlan:
    """INNER's plan with the fault set and probe terms localized under `settings`."""
    faults = problem.localization(settings).faults
    return MethodPlan(faults.masks(problem.model), problem.probe_terms(settings))


@register
class InnerUnion(RepairMethod):
    name = "inner_union"
    label = "INNER (union fault rule)"
    summary = "INNER keeping every weight or neuron with a routing vote (reference rule)"
    uses_faults = True

    def plan(self, problem: RepairProblem) -> MethodPlan:
        base = problem.settings.localize
        union = replace(base.routing, fault_rule="union")
        return plan_with(problem, replace(base, routing=union, max_weight_fraction=None))


@register
class InnerNoOutput(RepairMethod):
    name = "inner_noout"
    label = "INNER (classifier not selectable)"
    summary = "INNER that never selects the classifier unit (as the reference)"
    uses_faults = True

    def plan(self, problem: RepairProblem) -> MethodPlan:
        base = problem.settings.localize
        return plan_with(problem, replace(base, select_output_unit=False))
