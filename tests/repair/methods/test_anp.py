"""ANP as its reference code runs it: masks learnt under sign-gradient neuron noise on clean
data alone prune the one hidden neuron that carries a planted backdoor, and a model with
BatchNormalization has its BatchNorm channels masked instead of its units."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inner_onnx.context import RunContext
from inner_onnx.io.data import Dataset
from inner_onnx.io.model import OnnxModel
from inner_onnx.measure.evaluation import EvaluationSet
from inner_onnx.repair.methods import METHODS
from inner_onnx.repair.methods.anp import ANP_ITERATIONS, Anp, neuron_groups
from inner_onnx.repair.pipeline import repair, settings_for
from inner_onnx.repair.problem import RepairProblem
from inner_onnx.scenarios import BadSource
from tests.support.torch_models import export_torch
from tests.support.torchview_models import export_torchscript, trained_looking_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")

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


def test_anp_prunes_the_neuron_that_carries_the_backdoor() -> None:
    model = planted_mlp()
    hidden = model.units[0]
    clean, bad = features(300, 0, False), features(300, 1, True)
    source = BadSource("backdoor", target_label=0, bad_data=bad)
    settings = settings_for("backdoor", method="anp")
    context = RunContext(seed=0)
    method = Anp(iterations=300)
    problem = RepairProblem.prepare(model, clean, source, settings, context)
    plan = method.plan(problem)
    assert plan.masks == {} and not plan.fine_tune
    assert plan.zeroed is not None
    pruned_rows = plan.zeroed[hidden.weight].all(axis=1)
    assert pruned_rows[TRIGGER_NEURON]
    assert pruned_rows.sum() == 1, "a neuron the clean task needs was pruned"
    assert hidden.bias not in plan.zeroed  # the reference zeroes the scale only


def test_anp_removes_the_planted_backdoor_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    model = planted_mlp()
    clean, bad = features(300, 0, False), features(300, 1, True)
    evaluation = EvaluationSet(features(200, 2, False), features(200, 3, True), 0, name="eval")
    monkeypatch.setattr(METHODS["anp"], "iterations", 300)
    source = BadSource("backdoor", target_label=0, bad_data=bad)
    settings = settings_for("backdoor", method="anp")
    result = repair(model, clean, source, settings, RunContext(seed=0), evaluation=evaluation)
    assert result.before.asr > 0.9
    assert result.after.asr < 0.05
    assert result.after.accuracy >= result.before.accuracy - 0.02


def test_default_iterations_are_the_references() -> None:
    assert ANP_ITERATIONS == 2000 and Anp().iterations == 2000


def test_batchnorm_channels_are_masked_where_the_model_has_them() -> None:
    model = OnnxModel(export_torchscript(trained_looking_cnn(), torch.randn(2, 1, 16, 16)))
    batchnorms = [n for n in model.proto.graph.node if n.op_type == "BatchNormalization"]
    assert batchnorms
    groups = neuron_groups(model)
    assert [(g.scale, g.shift) for g in groups] == [(n.input[1], n.input[2]) for n in batchnorms]
    unit_weights = {u.weight for u in model.units}
    assert not unit_weights & {g.scale for g in groups}
