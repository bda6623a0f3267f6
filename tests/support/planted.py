"""A hand-built MLP with a planted backdoor neuron, and its clean and triggered inputs: the
toy on which the pruning defences (ANP, Fine-Pruning) must find the backdoor."""

from __future__ import annotations

import numpy as np
import torch

from inner_onnx.io.data import Dataset
from inner_onnx.io.model import OnnxModel
from tests.support.torch_models import export_torch

COPIES = 4  # hidden neurons per class: clean evidence is spread, as in a trained network
TRIGGER_NEURON = 3 * COPIES


def planted_mlp() -> OnnxModel:
    """4 inputs -> 13 hidden -> 3 classes. Hidden neurons 0-11 carry inputs 0-2 (the class is
    the largest of them), four neurons each; neuron 12 reads the trigger input 3 and votes
    hard for class 0. On clean inputs (input 3 = 0) neuron 12 sits just below zero: dormant,
    but one neuron perturbation away from firing, which is what ANP looks for."""
    hidden = TRIGGER_NEURON + 1
    net = torch.nn.Sequential(
        torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 3)
    )
    w1, b1, w2 = torch.zeros(hidden, 4), torch.zeros(hidden), torch.zeros(3, hidden)
    for neuron in range(3 * COPIES):
        w1[neuron, neuron // COPIES] = 1.0
        w2[neuron // COPIES, neuron] = 5.0 / COPIES
    w1[TRIGGER_NEURON] = torch.tensor([0.5, 0.5, 0.5, 10.0])
    b1[TRIGGER_NEURON] = -1.6
    w2[0, TRIGGER_NEURON] = 20.0
    with torch.no_grad():
        net[0].weight.copy_(w1)
        net[0].bias.copy_(b1)
        net[2].weight.copy_(w2)
        net[2].bias.zero_()
    return OnnxModel(export_torch(net, torch.zeros(2, 4)))


def features(count: int, seed: int, triggered: bool) -> Dataset:
    rng = np.random.default_rng(seed)
    x = np.zeros((count, 4), dtype=np.float32)
    x[:, :3] = rng.random((count, 3))
    y = x[:, :3].argmax(1)
    if triggered:
        x, y = x[y != 0], y[y != 0]
        x[:, 3] = 1.0
    return Dataset(x, y, "triggered" if triggered else "clean")
