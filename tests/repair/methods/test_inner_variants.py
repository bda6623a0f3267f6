"""The reference-code variants of INNER: the union fault rule keeps every voted weight, and
the classifier unit can be kept out of layer selection."""

from __future__ import annotations

import numpy as np
import pytest

from inner_onnx.context import RunContext
from inner_onnx.repair.methods import METHODS
from inner_onnx.repair.pipeline import settings_for
from inner_onnx.repair.problem import RepairProblem
from tests.support.backdoor import backdoor_problem_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def problem() -> RepairProblem:
    model, clean, source, _ = backdoor_problem_inputs()
    settings = settings_for("backdoor", top_k=2, layers=3)
    return RepairProblem.prepare(model, clean, source, settings, RunContext(seed=0))


def _count(masks: dict[str, np.ndarray]) -> int:
    return sum(int(mask.sum()) for mask in masks.values())


def test_union_rule_keeps_every_voted_weight(problem: RepairProblem) -> None:
    top = METHODS["inner"].plan(problem)
    union = METHODS["inner_union"].plan(problem)
    assert _count(union.masks) > _count(top.masks)
    found = problem.localization()
    assert found.faults.settings["routing"]["fault_rule"] == "top"


def test_classifier_is_not_selected_without_output(problem: RepairProblem) -> None:
    classifier = problem.model.units[-1]
    plan = METHODS["inner_noout"].plan(problem)
    assert classifier.name not in [term.unit_name for term in plan.probe_terms]
    weight = plan.masks.get(classifier.weight)
    assert weight is None or not weight.any()
