"""Fine-Pruning as its paper runs it, on clean data alone: the planted backdoor neuron is the
dormant one pruned first, it stays pruned through the clean fine-tuning, and the repaired
model has lost the backdoor."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from inner_onnx.context import RunContext
from inner_onnx.measure.evaluation import EvaluationSet
from inner_onnx.repair.methods import METHODS
from inner_onnx.repair.pipeline import repair, settings_for
from inner_onnx.repair.problem import RepairProblem
from inner_onnx.scenarios import BadSource
from tests.support.planted import TRIGGER_NEURON, features, planted_mlp

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def prepared() -> RepairProblem:
    clean, bad = features(300, 0, False), features(300, 1, True)
    source = BadSource("backdoor", target_label=0, bad_data=bad)
    settings = settings_for("backdoor", method="fine_pruning", epochs=5)
    return RepairProblem.prepare(planted_mlp(), clean, source, settings, RunContext(seed=0))


def test_the_dormant_backdoor_neuron_is_pruned_and_stays_zero() -> None:
    problem = prepared()
    hidden = problem.model.units[0]
    plan = METHODS["fine_pruning"].plan(problem)
    assert plan.zeroed is not None and plan.view is not None and not plan.fine_tune
    pruned_rows = plan.zeroed[hidden.weight].all(axis=1)
    assert pruned_rows[TRIGGER_NEURON]
    trained = plan.view.parameter(hidden.weight).detach().numpy()
    assert (trained[pruned_rows] == 0).all()
    assert (trained[~pruned_rows] != 0).any()


def test_fine_tuning_reads_no_bad_sample() -> None:
    problem = prepared()
    poisoned = dataclasses.replace(
        problem.train_bad.data, x=np.full_like(problem.train_bad.data.x, np.nan)
    )
    problem.train_bad = dataclasses.replace(problem.train_bad, data=poisoned)
    plan = METHODS["fine_pruning"].plan(problem)
    assert plan.view is not None
    assert all(np.isfinite(p.detach().numpy()).all() for _, p in plan.view.onnx_parameters())


def test_fine_pruning_removes_the_planted_backdoor_end_to_end() -> None:
    clean, bad = features(300, 0, False), features(300, 1, True)
    evaluation = EvaluationSet(features(200, 2, False), features(200, 3, True), 0, name="eval")
    source = BadSource("backdoor", target_label=0, bad_data=bad)
    settings = settings_for("backdoor", method="fine_pruning")
    result = repair(
        planted_mlp(), clean, source, settings, RunContext(seed=0), evaluation=evaluation
    )
    assert result.before.asr > 0.9
    assert result.after.asr < 0.05
    assert result.after.accuracy >= result.before.accuracy - 0.04
