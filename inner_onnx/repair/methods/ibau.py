"""i-BAU (Zeng, Chen, Park, Kuo, Jia, "Adversarial Unlearning of Backdoors via Implicit
Hypergradient", ICLR 2022), after its reference code github.com/YiZeng623/I-BAU
(`defense.py`, `hypergrad.py`).

Each round: (inner) one pass over the clean data fits a universal perturbation δ that
maximizes the loss against the model's own predictions, -CE + 0.001·‖δ‖²; (outer) one pass
over the clean data where a share of each batch carries δ and keeps its true labels, and
the weights step along the implicit hypergradient of that loss: its direct gradient plus
the part through δ*(θ), from K fixed-point iterations of the inner map
Φ(δ, θ) = δ − 0.1·∂L_inner/∂δ (hypergrad.py `fixed_point`). As the reference does, the
inner map of the hypergradient reads the first batch, δ is not clamped to the input range
and not projected onto a norm ball (its l2-ball line is commented out), and batches are not
shuffled.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from inner_onnx.repair.methods.base import MethodPlan, RepairMethod, register
from inner_onnx.repair.methods.clean_training import torch_parameters, trained_plan
from inner_onnx.repair.problem import RepairProblem
from inner_onnx.torchview import TorchView

# defense.py argument defaults and constants (line numbers of the reference file):
IBAU_BATCH = 100  # --batch_size 100 (l. 123)
IBAU_LR = 0.001  # --optim Adam, --lr 0.001 (l. 125-126): the outer optimizer
IBAU_ROUNDS = 5  # --n_rounds 5 (l. 129)
IBAU_K = 5  # --K 5 (l. 130): fixed-point iterations of the hypergradient
IBAU_PERTURBATION_LR = 10.0  # batch_opt = SGD([batch_pert], lr=10) (l. 222)
IBAU_REGULARIZER = 0.001  # 0.001·‖δ‖² (l. 188, 230)
IBAU_INNER_STEP = 0.1  # hg.GradientDescent(loss_inner, 0.1) (l. 210)
IBAU_PORTION = 0.01  # share of each batch that carries δ in the outer loss (l. 193)


def universal_perturbation(view: TorchView, batches: list[tuple[torch.Tensor, torch.Tensor]]):
    """One pass of SGD on δ against the model's predictions (defense.py l. 221-237)."""
    delta = torch.zeros_like(batches[0][0][:1], requires_grad=True)
    optimizer = torch.optim.SGD([delta], lr=IBAU_PERTURBATION_LR)
    for x, _ in batches:
        with torch.no_grad():
            predicted = view(x).argmax(1)
        loss = -F.cross_entropy(view(x + delta), predicted) + IBAU_REGULARIZER * delta.norm() ** 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return delta.detach()


def hypergradient(
    view: TorchView,
    parameters: list[torch.nn.Parameter],
    delta: torch.Tensor,
    batch: tuple[torch.Tensor, torch.Tensor],
    first: tuple[torch.Tensor, torch.Tensor],
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """d outer_loss / d θ through δ*(θ) (hypergrad.py `fixed_point`, K iterations)."""
    x, y = batch
    delta = delta.detach().requires_grad_(True)
    carriers = torch.randperm(len(x), generator=generator)[: int(len(x) * IBAU_PORTION)]
    patching = torch.zeros_like(x)
    patching[carriers] = 1.0
    outer = F.cross_entropy(view(x + patching * delta), y)
    outer_delta = torch.autograd.grad(outer, delta, retain_graph=True)[0]
    outer_theta = torch.autograd.grad(outer, parameters, allow_unused=True)
    x0, y0 = first
    inner = -F.cross_entropy(view(x0 + delta), y0) + IBAU_REGULARIZER * delta.norm() ** 2
    mapped = delta - IBAU_INNER_STEP * torch.autograd.grad(inner, delta, create_graph=True)[0]
    v = torch.zeros_like(delta)
    for _ in range(IBAU_K):
        v = torch.autograd.grad(mapped, delta, grad_outputs=v, retain_graph=True)[0] + outer_delta
    implicit = torch.autograd.grad(mapped, parameters, grad_outputs=v, allow_unused=True)
    return [
        (i if i is not None else 0) + (o if o is not None else 0)
        for i, o in zip(implicit, outer_theta)
    ]


def unlearn(problem: RepairProblem, rounds: int = IBAU_ROUNDS) -> TorchView:
    view = problem.fresh_view()
    parameters = torch_parameters(problem.model, view)
    optimizer = torch.optim.Adam(parameters, lr=IBAU_LR)
    x, y = torch.from_numpy(problem.train.x), torch.from_numpy(problem.train.y.astype(np.int64))
    batches = [(x[i : i + IBAU_BATCH], y[i : i + IBAU_BATCH]) for i in range(0, len(x), IBAU_BATCH)]
    generator = torch.Generator().manual_seed(problem.context.seed)
    for _ in range(rounds):
        delta = universal_perturbation(view, batches)
        for batch in batches:
            grads = hypergradient(view, parameters, delta, batch, batches[0], generator)
            optimizer.zero_grad()
            for parameter, grad in zip(parameters, grads):
                parameter.grad = torch.as_tensor(grad).expand_as(parameter).clone()
            optimizer.step()
    return view


@register
class Ibau(RepairMethod):
    name = "ibau"
    label = "i-BAU"
    summary = "minimax unlearning of a universal perturbation by implicit hypergradient"
    scenarios = ("backdoor",)
    clean_only: ClassVar[bool] = True

    def plan(self, problem: RepairProblem) -> MethodPlan:
        return trained_plan(problem.model, unlearn(problem))
