"""INNER with the reference code's optimizer: INNER's plan, trained by plain SGD at the
reference's constant rate without clipping; the default schedule is unchanged."""

from __future__ import annotations

import pytest

from inner_onnx.context import RunContext
from inner_onnx.errors import InputError
from inner_onnx.repair.methods import METHODS
from inner_onnx.repair.methods.inner_refopt import REFERENCE_LEARNING_RATE
from inner_onnx.repair.pipeline import settings_for
from inner_onnx.repair.problem import RepairProblem
from inner_onnx.repair.settings import TrainingSettings
from tests.support.backdoor import backdoor_problem_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_plan_is_inners_with_the_reference_optimizer() -> None:
    model, clean, source, _ = backdoor_problem_inputs()
    settings = settings_for("backdoor", method="inner_refopt", epochs=7, top_k=4)
    problem = RepairProblem.prepare(model, clean, source, settings, RunContext(seed=0))
    plan = METHODS["inner_refopt"].plan(problem)
    inner = METHODS["inner"].plan(problem)
    assert plan.masks.keys() == inner.masks.keys()
    assert all((plan.masks[k] == inner.masks[k]).all() for k in plan.masks)
    assert [t.unit_name for t in plan.probe_terms] == [t.unit_name for t in inner.probe_terms]
    assert plan.loss is None and inner.training is None
    training = plan.training
    assert training is not None
    assert (training.learning_rate, training.momentum) == (REFERENCE_LEARNING_RATE, 0.0)
    assert training.max_grad_norm is None
    assert [training.learning_rate_at(e) for e in (1, 7)] == [REFERENCE_LEARNING_RATE] * 2
    # what the user and the scenario set for the run stays
    assert (training.epochs, training.batch_size) == (7, settings.training.batch_size)


def test_default_schedule_decays_linearly_to_a_tenth() -> None:
    training = TrainingSettings(epochs=5, learning_rate=0.1)
    assert training.learning_rate_at(1) == 0.1
    assert training.learning_rate_at(5) == pytest.approx(0.01)
    with pytest.raises(InputError, match="schedule must be one of linear, constant"):
        TrainingSettings(schedule="cosine")
