"""A repair as a user asks for it: files in, one verified model file (and a report) out.

Everything is checked before any work — option combinations, the output path and
the report folder — so that a refusal costs nothing and never touches a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from inner_onnx.context import RunContext
from inner_onnx.errors import InputError
from inner_onnx.io.data import load_npz
from inner_onnx.io.fileio import check_output_path, write_bytes_atomic
from inner_onnx.io.model import OnnxModel
from inner_onnx.localize.faults import load_faults
from inner_onnx.measure.evaluation import EvaluationSet
from inner_onnx.progress import QUIET, Reporter
from inner_onnx.repair import pipeline
from inner_onnx.repair.settings import RepairSettings
from inner_onnx.scenarios import BadSource

REPORT_FILES = ("report.html", "report.json")


@dataclass(frozen=True)
class RepairJob:
    model: OnnxModel
    model_path: Path
    data: Path
    output: Path
    source: BadSource
    settings: RepairSettings
    context: RunContext = field(default_factory=RunContext)
    faults_path: Path | None = None
    eval_data: Path | None = None
    eval_bad: Path | None = None
    report_dir: Path | None = None
    force: bool = False

    def inputs(self) -> list[Path]:
        given = [self.model_path, self.data, self.source.bad_path, self.faults_path]
        given += [self.eval_data, self.eval_bad]
        if self.source.trigger is not None:
            given += self.source.trigger.files
        return [Path(p) for p in given if p]

    def check(self) -> None:
        """Refuse what cannot work, before any work."""
        self.source.check(self.model)
        pipeline.check_method(
            self.settings.method, self.source.scenario, self.faults_path is not None
        )
        check_output_path(self.output, self.inputs(), self.force)
        if self.report_dir is not None:
            folder = Path(self.report_dir)
            if folder.exists() and not folder.is_dir():
                raise InputError(f"report path is a file, not a folder: {folder}")
            if not folder.parent.resolve().is_dir():
                raise InputError(f"report folder's parent does not exist: {folder}")
            for name in REPORT_FILES:
                if (folder / name).exists():
                    check_output_path(folder / name, self.inputs(), self.force)
        if self.eval_bad is not None and self.eval_data is None:
            raise InputError("--eval-bad needs --eval")

    def evaluation(self) -> EvaluationSet | None:
        if self.eval_data is None:
            return None
        bad = load_npz(self.eval_bad, self.model) if self.eval_bad else None
        return EvaluationSet(
            load_npz(self.eval_data, self.model),
            bad,
            self.source.target_label,
            self.source.attack,
            self.source.clip,
            str(self.eval_data),
        )

    def run(self, reporter: Reporter = QUIET) -> dict[str, object]:
        """Repair, write atomically, write the report; returns the summary."""
        self.check()
        faults = load_faults(self.faults_path, self.model) if self.faults_path else None
        evaluation = self.evaluation()
        # No reference kept here: the repair frees the full array once it is split.
        result = pipeline.repair(
            self.model,
            load_npz(self.data, self.model),
            self.source,
            self.settings,
            self.context,
            faults,
            evaluation,
            reporter,
        )
        # A repair that changes no weight hands back the input: nothing is written (exit 3).
        written = result.changed_count > 0
        if written:
            write_bytes_atomic(self.output, result.proto.SerializeToString())
        summary = {
            "output": str(self.output) if written else None,
            **result.summary(),
            "seconds": round(result.seconds, 2),
        }
        if self.report_dir is not None:
            from inner_onnx.present.report import write_report

            summary["report"] = str(
                write_report(Path(self.report_dir), self.model, result, summary)
            )
        return summary
