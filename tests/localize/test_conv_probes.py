"""Conv-head probes (`--probe conv`): they read where a pattern sits on the unpooled map,
which channel means cannot show, and localization, routing and the repair's probe term
run through them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inner_onnx.context import RunContext
from inner_onnx.errors import InputError
from inner_onnx.localize.pipeline import LocalizeSettings, map_units
from inner_onnx.localize.probes import ConvProbe, LinearProbe, ProbeSet
from inner_onnx.repair.methods import METHODS
from inner_onnx.repair.pipeline import settings_for
from inner_onnx.repair.problem import RepairProblem
from inner_onnx.repair.trainer import MaskedTrainer
from tests.support.backdoor import backdoor_problem_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bar_maps(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[N, 2, 8, 8] noise maps with a 3-pixel bar at a random place: vertical for class 0,
    horizontal for class 1. Both bars add the same mass, so every channel mean is alike."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, count)
    x = rng.random((count, 2, 8, 8)).astype(np.float32) * 0.2
    for i in range(count):
        row, col = rng.integers(1, 5, 2)
        if y[i] == 0:
            x[i, :, row : row + 3, col] += 1.0
        else:
            x[i, :, row, col : col + 3] += 1.0
    return x, y


def test_conv_probe_sees_the_pattern_that_channel_means_hide() -> None:
    x, y = bar_maps(240, seed=0)
    x_test, y_test = bar_maps(200, seed=1)
    pooled, pooled_test = x.mean(axis=(2, 3)), x_test.mean(axis=(2, 3))
    linear = LinearProbe(2).fit(pooled, y).score(pooled_test, y_test)
    conv = ConvProbe(2, seed=0).fit(x, y).score(x_test, y_test)
    assert linear < 0.65
    assert conv > 0.9


def test_conv_probe_is_seeded() -> None:
    x, y = bar_maps(60, seed=2)
    first = ConvProbe(2, seed=3, epochs=3).fit(x, y).predict_proba(x)
    again = ConvProbe(2, seed=3, epochs=3).fit(x, y).predict_proba(x)
    other = ConvProbe(2, seed=4, epochs=3).fit(x, y).predict_proba(x)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_gradient_flows_through_the_frozen_head_only() -> None:
    x, y = bar_maps(40, seed=5)
    probe = ConvProbe(2, seed=0, epochs=2).fit(x, y)
    maps = torch.from_numpy(x[:4]).requires_grad_(True)
    torch.nn.functional.cross_entropy(probe.torch_logits(maps), torch.from_numpy(y[:4])).backward()
    assert maps.grad is not None and maps.grad.abs().sum() > 0
    assert probe.head is not None
    assert all(p.grad is None for p in probe.head.parameters())


def test_probe_set_gives_maps_a_conv_head_and_pooled_features_a_linear_probe() -> None:
    x, y = bar_maps(50, seed=6)
    probes = ProbeSet().fit({"conv": x, "dense": x.mean(axis=(2, 3))}, y, 2, seed=0)
    assert isinstance(probes.probes["conv"], ConvProbe)
    assert isinstance(probes.probes["dense"], LinearProbe)


def test_unknown_probe_kind_is_refused() -> None:
    with pytest.raises(InputError, match="--probe must be one of linear, conv"):
        LocalizeSettings(probe="tree")


@pytest.fixture(scope="module")
def problem() -> RepairProblem:
    model, clean, source, _ = backdoor_problem_inputs()
    settings = settings_for("backdoor", top_k=2, layers=3, probe="conv")
    return RepairProblem.prepare(model, clean, source, settings, RunContext(seed=0))


def test_localization_probes_conv_units_with_heads(problem: RepairProblem) -> None:
    model = problem.model
    convs = map_units(model, model.units, "conv")
    assert convs and map_units(model, model.units, "linear") == []
    found = problem.localization()
    for unit in model.units:
        probe = found.probes.probes[unit.name]
        assert isinstance(probe, ConvProbe if unit.name in convs else LinearProbe)
        features = found.clean_features[unit.name]
        assert features.ndim == (4 if unit.name in convs else 2)
    assert found.faults.settings["probe"] == "conv"
    assert found.faults.neurons


def test_probe_term_gradient_reaches_the_unit_through_the_conv_head(
    problem: RepairProblem,
) -> None:
    plan = METHODS["inner_conv"].plan(problem)
    conv_terms = [t for t in plan.probe_terms if isinstance(t.probe, ConvProbe)]
    assert conv_terms, "no conv unit among the selected ones"
    unit = problem.model.unit(conv_terms[0].unit_name)
    view = problem.fresh_view()
    # every value of the unit trainable, so that the gradient shows unmasked
    masks = {unit.weight: np.ones(tuple(view.parameter(unit.weight).shape), dtype=bool)}
    trainer = MaskedTrainer(problem.model, view, masks, conv_terms, problem.settings)
    bad = problem.train_bad.data
    x, y = torch.from_numpy(bad.x[:8]), torch.from_numpy(bad.y[:8].astype(np.int64))
    _, captured = trainer._forward(x)
    trainer._with_probe_terms(torch.zeros(()), captured, y).backward()
    gradient = view.parameter(unit.weight).grad
    assert gradient is not None and gradient.abs().sum() > 0
