"""Gradient ratio: fine-tune the values whose loss gradient on bad samples is largest
relative to their gradient on clean samples."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from inner_onnx.context import as_torch
from inner_onnx.repair.methods.base import MethodPlan, RepairMethod, register
from inner_onnx.repair.methods.masks import top_masks
from inner_onnx.repair.problem import RepairProblem, all_unit_masks


def gradient_ratio(problem: RepairProblem) -> dict[str, np.ndarray]:
    """|d loss_bad / d w| / |d loss_clean / d w| for every unit weight and bias."""
    view = problem.fresh_view()
    names = list(all_unit_masks(problem.model))
    parameters = [view.parameter(name) for name in names]

    def gradients(x: np.ndarray, y: np.ndarray) -> list[torch.Tensor]:
        totals = [torch.zeros_like(p) for p in parameters]
        for start in range(0, len(x), 256):
            xb = as_torch(x[start : start + 256])
            yb = torch.from_numpy(y[start : start + 256].astype(np.int64))
            loss = F.cross_entropy(view(xb), yb, reduction="sum")
            for total, grad in zip(totals, torch.autograd.grad(loss, parameters)):
                total += grad
        return [(t / len(x)).abs() for t in totals]

    bad = gradients(problem.train_bad.data.x, problem.train_bad.data.y)
    clean = gradients(problem.train.x, problem.train.y)
    return {name: (b / (c + 1e-12)).numpy() for name, b, c in zip(names, bad, clean, strict=True)}


@register
class GradientRatio(RepairMethod):
    name = "grad_ratio"
    label = "gradient ratio"
    summary = "fine-tune the top values by gradient ratio, as many as INNER's fault set covers"

    def plan(self, problem: RepairProblem) -> MethodPlan:
        count = problem.faults.weights_covered(problem.model)
        allowed = all_unit_masks(problem.model)
        return MethodPlan(top_masks(gradient_ratio(problem), allowed, count))


@register
class GradientRatioInFaults(RepairMethod):
    name = "grad_ratio_faults"
    label = "gradient ratio in fault set"
    summary = "fine-tune the top half of INNER's fault set by gradient ratio"
    uses_faults = True

    def plan(self, problem: RepairProblem) -> MethodPlan:
        allowed = problem.faults.masks(problem.model)
        count = math.ceil(sum(int(m.sum()) for m in allowed.values()) / 2)
        return MethodPlan(top_masks(gradient_ratio(problem), allowed, count))
