"""The clean-data-only track of the backdoor benchmark (issue 13): every defence that sees
clean data alone, and inner-onnx's own clean-data path, on backdoored models.

    .venv/bin/python -m benchmarks.defenses [--zoo NAME,NAME | --folder DIR --target-label T]
        [--methods fine_pruning,nad,...,scan] [--seeds 0,1,2] [--epochs N]
        [--anp-iterations N] [--json FILE] [--markdown] [--plot PNG]

The models: the bundled BadNets sample (samples/torch_badnets, target 0) unless `--zoo`
names zoo models (benchmarks/zoo, built and cached by `python -m benchmarks.zoo.build`;
the target class comes from the manifest) or `--folder` names another folder holding
model.onnx, clean.npz, bad.npz, eval.npz and eval_bad.npz.

Every registered method flagged `clean_only` runs through
`inner_onnx.repair.pipeline.repair` with the backdoor scenario's settings (`--epochs`
replaces the scenario's epoch budget, for the real-size models); `scan` is inner-onnx's
clean-data path, `repair` with neither `--bad` nor `--trigger`: a trigger scan of every
class, then the default method on the synthesized bad samples. No method reads bad.npz
(the scenario requires the argument; test_clean_only.py shows the flagged methods never
read it). Accuracy, ASR and fairness gap before and after come from onnxruntime on
eval.npz and eval_bad.npz, which no repair sees.

`--json` keeps the runs (a rerun skips the (model, method, seed) it already holds, and
each run is saved as it ends); `--markdown` prints a table per model (mean ± std over the
seeds, ranked by the backdoor scenario's own objective, as benchmarks/report.py ranks the
known-bad-samples track) and the mean rank over models; `--plot` draws ASR against clean
accuracy per model.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from benchmarks.report import aggregate, cell, mean_std, plot, ranking
from benchmarks.zoo.load import DEFAULT_ZOO_DIR
from benchmarks.zoo.manifest import entry_named
from inner_onnx.context import RunContext
from inner_onnx.errors import InputError
from inner_onnx.io.data import load_npz
from inner_onnx.io.fileio import write_json_atomic
from inner_onnx.io.model import OnnxModel
from inner_onnx.measure.evaluation import EvaluationSet, evaluate
from inner_onnx.measure.metrics import Metrics
from inner_onnx.repair.methods import METHODS
from inner_onnx.repair.pipeline import repair, settings_for
from inner_onnx.runtime import Runner
from inner_onnx.scenarios import BadSource, bad_source

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "torch_badnets"
TARGET = 0
SCAN = "scan"
CLEAN_ONLY = tuple(name for name, method in METHODS.items() if method.clean_only)
METHOD_NAMES = (*CLEAN_ONLY, SCAN)
KIND = "backdoor"


@dataclass(frozen=True)
class Case:
    """A backdoored model in a folder, with the attacker's class (for the ASR only)."""

    name: str
    folder: Path
    target: int


def zoo_case(name: str, zoo_dir: Path = DEFAULT_ZOO_DIR) -> Case:
    entry = entry_named(name)
    if entry.target_class is None:
        raise SystemExit(f"error: zoo model {name} has no backdoor")
    return Case(name, zoo_dir / name, entry.target_class)


def row(case: Case, method: str, seed: int, metrics: Metrics, **extra: object) -> dict[str, object]:
    """One run in the schema of benchmarks/report.py (`budget`: the clean samples given)."""
    return {
        "model": case.name,
        "scenario": KIND,
        "budget": extra.pop("budget"),
        "method": method,
        "seed": seed,
        "clean_accuracy": metrics.accuracy,
        "asr": metrics.asr,
        "fairness_gap": metrics.fairness_gap,
        **extra,
    }


def run(
    case: Case, method: str, seed: int, epochs: int | None, anp_iterations: int | None
) -> list[dict[str, object]]:
    """The method's run, and the original model's figures (method "original")."""
    model = OnnxModel.load(case.folder / "model.onnx")
    clean = load_npz(case.folder / "clean.npz", model)
    evaluation = EvaluationSet(
        load_npz(case.folder / "eval.npz", model),
        load_npz(case.folder / "eval_bad.npz", model),
        case.target,
        name="eval",
    )
    if method == SCAN:
        source = bad_source(KIND)
        settings = settings_for(KIND, epochs=epochs)
    else:
        source = BadSource(KIND, bad_path=case.folder / "bad.npz", target_label=case.target)
        settings = settings_for(KIND, method=method, epochs=epochs)
    if method == "anp" and anp_iterations is not None:
        METHODS["anp"].iterations = anp_iterations  # type: ignore[attr-defined]
    budget = len(clean.y)
    try:
        result = repair(
            model, clean, source, settings, RunContext(seed=seed), evaluation=evaluation
        )
    except InputError as refusal:  # the scan flags no class: nothing to repair
        before = evaluate(Runner(model, "cpu"), evaluation, seed)
        unchanged = dict(weights_changed=0, seconds=None, note=str(refusal), budget=budget)
        return [row(case, method, seed, before, **unchanged), original(case, seed, before, budget)]
    chosen = result.method if method in (SCAN, "auto") else None
    note = "; ".join(result.outcome.missed) if result.changed_count == 0 else None
    after = dict(
        weights_changed=result.changed_count,
        seconds=result.seconds,
        note=note,
        chosen=chosen,
        budget=budget,
    )
    return [
        row(case, method, seed, result.after, **after),
        original(case, seed, result.before, budget),
    ]


def original(case: Case, seed: int, before: Metrics, budget: int) -> dict[str, object]:
    return row(case, "original", seed, before, weights_changed=0, seconds=0.0, budget=budget)


def markdown(runs: list[dict]) -> str:
    """A table per model (mean ± std over seeds, ranked), then each method's mean rank."""
    table = aggregate(runs)
    lines: list[str] = []
    ranks: dict[str, list[int]] = defaultdict(list)
    for key, by_method in table.items():
        seeds = sorted({r["seed"] for r in runs if r["model"] == key[0]})
        ranked = dict(ranking(KIND, by_method))
        for method, rank in ranked.items():
            ranks[method].append(rank)
        lines += [
            f"#### {key[0]} · {key[2]} clean samples · seeds {', '.join(map(str, seeds))}",
            "",
            "| method | rank | clean acc. ↑ | ASR ↓ | fairness gap ↓ | values changed | time (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        shown = sorted(by_method.items(), key=lambda item: item[0] != "original")
        for method, metrics in shown:
            lines.append(
                f"| {method} | {ranked.get(method, '–')} | {cell(metrics.get('clean_accuracy'))} "
                f"| {cell(metrics.get('asr'))} | {cell(metrics.get('fairness_gap'))} "
                f"| {cell(metrics.get('weights_changed'), 0)} | {cell(metrics.get('seconds'), 0)} |"
            )
        lines.append("")
    lines += ["| method | mean rank (models) |", "|---|---|"]
    for method, values in sorted(ranks.items(), key=lambda item: mean_std(item[1])[0]):
        lines.append(f"| {method} | {mean_std(values)[0]:.2f} ({len(values)}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=",".join(METHOD_NAMES))
    parser.add_argument("--seeds", default="0", help="comma-separated repair seeds")
    parser.add_argument("--zoo", help="comma-separated zoo models (target from the manifest)")
    parser.add_argument("--folder", type=Path, default=SAMPLE, help="the backdoored model's")
    parser.add_argument("--target-label", type=int, default=TARGET)
    parser.add_argument("--epochs", type=int, help="epoch budget (default: the scenario's)")
    parser.add_argument("--anp-iterations", type=int)
    parser.add_argument("--json", type=Path, help="keep the runs here (a rerun resumes)")
    parser.add_argument("--markdown", action="store_true", help="print the tables")
    parser.add_argument("--plot", type=Path, help="write ASR against accuracy here")
    args = parser.parse_args()
    if args.zoo:
        cases = [zoo_case(name) for name in args.zoo.split(",")]
    else:
        cases = [Case(args.folder.name, args.folder, args.target_label)]
    runs: list[dict] = json.loads(args.json.read_text()) if args.json and args.json.exists() else []
    done = {(r["model"], r["method"], r["seed"]) for r in runs}
    seeds = [int(seed) for seed in args.seeds.split(",")]
    for case in cases:
        for method in args.methods.split(","):
            for seed in seeds:
                if (case.name, method, seed) in done:
                    continue
                made = run(case, method, seed, args.epochs, args.anp_iterations)
                runs += [r for r in made if (r["model"], r["method"], r["seed"]) not in done]
                done |= {(r["model"], r["method"], r["seed"]) for r in made}
                print(json.dumps(made[0]), flush=True)
                if args.json:
                    write_json_atomic(args.json, runs)
    if args.markdown:
        print(markdown(runs))
    if args.plot:
        plot(aggregate(runs), args.plot)


if __name__ == "__main__":
    main()
