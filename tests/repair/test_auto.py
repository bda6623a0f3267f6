"""`--method auto`: candidates by fewest changeable values, the first meeting the
validation targets kept, every candidate's figures recorded."""

from __future__ import annotations

from dataclasses import replace

import pytest

from inner_onnx.context import RunContext
from inner_onnx.repair.pipeline import repair, settings_for
from inner_onnx.repair.settings import AutoSettings
from tests.support.backdoor import backdoor_problem_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_auto_keeps_the_first_candidate_that_meets_the_targets() -> None:
    model, clean, source, evaluation = backdoor_problem_inputs()
    settings = settings_for("backdoor", method="auto", epochs=15, top_k=8)
    settings = replace(settings, auto=AutoSettings(("ft", "inner"), budget_factor=None))
    result = repair(model, clean, source, settings, RunContext(seed=0), evaluation=evaluation)
    candidates = result.candidates
    assert candidates is not None
    # INNER's fault set is smaller than every unit value: it runs first
    assert candidates[0]["method"] == "inner"
    sizes = [c["changeable_values"] for c in candidates]
    assert sizes == sorted(sizes)
    winner = next((c for c in candidates if c["targets_met"]), None)
    if winner is not None:
        assert result.method == winner["method"] and candidates[-1] is winner
        assert result.targets_met is True
    else:
        best = max(candidates, key=lambda c: c["objective"])
        assert result.method == best["method"]
    assert result.summary()["auto_candidates"] == candidates


def test_an_exhausted_budget_skips_the_middle_candidates_but_not_the_last() -> None:
    model, clean, source, evaluation = backdoor_problem_inputs()
    settings = settings_for("backdoor", method="auto", epochs=1, top_k=8)
    settings = replace(settings, auto=AutoSettings(("inner", "ft_last2", "ft"), budget_factor=0.0))
    result = repair(model, clean, source, settings, RunContext(seed=0), evaluation=evaluation)
    assert result.candidates is not None
    ran = [c["method"] for c in result.candidates]
    # one epoch of INNER does not meet the targets here, so fine-tuning everything follows
    assert ran == ["inner", "ft"]
