"""ANP as its reference code runs it: masks learnt under sign-gradient neuron noise on clean
data alone prune the one hidden neuron that carries a planted backdoor, and a model with
BatchNormalization has its BatchNorm channels masked instead of its units."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from inner_onnx.context import RunContext
from inner_onnx.io.model import OnnxModel
from inner_onnx.measure.evaluation import EvaluationSet
from inner_onnx.repair.methods import METHODS
from inner_onnx.repair.methods.anp import ANP_ITERATIONS, Anp, neuron_groups, optimize_masks
from inner_onnx.repair.pipeline import repair, settings_for
from inner_onnx.repair.problem import RepairProblem
from inner_onnx.scenarios import BadSource
from tests.support.planted import TRIGGER_NEURON, features, planted_mlp
from tests.support.torchview_models import export_torchscript, trained_looking_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def running_means(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    initializers = {init.name: init for init in proto.graph.initializer}
    return {
        node.input[3]: numpy_helper.to_array(initializers[node.input[3]])
        for node in proto.graph.node
        if node.op_type == "BatchNormalization"
    }


def test_masks_are_learnt_on_batch_statistics_as_the_references_train_mode() -> None:
    proto = export_torchscript(trained_looking_cnn(), torch.randn(2, 1, 16, 16))
    shifted = copy.deepcopy(proto)
    for init in shifted.graph.initializer:
        if init.name in running_means(proto):
            moved = numpy_helper.to_array(init) + np.float32(5.0)
            init.CopyFrom(numpy_helper.from_array(moved, init.name))
    x = torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(1))
    learnt = []
    for variant in (proto, shifted):
        model = OnnxModel(variant)
        view = model.torch_view()
        learnt.append(optimize_masks(view, neuron_groups(model), x, y, 3, seed=0))
        assert not view.batch_statistics and view.update_running_statistics  # modes restored
        kept = running_means(view.write_back())
        for name, values in running_means(variant).items():
            np.testing.assert_array_equal(kept[name], values)
    # running statistics 5 off change nothing: every mini-batch is normalized by its own
    for masks, masks_shifted in zip(*learnt):
        assert not torch.equal(masks, torch.ones_like(masks))
        torch.testing.assert_close(masks, masks_shifted)
