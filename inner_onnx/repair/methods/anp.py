"""Adversarial Neuron Pruning (Wu and Wang, "Adversarial Neuron Perturbations Prune
Backdoors", NeurIPS 2021), after its reference code github.com/csdongxian/ANP_backdoor
(`optimize_mask_cifar.py`, `prune_neuron_cifar.py`, `models/anp_batchnorm.py`).

Every neuron gets a mask m ∈ [0, 1] and a multiplicative noise (δ, δ_b) with |δ| ≤ eps at
its start: the reference scales each BatchNorm channel's scale by (m + δ) and its shift by
(1 + δ_b) (`NoisyBatchNorm2d.forward`). A model with BatchNormalization nodes gets exactly
that on their `scale` and `B` initializers; a model without any gets it on every unit but
the classifier, per neuron: weight slice·(m + δ), bias·(1 + δ_b). Per mini-batch of clean
samples: the noise restarts uniform in [-eps, eps], takes one step of eps·sign(∂CE/∂noise)
(ascent, not projected back: the reference never clamps it), then the masks take one SGD
step on α·CE(natural) + (1 − α)·CE(perturbed) and are clipped to [0, 1]. Finally every
neuron whose mask is at most the threshold is pruned: its BatchNorm scale (or unit weight
slice) is zeroed, its shift kept, as the reference's `pruning()` does. No fine-tuning.

The masks are optimized as the reference's `mask_train` runs, in train mode: every
BatchNormalization normalizes by the mini-batch's own statistics (on clean data a channel
that only the trigger drives is rescaled to unit variance, so its noise shows in the loss);
the running statistics are left as they are, as the reference prunes the checkpoint it
loaded, not the model it optimized the masks on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from inner_onnx.io.model import OnnxModel
from inner_onnx.repair.methods.base import MethodPlan, RepairMethod, register
from inner_onnx.repair.methods.masks import channel_shape
from inner_onnx.repair.problem import RepairProblem, batch_norm_affine
from inner_onnx.torchview import TorchView

# optimize_mask_cifar.py argument defaults (line numbers of the reference file):
ANP_EPS = 0.4  # --anp-eps 0.4 (l. 35); the noise bound, and its step (lr = eps / steps, l. 99)
ANP_STEPS = 1  # --anp-steps 1 (l. 36)
ANP_ALPHA = 0.2  # --anp-alpha 0.2 (l. 37): weight of the natural loss (l. 207)
ANP_MASK_LR = 0.2  # --lr 0.2 (l. 22), SGD with momentum 0.9 (l. 97)
ANP_MASK_MOMENTUM = 0.9
ANP_BATCH = 128  # --batch-size 128 (l. 21), drawn with replacement (RandomSampler, l. 81)
ANP_ITERATIONS = 2000  # --nb-iter 2000 (l. 23); README: "500 clean images and 2000 iterations"
# prune_neuron_cifar.py --pruning-by threshold (l. 31): prune masks <= threshold (l. 140);
# 0.2 is the paper's pruning threshold.
ANP_THRESHOLD = 0.2


@dataclass(frozen=True)
class NeuronGroup:
    """Initializers whose neurons ANP masks: `scale` scaled by (m + δ), `shift` by (1 + δ_b)."""

    scale: str
    shift: str | None
    # broadcasts a [neurons] vector along the scale's neuron axis
    shape: tuple[int, ...]

    @property
    def neurons(self) -> int:
        return int(np.prod(self.shape))


def neuron_groups(model: OnnxModel) -> list[NeuronGroup]:
    """The BatchNormalization nodes' scale and shift, or (no BatchNorm) every unit but the
    classifier."""
    groups = [
        NeuronGroup(scale, shift, tuple(model.initializers[scale].dims))
        for scale, shift in batch_norm_affine(model)
    ]
    if groups:
        return groups
    return [
        NeuronGroup(
            u.weight,
            u.bias,
            tuple(channel_shape(u, len(model.initializers[u.weight].dims))),
        )
        for u in model.units[:-1]
    ]


def scaled(
    view: TorchView,
    groups: list[NeuronGroup],
    scale: list[torch.Tensor],
    shift: list[torch.Tensor] | None,
) -> dict[str, torch.Tensor]:
    overrides = {}
    for index, group in enumerate(groups):
        overrides[group.scale] = view.parameter(group.scale) * scale[index].reshape(group.shape)
        if group.shift is not None and shift is not None:
            overrides[group.shift] = view.parameter(group.shift) * shift[index]
    return overrides


def optimize_masks(
    view: TorchView,
    groups: list[NeuronGroup],
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    iterations: int,
    seed: int,
) -> list[torch.Tensor]:
    """`mask_train` of optimize_mask_cifar.py, `iterations` mini-batches long."""
    view.requires_grad_(False)
    modes = view.batch_statistics, view.update_running_statistics
    view.batch_statistics, view.update_running_statistics = True, False
    masks = [torch.ones(g.neurons, requires_grad=True) for g in groups]
    noise = [torch.zeros(g.neurons, requires_grad=True) for g in groups]
    noise_shift = [torch.zeros(g.neurons, requires_grad=True) for g in groups]
    mask_optimizer = torch.optim.SGD(masks, lr=ANP_MASK_LR, momentum=ANP_MASK_MOMENTUM)
    generator = torch.Generator().manual_seed(seed)

    def perturbed_loss(x: torch.Tensor, y: torch.Tensor, shift: list[torch.Tensor]) -> torch.Tensor:
        scale = [m + n for m, n in zip(masks, noise)]
        return F.cross_entropy(view(x, overrides=scaled(view, groups, scale, shift)), y)

    def mask_step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.no_grad():  # reset(rand_init=True)
            for values in (*noise, *noise_shift):
                values.uniform_(-ANP_EPS, ANP_EPS, generator=generator)
        for _ in range(ANP_STEPS):
            shift = [1 + n for n in noise_shift]
            grads = torch.autograd.grad(perturbed_loss(x, y, shift), [*noise, *noise_shift])
            with torch.no_grad():  # sign_grad, then SGD with lr eps/steps on the negated loss
                for values, grad in zip((*noise, *noise_shift), grads):
                    values += ANP_EPS / ANP_STEPS * grad.sign()
        mask_optimizer.zero_grad()
        robust = perturbed_loss(x, y, [1 + n.detach() for n in noise_shift])
        natural = F.cross_entropy(view(x, overrides=scaled(view, groups, masks, None)), y)
        (ANP_ALPHA * natural + (1 - ANP_ALPHA) * robust).backward()
        mask_optimizer.step()
        with torch.no_grad():  # clip_mask
            for mask in masks:
                mask.clamp_(0.0, 1.0)

    try:
        for _ in range(iterations):
            rows = torch.randint(len(x_all), (ANP_BATCH,), generator=generator)
            mask_step(x_all[rows], y_all[rows])
    finally:
        view.batch_statistics, view.update_running_statistics = modes
    return [m.detach() for m in masks]


@register
class Anp(RepairMethod):
    name = "anp"
    label = "ANP"
    summary = "adversarial neuron pruning on clean data (no fine-tuning)"
    scenarios = ("backdoor",)
    clean_only: ClassVar[bool] = True

    def __init__(self, iterations: int = ANP_ITERATIONS):
        # the benchmark's quick runs lower it
        self.iterations = iterations

    def plan(self, problem: RepairProblem) -> MethodPlan:
        model = problem.model
        groups = neuron_groups(model)
        masks = optimize_masks(
            problem.fresh_view(),
            groups,
            torch.from_numpy(problem.train.x),
            torch.from_numpy(problem.train.y.astype(np.int64)),
            self.iterations,
            problem.context.seed,
        )
        zeroed = {}
        for group, mask in zip(groups, masks):
            pruned = (mask <= ANP_THRESHOLD).numpy().reshape(group.shape)
            if pruned.any():
                shape = tuple(model.initializers[group.scale].dims)
                zeroed[group.scale] = np.broadcast_to(pruned, shape).copy()
        return MethodPlan({}, zeroed=zeroed, fine_tune=False)
