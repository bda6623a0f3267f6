"""Adversarial Neuron Pruning (Wu and Wang, "Adversarial Neuron Perturbations Prune
Backdoors", NeurIPS 2021): learn neuron masks that keep clean accuracy under adversarial
neuron perturbations, then zero the weights of the lowest-mask neurons; no fine-tuning."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from inner_onnx.repair.methods.base import MethodPlan, RepairMethod, register
from inner_onnx.repair.methods.masks import (
    PRUNING_MAX_SHARE,
    prune_in_order,
    pruned_masks,
    scaled_overrides,
)
from inner_onnx.repair.problem import RepairProblem

# The paper's defaults except the iteration count.
ANP_EPS = 0.4
ANP_TRADEOFF = 0.2
ANP_MASK_LR = 0.2
ANP_THRESHOLD = 0.2
ANP_BATCH = 128
ANP_ITERATIONS = 200


@register
class Anp(RepairMethod):
    name = "anp"
    label = "ANP"
    summary = "adversarial neuron pruning on clean data (no fine-tuning)"
    scenarios = ("backdoor",)

    def __init__(self, iterations: int = ANP_ITERATIONS):
        self.iterations = iterations

    def plan(self, problem: RepairProblem) -> MethodPlan:
        """Pruning follows ANP's "by fraction" variant: neurons in increasing mask order while
        clean validation accuracy stays within 4 points (with few mask iterations the paper's
        fixed threshold 0.2 would prune almost nothing); those under it always go first."""
        model = problem.model
        units = model.units[:-1]  # every unit but the classifier output
        view = problem.fresh_view().requires_grad_(False)
        masks = [torch.ones(u.neurons, requires_grad=True) for u in units]
        noise_w = [torch.zeros(u.neurons, requires_grad=True) for u in units]
        noise_b = [torch.zeros(u.neurons, requires_grad=True) for u in units]
        mask_optimizer = torch.optim.SGD(masks, lr=ANP_MASK_LR, momentum=0.9)
        noise_optimizer = torch.optim.SGD([*noise_w, *noise_b], lr=ANP_EPS)
        generator = torch.Generator().manual_seed(problem.context.seed)
        x_all = torch.from_numpy(problem.train.x)
        y_all = torch.from_numpy(problem.train.y.astype(np.int64))

        def loss_with(weight_scale, bias_scale, x, y) -> torch.Tensor:
            return F.cross_entropy(
                view(x, overrides=scaled_overrides(view, units, weight_scale, bias_scale)), y
            )

        ones = [torch.ones(u.neurons) for u in units]
        for _ in range(self.iterations):
            rows = torch.randint(len(x_all), (min(ANP_BATCH, len(x_all)),), generator=generator)
            x, y = x_all[rows], y_all[rows]
            with torch.no_grad():
                for noise in (*noise_w, *noise_b):
                    noise.uniform_(-ANP_EPS, ANP_EPS, generator=generator)
            # One ascent step on the perturbation (maximize the loss), then project.
            noise_optimizer.zero_grad()
            perturbed = [m + n for m, n in zip(masks, noise_w)]
            (-loss_with(perturbed, [1 + n for n in noise_b], x, y)).backward()
            noise_optimizer.step()
            with torch.no_grad():
                for noise in (*noise_w, *noise_b):
                    noise.clamp_(-ANP_EPS, ANP_EPS)
            mask_optimizer.zero_grad()
            natural = loss_with(masks, ones, x, y)
            perturbed = [m + n.detach() for m, n in zip(masks, noise_w)]
            robust = loss_with(perturbed, [1 + n.detach() for n in noise_b], x, y)
            (ANP_TRADEOFF * natural + (1 - ANP_TRADEOFF) * robust).backward()
            mask_optimizer.step()
            with torch.no_grad():
                for mask in masks:
                    mask.clamp_(0.0, 1.0)
        values = torch.cat([m.detach() for m in masks]).numpy()
        flat = [(k, i) for k, u in enumerate(units) for i in range(u.neurons)]
        order = [flat[i] for i in np.argsort(values, kind="stable")]
        below = int(np.sum(values < ANP_THRESHOLD))
        limit = max(below, int(PRUNING_MAX_SHARE * len(order) / 2))
        held = problem.held
        pruned = max(
            below, prune_in_order(problem.fresh_view(), held.x, held.y, units, order, limit)
        )
        neurons = [(units[k].name, i) for k, i in order[:pruned]]
        return MethodPlan({}, zeroed=pruned_masks(model, neurons, with_bias=False), fine_tune=False)
