"""INNER with one setting changed, each measured on its own (issue 12): `inner_noout` never
selects the classifier unit, as the paper's reference code (github.com/implicitDeclaration/inner)
does not; `inner_top` keeps only the most-voted neurons or weights of each unit (a tenth, at
most a tenth of the unit weights), this project's rule before the reference's union rule
became INNER's default; `inner_majority` keeps the neurons or weights on the routes of at least
half the routed bad samples."""

from __future__ import annotations

from dataclasses import replace

from inner_onnx.localize.pipeline import LocalizeSettings
from inner_onnx.repair.methods.base import MethodPlan, RepairMethod, register
from inner_onnx.repair.problem import RepairProblem


def plan_with(problem: RepairProblem, settings: LocalizeSettings) -> MethodPlan:
    """INNER's plan with the fault set and probe terms localized under `settings`."""
    faults = problem.localization(settings).faults
    return MethodPlan(faults.masks(problem.model), problem.probe_terms(settings))


def plan_with_rule(problem: RepairProblem, fault_rule: str) -> MethodPlan:
    """INNER's plan under another fault rule; a run's --top-k stays only for the top rule (the
    others count no number per unit)."""
    base = problem.settings.localize
    top_k = base.routing.top_k if fault_rule == "top" else None
    routing = replace(base.routing, fault_rule=fault_rule, top_k=top_k)
    return plan_with(problem, replace(base, routing=routing))


@register
class InnerTop(RepairMethod):
    name = "inner_top"
    label = "INNER (top fault rule)"
    summary = "INNER keeping only each unit's most-voted weights or neurons (--top-k)"
    uses_faults = True

    def plan(self, problem: RepairProblem) -> MethodPlan:
        return plan_with_rule(problem, "top")


@register
class InnerMajority(RepairMethod):
    name = "inner_majority"
    label = "INNER (majority fault rule)"
    summary = "INNER keeping the weights or neurons on at least half the bad samples' routes"
    uses_faults = True

    def plan(self, problem: RepairProblem) -> MethodPlan:
        return plan_with_rule(problem, "majority")


@register
class InnerNoOutput(RepairMethod):
    name = "inner_noout"
    label = "INNER (classifier not selectable)"
    summary = "INNER that never selects the classifier unit (as the reference)"
    uses_faults = True

    def plan(self, problem: RepairProblem) -> MethodPlan:
        base = problem.settings.localize
        return plan_with(problem, replace(base, select_output_unit=False))
