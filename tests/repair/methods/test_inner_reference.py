"""The reference-style INNER loss: INNER's fault set and probe terms, the probe loss as the
main term, no distillation or mixup; it removes the planted backdoor of the test model."""

from __future__ import annotations

import pytest

from inner_onnx.context import RunContext
from inner_onnx.repair.methods import METHODS
from inner_onnx.repair.methods.inner_reference import REFERENCE_LOSS
from inner_onnx.repair.pipeline import repair, settings_for
from inner_onnx.repair.problem import RepairProblem
from tests.support.backdoor import backdoor_problem_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_plan_is_inners_fault_set_with_the_reference_loss() -> None:
    model, clean, source, _ = backdoor_problem_inputs()
    settings = settings_for("backdoor", method="inner_ref", top_k=8)
    problem = RepairProblem.prepare(model, clean, source, settings, RunContext(seed=0))
    plan = METHODS["inner_ref"].plan(problem)
    inner = METHODS["inner"].plan(problem)
    assert plan.loss == REFERENCE_LOSS and plan.loss.probe >= plan.loss.bad
    assert plan.loss.clean_distillation == plan.loss.clean_mixup == plan.loss.bad_mixup == 0
    assert plan.masks.keys() == inner.masks.keys()
    assert all((plan.masks[k] == inner.masks[k]).all() for k in plan.masks)
    assert [t.unit_name for t in plan.probe_terms] == problem.faults.selected_units


def test_reference_loss_removes_the_backdoor() -> None:
    model, clean, source, evaluation = backdoor_problem_inputs()
    settings = settings_for("backdoor", method="inner_ref", epochs=15, top_k=8)
    result = repair(model, clean, source, settings, RunContext(seed=0), evaluation=evaluation)
    print(f"\nbefore {result.before.to_dict()}\nafter {result.after.to_dict()}")
    assert result.before.asr > 0.9
    assert result.after.asr <= 0.02
    assert result.after.accuracy >= result.before.accuracy - 0.01
