"""The INNER variants: the union fault rule (INNER's default) keeps every voted weight, the
top rule only each unit's most-voted ones, and the classifier unit can be kept out of layer
selection."""

from __future__ import annotations

import numpy as np
import pytest

from inner_onnx.context import RunContext
from inner_onnx.errors import InputError
from inner_onnx.localize.routing import RoutingSettings
from inner_onnx.repair.methods import METHODS
from inner_onnx.repair.pipeline import settings_for
from inner_onnx.repair.problem import RepairProblem
from tests.support.backdoor import backdoor_problem_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def problem() -> RepairProblem:
    model, clean, source, _ = backdoor_problem_inputs()
    settings = settings_for("backdoor", layers=3)
    return RepairProblem.prepare(model, clean, source, settings, RunContext(seed=0))


def _count(masks: dict[str, np.ndarray]) -> int:
    return sum(int(mask.sum()) for mask in masks.values())


def test_union_rule_keeps_every_voted_weight(problem: RepairProblem) -> None:
    union = METHODS["inner"].plan(problem)
    top = METHODS["inner_top"].plan(problem)
    assert _count(union.masks) > _count(top.masks)
    found = problem.localization()
    assert found.faults.settings["routing"]["fault_rule"] == "union"


def test_majority_rule_keeps_weights_on_half_the_routes() -> None:
    votes = np.array([0, 1, 4, 5, 9, 10])
    kept = RoutingSettings(fault_rule="majority").kept(votes, samples=10)
    assert kept.tolist() == [5, 4, 3]
    union = RoutingSettings().kept(votes, samples=10)
    assert union.tolist() == [5, 4, 3, 2, 1]
    # nobody on half the routes: the most-voted one stays, as under the union rule
    assert RoutingSettings(fault_rule="majority").kept(votes, samples=30).tolist() == [5]


def test_majority_plan_lies_within_the_union(problem: RepairProblem) -> None:
    union = METHODS["inner"].plan(problem).masks
    majority = METHODS["inner_majority"].plan(problem).masks
    assert 0 < _count(majority) <= _count(union)
    for name, mask in majority.items():
        assert not (mask & ~union[name]).any()


def test_top_k_alone_means_the_top_rule() -> None:
    routing = settings_for("backdoor", top_k=3).localize.routing
    assert (routing.fault_rule, routing.top_k) == ("top", 3)
    with pytest.raises(InputError, match="--fault-rule top"):
        RoutingSettings(top_k=3, fault_rule="union")


def test_classifier_is_not_selected_without_output(problem: RepairProblem) -> None:
    classifier = problem.model.units[-1]
    plan = METHODS["inner_noout"].plan(problem)
    assert classifier.name not in [term.unit_name for term in plan.probe_terms]
    weight = plan.masks.get(classifier.weight)
    assert weight is None or not weight.any()
