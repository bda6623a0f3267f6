"""INNER with conv-head probes: the conv units of the plan's probe terms carry a conv head,
the rest a linear probe, and the problem's own (linear) localization is left alone."""

from __future__ import annotations

import pytest

from inner_onnx.context import RunContext
from inner_onnx.localize.probes import ConvProbe, LinearProbe
from inner_onnx.repair.methods import METHODS
from inner_onnx.repair.pipeline import settings_for
from inner_onnx.repair.problem import RepairProblem
from tests.support.backdoor import backdoor_problem_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_plan_reads_conv_units_with_conv_heads() -> None:
    model, clean, source, _ = backdoor_problem_inputs()
    settings = settings_for("backdoor", method="inner_conv", top_k=4, layers=4)
    problem = RepairProblem.prepare(model, clean, source, settings, RunContext(seed=0))
    plan = METHODS["inner_conv"].plan(problem)
    kinds = {t.unit_name: type(t.probe) for t in plan.probe_terms}
    ops = {u.name: u.op for u in model.units}
    assert kinds == {n: ConvProbe if ops[n] == "Conv" else LinearProbe for n in kinds}
    assert ConvProbe in kinds.values()
    assert problem.settings.localize.probe == "linear"
    assert plan.masks and any(mask.any() for mask in plan.masks.values())
