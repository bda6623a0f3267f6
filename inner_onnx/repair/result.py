"""What a repair hands back: the verified proto and every figure about it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import onnx

from inner_onnx.localize.faults import FaultSet
from inner_onnx.measure.metrics import Metrics
from inner_onnx.repair.trainer import TrainOutcome


@dataclass
class RepairResult:
    proto: onnx.ModelProto
    scenario: str
    method: str
    before: Metrics
    after: Metrics
    evaluation_name: str
    faults: FaultSet | None
    changed: dict[str, int]
    weights_total: int
    outcome: TrainOutcome
    seconds: float
    settings: dict = field(default_factory=dict)
    # --method auto: every candidate's validation figures (None: one method ran)
    candidates: list[dict] | None = None

    @property
    def changed_count(self) -> int:
        return sum(self.changed.values())

    @property
    def targets_met(self) -> bool | None:
        """Whether the kept weights met the scenario's targets on the validation split."""
        return self.outcome.targets_met

    def summary(self) -> dict[str, object]:
        faults = None
        if self.faults is not None:
            faults = {
                "granularity": self.faults.granularity,
                "selected_units": self.faults.selected_units,
                "neurons": len(self.faults.neurons),
                "top_neurons": [asdict(n) for n in self.faults.neurons[:10]],
            }
        return {
            "scenario": self.scenario,
            "method": self.method,
            "evaluated_on": self.evaluation_name,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "targets_met": self.targets_met,
            "targets_missed": self.outcome.missed,
            "targets_confidence": self.outcome.confidence,
            "auto_candidates": self.candidates,
            "bad_source": self.settings.get("bad_source"),
            "faults": faults,
            "changed_weights": {
                "count": self.changed_count,
                "fraction": self.changed_count / self.weights_total if self.weights_total else 0,
                "tensors": self.changed,
            },
            "epochs_run": len(self.outcome.history) - 1,
            "kept_epoch": self.outcome.kept_epoch,
            "averaged_epochs": self.outcome.averaged_epochs,
            "history": [asdict(r) for r in self.outcome.history],
            "average": asdict(self.outcome.average) if self.outcome.average else None,
        }
