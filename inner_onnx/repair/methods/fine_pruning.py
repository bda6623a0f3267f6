"""Fine-Pruning (Liu, Dolan-Gavitt and Garg, "Fine-Pruning: Defending Against Backdooring
Attacks on Deep Neural Networks", RAID 2018): prune the last conv unit's least active
channels on clean data, then fine-tune on clean data.

The paper's defender has clean data only, and so has this method: it prunes in the order of
mean activation over the clean training split until clean validation accuracy has lost
PRUNING_ACCURACY_DROP (the paper's 4 %), then fine-tunes every unit on the clean training
split with the recipe of BackdoorBench's ft (`BACKDOORBENCH_FT`, the baseline the paper sets
next to Fine-Pruning), keeping the pruned channels at zero.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from inner_onnx.repair.methods.base import MethodPlan, RepairMethod, register
from inner_onnx.repair.methods.clean_training import (
    BACKDOORBENCH_EPOCHS,
    BACKDOORBENCH_FT,
    Step,
    cross_entropy,
    descent_step,
    torch_parameters,
    train,
)
from inner_onnx.repair.methods.masks import (
    PRUNING_MAX_SHARE,
    Masks,
    prune_in_order,
    pruned_masks,
)
from inner_onnx.repair.problem import RepairProblem, torch_parameter_masks
from inner_onnx.torchview import TorchView


def dormant_channels(problem: RepairProblem) -> list[tuple[str, int]]:
    """The last conv unit's (or, without one, the last hidden unit's) channels to prune,
    least active on the clean training split first."""
    model = problem.model
    convs = [u for u in model.units if u.op == "Conv"]
    unit = convs[-1] if convs else model.units[-2]
    activity = problem.runner.capture(problem.train.x, [unit]).pooled[unit.name].mean(axis=0)
    order = [(0, int(i)) for i in np.argsort(activity, kind="stable")]
    limit = int(PRUNING_MAX_SHARE * unit.neurons)
    held = problem.held
    pruned = prune_in_order(problem.fresh_view(), held.x, held.y, [unit], order, limit)
    return [(unit.name, i) for _, i in order[:pruned]]


def keeping_zeroed(view: TorchView, zeroed: Masks, step: Step) -> Step:
    """`step`, then the pruned values set back to zero (momentum and weight decay would
    otherwise revive them)."""
    pruned = {name: torch.from_numpy(mask) for name, mask in zeroed.items()}

    def pruned_step(optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
        loss = step(optimizer, x, y)
        with torch.no_grad():
            for name, mask in pruned.items():
                parameter = view.parameter(name)
                parameter[mask.to(parameter.device)] = 0.0
        return loss

    return pruned_step


@register
class FinePruning(RepairMethod):
    name = "fine_pruning"
    label = "Fine-Pruning"
    summary = "prune the last conv unit's dormant channels, then fine-tune on clean data"
    scenarios = ("backdoor",)
    clean_only: ClassVar[bool] = True
    reference_epochs: ClassVar[int | None] = BACKDOORBENCH_EPOCHS

    def plan(self, problem: RepairProblem) -> MethodPlan:
        model = problem.model
        zeroed = pruned_masks(model, dormant_channels(problem), with_bias=True)
        view = problem.fresh_view()
        parameters = torch_parameters(model, view)
        step = keeping_zeroed(view, zeroed, descent_step(cross_entropy(view)))
        with torch.no_grad():
            for name, mask in zeroed.items():
                parameter = view.parameter(name)
                parameter[torch.from_numpy(mask).to(parameter.device)] = 0.0
        epochs = problem.settings.training.epochs
        train(view, parameters, problem.train, BACKDOORBENCH_FT, epochs, problem.context.seed, step)
        view.requires_grad_(False)
        return MethodPlan(torch_parameter_masks(model), zeroed=zeroed, view=view, fine_tune=False)
