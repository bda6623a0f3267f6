"""Fine-Pruning (Liu, Dolan-Gavitt and Garg, "Fine-Pruning: Defending Against Backdooring
Attacks on Deep Neural Networks", RAID 2018): prune the last conv unit's least active
channels on clean data, then fine-tune every weight."""

from __future__ import annotations

import numpy as np

from inner_onnx.repair.methods.base import MethodPlan, RepairMethod, register
from inner_onnx.repair.methods.masks import PRUNING_MAX_SHARE, prune_in_order, pruned_masks
from inner_onnx.repair.problem import RepairProblem, all_unit_masks


@register
class FinePruning(RepairMethod):
    name = "fine_pruning"
    label = "Fine-Pruning"
    summary = "prune the last conv unit's dormant channels, then fine-tune everything"

    def plan(self, problem: RepairProblem) -> MethodPlan:
        """Prune until clean validation accuracy has dropped by 4 points (the paper's rule)."""
        model = problem.model
        convs = [u for u in model.units if u.op == "Conv"]
        unit = convs[-1] if convs else model.units[-2]
        activity = problem.runner.capture(problem.train.x, [unit]).pooled[unit.name].mean(axis=0)
        order = [(0, int(i)) for i in np.argsort(activity, kind="stable")]
        limit = int(PRUNING_MAX_SHARE * unit.neurons)
        held = problem.held
        pruned = prune_in_order(problem.fresh_view(), held.x, held.y, [unit], order, limit)
        neurons = [(unit.name, i) for _, i in order[:pruned]]
        zeroed = pruned_masks(model, neurons, with_bias=True)
        return MethodPlan(all_unit_masks(model), zeroed=zeroed)
