"""Neural Attention Distillation (Li, Lyu, Koren, Lyu, Li and Ma, "Neural Attention
Distillation: Erasing Backdoor Triggers from Deep Neural Networks", ICLR 2021), after its
reference code github.com/bboylyg/NAD (`main.py`, `at.py`, `config.py`) and BackdoorBench's
configuration of it (github.com/SCLBD/BackdoorBench `config/defense/nad/config.yaml`).

A teacher is the backdoored model fine-tuned on the clean data; the student (the backdoored
model again) then trains on the clean data with cross-entropy plus, at a few conv units,
β·MSE between its attention maps and the teacher's. An attention map is Σ_c |a_c|^p over
the channels of a unit's activation, divided by its L2 norm over the spatial positions
(`at.py` `attention_map`). The reference distils at the outputs of its WRN's three
groups; here at the activations of the last three conv units (fewer if the model has
fewer), the deepest with β3.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from inner_onnx.errors import InputError
from inner_onnx.io.model import OnnxModel
from inner_onnx.repair.methods.base import MethodPlan, RepairMethod, register
from inner_onnx.repair.methods.clean_training import (
    BACKDOORBENCH_EPOCHS,
    BACKDOORBENCH_FT,
    Recipe,
    cross_entropy,
    descent_step,
    torch_parameters,
    train,
    trained_plan,
)
from inner_onnx.repair.problem import RepairProblem
from inner_onnx.torchview import TorchView

# BackdoorBench config/defense/nad/config.yaml: te_epochs 10 (the teacher's fine-tuning;
# the NAD README: "5~10 epochs"), batch_size 256, lr 0.01 with cosine annealing,
# momentum 0.9, weight_decay 1.0e-4.
NAD_TEACHER_EPOCHS = 10
NAD_RECIPE = Recipe(batch_size=256, learning_rate=0.01, momentum=0.9, weight_decay=1e-4)
# NAD config.py: --beta1 500 (low layer), --beta2 1000 (middle), --beta3 1000 (high), --p 2.0.
NAD_BETAS = (500.0, 1000.0, 1000.0)
NAD_P = 2.0
# at.py attention_map: the norm's epsilon
NAD_EPS = 1e-6


def attention_map(activation: torch.Tensor, p: float = NAD_P) -> torch.Tensor:
    """Σ_c |a_c|^p per position, divided by its L2 norm over the positions: [N, positions]."""
    summed = activation.abs().pow(p).sum(dim=1).flatten(1)
    return summed / (summed.norm(dim=1, keepdim=True) + NAD_EPS)


def attention_names(model: OnnxModel) -> list[str]:
    """Activations of the last (up to) three conv units, shallowest first."""
    convs = [u.activation for u in model.units if u.op == "Conv"]
    if not convs:
        raise InputError("NAD distils conv attention maps: the model has no Conv unit")
    return convs[-len(NAD_BETAS) :]


def attention_loss(
    student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], names: list[str]
) -> torch.Tensor:
    """Σ β·MSE(map_student, map_teacher); the deepest unit takes the last β."""
    betas = NAD_BETAS[-len(names) :]
    return sum(
        (
            beta * F.mse_loss(attention_map(student[n]), attention_map(teacher[n]))
            for beta, n in zip(betas, names)
        ),
        torch.tensor(0.0),
    )


def distil(problem: RepairProblem, epochs: int) -> tuple[TorchView, list[float]]:
    """The student after NAD, and its mean attention loss per epoch."""
    model, seed = problem.model, problem.context.seed
    teacher = problem.fresh_view()
    step = descent_step(cross_entropy(teacher))
    teacher_epochs = min(NAD_TEACHER_EPOCHS, epochs)
    teacher_parameters = torch_parameters(model, teacher)
    train(teacher, teacher_parameters, problem.train, BACKDOORBENCH_FT, teacher_epochs, seed, step)
    teacher.requires_grad_(False)
    names = attention_names(model)
    student = problem.fresh_view()
    attention: list[float] = []

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits, maps = student(x, capture=names)
        with torch.no_grad():
            _, teacher_maps = teacher(x, capture=names)
        distilled = attention_loss(maps, teacher_maps, names)
        attention.append(float(distilled.detach()))
        return F.cross_entropy(logits, y) + distilled

    parameters = torch_parameters(model, student)
    history = train(
        student, parameters, problem.train, NAD_RECIPE, epochs, seed, descent_step(loss)
    )
    per_epoch = len(attention) // len(history)
    means = [
        sum(attention[i * per_epoch : (i + 1) * per_epoch]) / per_epoch for i in range(len(history))
    ]
    return student, means


@register
class Nad(RepairMethod):
    name = "nad"
    label = "NAD"
    summary = "neural attention distillation from a clean-fine-tuned teacher (clean data only)"
    scenarios = ("backdoor",)
    clean_only: ClassVar[bool] = True
    reference_epochs: ClassVar[int | None] = BACKDOORBENCH_EPOCHS

    def plan(self, problem: RepairProblem) -> MethodPlan:
        """The student trains for the run's epoch budget (`--epochs`), the teacher for at most
        NAD_TEACHER_EPOCHS of it."""
        student, _ = distil(problem, problem.settings.training.epochs)
        return trained_plan(problem.model, student)
