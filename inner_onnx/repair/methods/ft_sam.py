"""FT-SAM (Zhu, Wei, Zha, Wu, "Enhancing Fine-Tuning Based Backdoor Defense with
Sharpness-Aware Minimization", ICCV 2023), after its reference code in BackdoorBench
(github.com/SCLBD/BackdoorBench `defense/ft-sam.py`, `utils/defense_utils/sam/sam.py`,
`config/defense/ft-sam/config.yaml`): fine-tuning on clean data where each step first moves
the weights to the worst case within radius ρ (adaptive SAM: the ball is scaled by |w|,
ASAM), takes the gradient there, steps back and applies it. Backdoor neurons have large
weights, so the adaptive ball shakes them hardest.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from inner_onnx.repair.methods.base import MethodPlan, RepairMethod, register
from inner_onnx.repair.methods.clean_training import (
    BACKDOORBENCH_EPOCHS,
    Loss,
    Step,
    fine_tuned_plan,
)
from inner_onnx.repair.problem import RepairProblem
from inner_onnx.torchview import TorchView

# config/defense/ft-sam/config.yaml: rho_max 2.0, rho_min 2.0 (a constant ρ), label_smoothing
# 0.1, alpha 0.0 (no gradient decomposition); ft-sam.py `--adaptive` is store_false, so
# adaptive (ASAM) is the default. The optimizer lines are ft's (BACKDOORBENCH_FT).
FT_SAM_RHO = 2.0
FT_SAM_ADAPTIVE = True
FT_SAM_LABEL_SMOOTHING = 0.1
# sam.py SAM(perturb_eps=1e-12)
FT_SAM_EPS = 1e-12


def smooth_cross_entropy(view: TorchView, smoothing: float = FT_SAM_LABEL_SMOOTHING) -> Loss:
    """sam/util.py smooth_crossentropy: 1 - s on the true class, s / (C - 1) on the others."""

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        log_prob = F.log_softmax(view(x), dim=1)
        target = torch.full_like(log_prob, smoothing / (log_prob.shape[1] - 1))
        target.scatter_(1, y.unsqueeze(1), 1.0 - smoothing)
        return -(target * log_prob).sum(1).mean()

    return loss


def sam_step(
    view: TorchView,
    loss: Loss,
    parameters: list[torch.nn.Parameter],
    rho: float = FT_SAM_RHO,
    adaptive: bool = FT_SAM_ADAPTIVE,
) -> Step:
    """sam.py SAM.step: gradient, climb e = ρ·T²g/‖Tg‖ (T = |w| if adaptive, else 1),
    gradient at w + e with the running BatchNorm statistics left as they are
    (`disable_running_stats`), step back, base optimizer step with that gradient."""

    def step(optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        value = loss(x, y)
        value.backward()
        with torch.no_grad():
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
            scales = [p.abs() if adaptive else torch.ones_like(p) for p in parameters]
            norm = torch.stack([(s * g).norm() for s, g in zip(scales, grads)]).norm()
            climbs = [rho / (norm + FT_SAM_EPS) * g * s.pow(2) for s, g in zip(scales, grads)]
            for parameter, climb in zip(parameters, climbs):
                parameter.add_(climb)
        optimizer.zero_grad(set_to_none=True)
        view.update_running_statistics = False
        try:
            loss(x, y).backward()
        finally:
            view.update_running_statistics = True
        with torch.no_grad():
            for parameter, climb in zip(parameters, climbs):
                parameter.sub_(climb)
        optimizer.step()
        return float(value.detach())

    return step


@register
class FtSam(RepairMethod):
    name = "ft_sam"
    label = "FT-SAM"
    summary = "fine-tuning with adaptive sharpness-aware minimization (clean data only)"
    scenarios = ("backdoor",)
    clean_only: ClassVar[bool] = True
    reference_epochs: ClassVar[int | None] = BACKDOORBENCH_EPOCHS

    def plan(self, problem: RepairProblem) -> MethodPlan:
        return fine_tuned_plan(
            problem, problem.train, lambda view, ps: sam_step(view, smooth_cross_entropy(view), ps)
        )
