"""`--method auto`: candidates by fewest changeable values, the smallest about as sure to
meet the validation targets as the surest kept, every candidate's figures recorded."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from inner_onnx.context import RunContext
from inner_onnx.repair.auto import CandidateRecord, winner_of
from inner_onnx.repair.pipeline import repair, settings_for
from inner_onnx.repair.settings import AutoSettings
from inner_onnx.repair.verify import PROVENANCE_KEY
from tests.support.backdoor import backdoor_problem_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_auto_keeps_the_smallest_candidate_about_as_sure_as_the_surest() -> None:
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
    records = [CandidateRecord(**c) for c in candidates]
    assert result.method == winner_of(records, settings.auto.confidence_margin).method
    assert result.summary()["auto_candidates"] == candidates
    # the written provenance holds every candidate's figures but no timing (same seed, same bytes)
    (stamp,) = [p.value for p in result.proto.metadata_props if p.key == PROVENANCE_KEY]
    recorded = json.loads(stamp)["auto_candidates"]
    assert recorded == [{k: v for k, v in c.items() if k != "seconds"} for c in candidates]


def record(
    method: str, size: int, confidence: float | None, objective: float = 0.0
) -> CandidateRecord:
    met = None if confidence is None else confidence > 0.5
    return CandidateRecord(method, size, met, confidence, objective, 1.0, {})


def test_a_smaller_candidate_wins_within_the_margin_and_loses_beyond_it() -> None:
    close = [record("small", 10, 0.46), record("large", 100, 0.50)]
    assert winner_of(close, margin=0.05).method == "small"
    apart = [record("small", 10, 0.50), record("large", 100, 0.97)]
    assert winner_of(apart, margin=0.05).method == "large"


def test_the_best_objective_wins_when_no_candidate_ever_meets_the_targets() -> None:
    records = [record("small", 10, 0.0, objective=-2.0), record("large", 100, 0.0, -1.0)]
    assert winner_of(records, margin=0.05).method == "large"


def test_a_plain_verdict_counts_where_there_was_nothing_to_resample() -> None:
    records = [record("small", 10, None), record("large", 100, 0.5)]
    records[0].targets_met = True
    assert winner_of(records, margin=0.05).method == "small"


def test_an_exhausted_budget_skips_the_middle_candidates_but_not_the_last() -> None:
    model, clean, source, evaluation = backdoor_problem_inputs()
    settings = settings_for("backdoor", method="auto", epochs=1, top_k=8)
    # without the target rows and the output-bias calibration, one epoch of INNER does not
    # meet the targets here, so fine-tuning everything follows
    training = replace(settings.training, target_fraction=0.0, calibrate_output_bias=False)
    auto = AutoSettings(("inner", "ft_last2", "ft"), budget_factor=0.0)
    settings = replace(settings, training=training, auto=auto)
    result = repair(model, clean, source, settings, RunContext(seed=0), evaluation=evaluation)
    assert result.candidates is not None
    ran = [c["method"] for c in result.candidates]
    assert ran == ["inner", "ft"]
