"""Masks and per-neuron scalings that several methods share."""

from __future__ import annotations

import numpy as np
import torch

from inner_onnx.context import as_torch
from inner_onnx.io.model import OnnxModel
from inner_onnx.io.units import Unit
from inner_onnx.localize.faults import FaultNeuron, FaultSet
from inner_onnx.torchview import TorchView

Masks = dict[str, np.ndarray]


def neuron_masks(model: OnnxModel, neurons: list[tuple[str, int]]) -> Masks:
    """Masks covering the weight slices and biases of the given (unit, index) neurons."""
    chosen = FaultSet(model.sha256, "neuron", [], [FaultNeuron(u, i, 0) for u, i in neurons])
    return chosen.masks(model)


def all_neurons(units: list[Unit]) -> list[tuple[str, int]]:
    return [(unit.name, index) for unit in units for index in range(unit.neurons)]


def top_masks(scores: dict[str, np.ndarray], allowed: Masks, count: int) -> Masks:
    """Masks of the `count` highest scores among the allowed values."""
    names = list(allowed)
    flat = np.concatenate([np.where(allowed[n], scores[n], -np.inf).ravel() for n in names])
    keep = np.zeros(flat.shape, dtype=bool)
    keep[np.argsort(-flat, kind="stable")[:count]] = True
    keep &= np.isfinite(flat)
    masks, start = {}, 0
    for name in names:
        size = allowed[name].size
        masks[name] = keep[start : start + size].reshape(allowed[name].shape)
        start += size
    return masks


def channel_shape(unit: Unit, ndim: int) -> list[int]:
    """Shape that broadcasts a [neurons] vector along the unit weight's neuron axis."""
    shape = [1] * ndim
    shape[unit.neuron_axis] = unit.neurons
    return shape


def scaled_overrides(
    view: TorchView,
    units: list[Unit],
    weight_scale: list[torch.Tensor],
    bias_scale: list[torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Overrides multiplying each unit's weights (and biases) per neuron."""
    overrides = {}
    for index, unit in enumerate(units):
        weight = view.parameter(unit.weight)
        overrides[unit.weight] = weight * weight_scale[index].reshape(
            channel_shape(unit, weight.dim())
        )
        if unit.bias is not None and bias_scale is not None:
            bias = view.parameter(unit.bias)
            overrides[unit.bias] = bias * bias_scale[index].reshape(bias.shape)
    return overrides


def pruned_masks(model: OnnxModel, neurons: list[tuple[str, int]], with_bias: bool) -> Masks:
    masks = neuron_masks(model, neurons)
    if not with_bias:
        biases = {u.bias for u in model.units}
        masks = {name: mask for name, mask in masks.items() if name not in biases}
    return masks


# Fine-Pruning (Liu et al. 2018): prune until clean validation accuracy has lost this much.
PRUNING_ACCURACY_DROP = 0.04
PRUNING_MAX_SHARE = 0.9


def _accuracy(
    view: TorchView, x: np.ndarray, y: np.ndarray, overrides: dict[str, torch.Tensor] | None
) -> float:
    with torch.no_grad():
        return float((view(as_torch(x), overrides=overrides).argmax(1).numpy() == y).mean())


def prune_in_order(
    view: TorchView,
    held_x: np.ndarray,
    held_y: np.ndarray,
    units: list[Unit],
    order: list[tuple[int, int]],
    limit: int,
) -> int:
    """How many of `order` ((unit index, neuron) pairs, first pruned first) can be zeroed,
    at most `limit`, before clean validation accuracy drops by PRUNING_ACCURACY_DROP.

    Counts are tried in steps of about 2% of `limit` (every count for small units).
    """
    reference = _accuracy(view, held_x, held_y, None)
    pruned, step = 0, max(1, limit // 50)
    for count in range(step, limit + 1, step):
        keep = [torch.ones(u.neurons) for u in units]
        for unit_index, neuron in order[:count]:
            keep[unit_index][neuron] = 0.0
        overrides = scaled_overrides(view, units, keep, keep)
        if _accuracy(view, held_x, held_y, overrides) < reference - PRUNING_ACCURACY_DROP:
            break
        pruned = count
    return pruned
