"""Methods marked `clean_only` never read a bad sample: with the bad samples replaced by
NaN, each still plans finite weights (and the flag is set on exactly the defences the
clean-data track lists)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from inner_onnx.context import RunContext
from inner_onnx.repair.methods import METHODS
from inner_onnx.repair.pipeline import settings_for
from inner_onnx.repair.problem import RepairProblem
from tests.support.backdoor import backdoor_problem_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLEAN_ONLY = sorted(name for name, method in METHODS.items() if method.clean_only)


def test_the_clean_data_defences_are_flagged() -> None:
    assert CLEAN_ONLY == ["anp", "fine_pruning", "ft_clean", "ft_sam", "ibau", "nad", "nc_unlearn"]


@pytest.mark.parametrize("name", CLEAN_ONLY)
def test_clean_only_method_reads_no_bad_sample(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(METHODS["anp"], "iterations", 50)
    model, clean, source, _ = backdoor_problem_inputs()
    settings = settings_for("backdoor", method=name, epochs=2)
    problem = RepairProblem.prepare(model, clean, source, settings, RunContext(seed=0))
    poisoned = dataclasses.replace(
        problem.train_bad.data, x=np.full_like(problem.train_bad.data.x, np.nan)
    )
    problem.train_bad = dataclasses.replace(problem.train_bad, data=poisoned)
    plan = METHODS[name].plan(problem)
    if plan.view is not None:
        assert all(np.isfinite(p.detach().numpy()).all() for _, p in plan.view.onnx_parameters())


@pytest.mark.parametrize("name", CLEAN_ONLY)
def test_epoch_budget_is_the_references_unless_given(name: str) -> None:
    default = settings_for("backdoor").training.epochs
    reference = METHODS[name].reference_epochs
    assert settings_for("backdoor", method=name).training.epochs == (reference or default)
    assert settings_for("backdoor", method=name, epochs=3).training.epochs == 3
    if name not in ("anp", "ibau"):  # mask iterations and unlearning rounds, not epochs
        assert reference == 100  # BackdoorBench's configs of ft, fp, nad, ft-sam and nc
