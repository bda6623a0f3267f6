"""`--method auto`: run candidate methods on the same problem and keep the best by the
validation split (issue 12).

Candidates run in order of how many values their plan lets change, fewest first; the
first whose kept weights meet the scenario's validation targets wins (so the winner is
the candidate with the fewest changeable values that meets them). When none does, the
one with the best validation objective is kept. A time budget stops starting new
candidates once spent (the first always runs). Every candidate's validation figures are
recorded for the JSON, the report and the provenance.
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
    applicable = [
        name for name in settings.candidates if problem.scenario.name in METHODS[name].scenarios
    ]
    plans = {name: METHODS[name].plan(problem) for name in applicable}
    size = {
        name: int(sum(np.count_nonzero(m) for m in plans[name].masks.values())) for name in plans
    }
    order = sorted(applicable, key=lambda name: size[name])  # stable: ties keep CANDIDATES order
    records: list[CandidateRecord] = []
    best: tuple[float, str, TorchView, TrainOutcome] | None = None
    rule = problem.settings.stopping
    budget: float | None = None
    for name in order:
        if budget is not None and sum(r.seconds for r in records) > budget:
            break
        began = time.perf_counter()
        view, outcome = run_plan(problem, plans[name])
        assert outcome.kept is not None and outcome.start is not None
        score = problem.scenario.objective(outcome.kept, outcome.start, rule)
        kept = outcome.kept
        records.append(
            CandidateRecord(
                name,
                size[name],
                outcome.targets_met,
                outcome.confidence,
                score,
                round(time.perf_counter() - began, 2),
                {"accuracy": kept.accuracy, "bad": kept.bad, "fairness_gap": kept.gap},
            )
        )
        if settings.budget_factor is not None and budget is None:
            budget = settings.budget_factor * records[0].seconds
        if best is None or score > best[0] or outcome.targets_met:
            best = (score, name, view, outcome)
        if outcome.targets_met:
            break
    assert best is not None
    return Selection(best[1], best[2], best[3], records)
