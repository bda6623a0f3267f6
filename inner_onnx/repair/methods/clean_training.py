"""The training loop the clean-data defences share (ft_clean, NAD, i-BAU, FT-SAM, NC).

A clean-data defence sees clean samples only, so it cannot pick an epoch by attack success
rate the way `MaskedTrainer` does (that reads the validation split's bad samples): it runs
a fixed schedule, as its reference code does, and returns the weights of the last epoch.
The optimizer and schedule are BackdoorBench's (github.com/SCLBD/BackdoorBench,
`config/defense/<method>/config.yaml`): SGD with momentum and weight decay, cosine
annealing over the epochs. The references' data augmentation (random crop and flip of
CIFAR images) is left out: an ONNX model's input layout and value range are its own.

What trains is what the references' optimizers get, `model.parameters()`: every unit's
weight and bias and every BatchNormalization's scale and bias (torch's BatchNorm `weight`
and `bias`). The references train in torch's train mode, and so does this loop:
BatchNormalization normalizes by each batch's statistics and its running statistics follow
the clean data (buffers in torch, not trained; they are written back); the other
initializers stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from inner_onnx.context import as_torch
from inner_onnx.io.data import Dataset
from inner_onnx.io.model import OnnxModel
from inner_onnx.repair.methods.base import MethodPlan
from inner_onnx.repair.problem import RepairProblem, torch_parameter_masks
from inner_onnx.torchview import TorchView

# One optimizer step on a batch (x, y); returns the batch loss.
Step = Callable[[torch.optim.Optimizer, torch.Tensor, torch.Tensor], float]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Recipe:
    batch_size: int
    learning_rate: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    adam: bool = False


# BackdoorBench config/defense/ft/config.yaml: batch_size 256, lr 0.01, sgd_momentum 0.9,
# wd 5.0e-4, lr_scheduler CosineAnnealingLR (ft-sam and nc use the same lines).
BACKDOORBENCH_FT = Recipe(batch_size=256, learning_rate=0.01, momentum=0.9, weight_decay=5e-4)
# epochs: 100 in the configs of ft, fp, nad, ft-sam and nc (each method's reference_epochs)
BACKDOORBENCH_EPOCHS = 100


def torch_parameters(model: OnnxModel, view: TorchView) -> list[torch.nn.Parameter]:
    """What a torch module's `parameters()` would hold (`torch_parameter_masks`), made
    trainable; every other initializer frozen."""
    names = set(torch_parameter_masks(model))
    trainable = []
    for name, parameter in view.onnx_parameters():
        parameter.requires_grad_(name in names)
        if name in names:
            trainable.append(parameter)
    return trainable


def batches(
    data: Dataset, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One shuffled pass over the data."""
    x, y = as_torch(data.x), torch.from_numpy(data.y.astype(np.int64))
    order = torch.randperm(len(x), generator=generator)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield x[rows], y[rows]


def descent_step(loss: Loss) -> Step:
    """A plain optimizer step on `loss`."""

    def step(optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        value = loss(x, y)
        value.backward()
        optimizer.step()
        return float(value.detach())

    return step


def cross_entropy(view: TorchView) -> Loss:
    return lambda x, y: F.cross_entropy(view(x), y)


def make_optimizer(parameters: list[torch.nn.Parameter], recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.adam:
        return torch.optim.Adam(parameters, lr=recipe.learning_rate)
    return torch.optim.SGD(
        parameters,
        lr=recipe.learning_rate,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
    )


def train(
    view: TorchView,
    parameters: list[torch.nn.Parameter],
    data: Dataset,
    recipe: Recipe,
    epochs: int,
    seed: int,
    step: Step,
) -> list[float]:
    """`epochs` passes over `data` with `step` per batch and cosine annealing per epoch, the
    view's BatchNormalization on batch statistics meanwhile; returns each epoch's mean loss."""
    optimizer = make_optimizer(parameters, recipe)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    generator = torch.Generator().manual_seed(seed)
    history = []
    view.batch_statistics = True
    try:
        for _ in range(epochs):
            batched = batches(data, recipe.batch_size, generator)
            losses = [step(optimizer, x, y) for x, y in batched]
            schedule.step()
            history.append(float(np.mean(losses)))
    finally:
        view.batch_statistics = False
    return history


def fine_tuned_plan(
    problem: RepairProblem,
    data: Dataset,
    make_step: Callable[[TorchView, list[torch.nn.Parameter]], Step],
) -> MethodPlan:
    """A fresh view fine-tuned on `data` with BACKDOORBENCH_FT for the run's epoch budget
    (the method's reference_epochs unless `--epochs` is given), as a plan."""
    view = problem.fresh_view()
    parameters = torch_parameters(problem.model, view)
    epochs = problem.settings.training.epochs
    step = make_step(view, parameters)
    train(view, parameters, data, BACKDOORBENCH_FT, epochs, problem.context.seed, step)
    return trained_plan(problem.model, view)


def trained_plan(model: OnnxModel, view: TorchView) -> MethodPlan:
    """The plan of a method that trained `view` itself: the pipeline writes it back as is."""
    view.requires_grad_(False)
    return MethodPlan(torch_parameter_masks(model), view=view, fine_tune=False)
