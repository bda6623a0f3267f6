"""A method whose weights end NaN or infinite hands back the original weights and says so,
instead of failing in the written model's check."""

from __future__ import annotations

import pytest
import torch

from inner_onnx.context import RunContext
from inner_onnx.repair.methods import METHODS
from inner_onnx.repair.methods.base import MethodPlan
from inner_onnx.repair.methods.clean_training import trained_plan
from inner_onnx.repair.pipeline import DIVERGED, repair, settings_for
from inner_onnx.repair.problem import RepairProblem
from tests.support.backdoor import backdoor_problem_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def diverging_plan(problem: RepairProblem) -> MethodPlan:
    view = problem.fresh_view()
    _, first = next(iter(view.onnx_parameters()))
    with torch.no_grad():
        first.view(-1)[0] = float("nan")
    return trained_plan(problem.model, view)


def test_nan_weights_keep_the_original_and_miss_the_targets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(METHODS["ft_clean"], "plan", diverging_plan)
    model, clean, source, evaluation = backdoor_problem_inputs()
    settings = settings_for("backdoor", method="ft_clean")
    result = repair(model, clean, source, settings, RunContext(seed=0), evaluation=evaluation)
    assert result.changed_count == 0
    assert result.targets_met is False and result.outcome.missed == [DIVERGED]
    assert result.after.accuracy == result.before.accuracy
