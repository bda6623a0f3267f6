"""Plain fine-tuning baselines: every unit value, the last units, INNER's fault set, or as
many random neurons as the fault set holds."""

from __future__ import annotations

import numpy as np

from inner_onnx.repair.methods.base import MethodPlan, RepairMethod, register
from inner_onnx.repair.methods.masks import all_neurons, neuron_masks, top_masks
from inner_onnx.repair.problem import RepairProblem, all_unit_masks


@register
class FineTuneAll(RepairMethod):
    name = "ft"
    label = "fine-tune all"
    summary = "fine-tune every unit weight and bias"

    def plan(self, problem: RepairProblem) -> MethodPlan:
        return MethodPlan(all_unit_masks(problem.model))


@register
class FineTuneLastUnits(RepairMethod):
    name = "ft_last2"
    label = "fine-tune last 2 units"
    summary = "fine-tune the last two units"

    def plan(self, problem: RepairProblem) -> MethodPlan:
        return MethodPlan(neuron_masks(problem.model, all_neurons(problem.model.units[-2:])))


@register
class FineTuneFaults(RepairMethod):
    name = "ft_faults"
    label = "fine-tune fault set"
    summary = "fine-tune INNER's fault set without its probe loss"
    uses_faults = True

    def plan(self, problem: RepairProblem) -> MethodPlan:
        return MethodPlan(problem.faults.masks(problem.model))


@register
class RandomNeurons(RepairMethod):
    name = "random"
    label = "random neurons or weights"
    summary = "fine-tune as many random neurons (or weights) as INNER's fault set covers"

    def plan(self, problem: RepairProblem) -> MethodPlan:
        """Drawn uniformly from every unit; for a weight-level fault set, as many values
        as it covers."""
        model, faults = problem.model, problem.faults
        rng = np.random.default_rng(problem.context.seed)
        if faults.granularity == "weight":
            allowed = all_unit_masks(model)
            scores = {name: rng.random(mask.shape) for name, mask in allowed.items()}
            return MethodPlan(top_masks(scores, allowed, faults.weights_covered(model)))
        candidates = all_neurons(model.units)
        rows = rng.choice(len(candidates), size=len(faults.neurons), replace=False)
        return MethodPlan(neuron_masks(model, [candidates[i] for i in rows]))
