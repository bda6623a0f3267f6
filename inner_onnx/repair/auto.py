"""`--method auto`: run candidate methods on the same problem and keep the best by the
validation split (issue 12).

Candidates run in order of how many values their plan lets change, fewest first. Each
one's verdict is a confidence: the share of stratified bootstrap resamples of the
validation split on which its kept weights meet the scenario's targets. The winner is the
candidate with the fewest changeable values among those whose confidence is within
`AutoSettings.confidence_margin` of the best one's, so a small repair wins whenever it is
about as sure to meet the targets as a large one, and a verdict that holds on half the
resamples does not beat one that holds on nearly all. A candidate whose confidence is at
least 1 - margin ends the search (no later one could beat it by more than the margin).
When no candidate meets the targets on any resample, the one with the best validation
objective is kept. Every candidate's validation figures are recorded for the JSON, the
report and the provenance.

The time budget is counted in runs of one plain fine-tuning, estimated by the first
candidate's training time (a masked run costs about what an unmasked one does: the
backward pass crosses the whole model either way), and covers the plans' localization
too. The first candidate and the last (the most changeable values, fine-tuning
everything by default) always run unless the search has ended; a candidate in between
starts only if it and the last one still fit in the budget, so a method that can change
everything is never the one the budget drops.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from inner_onnx.repair.methods import METHODS
from inner_onnx.repair.problem import RepairProblem
from inner_onnx.repair.trainer import TrainOutcome
from inner_onnx.torchview import TorchView

AUTO = "auto"


@dataclass
class CandidateRecord:
    method: str
    changeable_values: int
    targets_met: bool | None
    targets_confidence: float | None
    objective: float
    seconds: float
    validation: dict[str, object]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Selection:
    method: str
    view: TorchView
    outcome: TrainOutcome
    candidates: list[CandidateRecord]


def select(problem: RepairProblem) -> Selection:
    """Train the candidates that apply to the problem's scenario and keep the best."""
    from inner_onnx.repair.pipeline import run_plan

    settings = problem.settings.auto
    started = time.perf_counter()
    applicable = [
        name for name in settings.candidates if problem.scenario.name in METHODS[name].scenarios
    ]
    plans = {name: METHODS[name].plan(problem) for name in applicable}
    size = {
        name: int(sum(np.count_nonzero(m) for m in plans[name].masks.values())) for name in plans
    }
    order = sorted(applicable, key=lambda name: size[name])  # stable: ties keep CANDIDATES order
    records: list[CandidateRecord] = []
    trained: dict[str, tuple[TorchView, TrainOutcome]] = {}
    rule = problem.settings.stopping
    for position, name in enumerate(order):
        between = 0 < position < len(order) - 1
        if between and not _fits(settings.budget_factor, records[0].seconds, started):
            continue
        began = time.perf_counter()
        view, outcome = run_plan(problem, plans[name])
        assert outcome.kept is not None and outcome.start is not None
        kept = outcome.kept
        records.append(
            CandidateRecord(
                name,
                size[name],
                outcome.targets_met,
                outcome.confidence,
                problem.scenario.objective(kept, outcome.start, rule),
                round(time.perf_counter() - began, 2),
                {"accuracy": kept.accuracy, "bad": kept.bad, "fairness_gap": kept.gap},
            )
        )
        trained[name] = (view, outcome)
        if _sureness(records[-1]) >= 1.0 - settings.confidence_margin:
            break
    winner = winner_of(records, settings.confidence_margin)
    return Selection(winner.method, *trained[winner.method], records)


def winner_of(records: list[CandidateRecord], margin: float) -> CandidateRecord:
    """The fewest changeable values among the candidates within `margin` of the surest;
    the best objective when none meets the targets on any resample."""
    surest = max(_sureness(r) for r in records)
    if surest == 0.0:
        return max(records, key=lambda r: r.objective)
    close = [r for r in records if _sureness(r) >= surest - margin]
    return min(close, key=lambda r: r.changeable_values)


def _sureness(record: CandidateRecord) -> float:
    """The bootstrap confidence, or the plain verdict where there was nothing to resample."""
    if record.targets_confidence is not None:
        return record.targets_confidence
    return 1.0 if record.targets_met else 0.0


def _fits(budget_factor: float | None, run_seconds: float, started: float) -> bool:
    """Whether one more run and the last candidate's still fit in the budget."""
    if budget_factor is None:
        return True
    spent = time.perf_counter() - started
    return spent + 2 * run_seconds <= budget_factor * run_seconds
