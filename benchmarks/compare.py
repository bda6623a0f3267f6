"""INNER against the repair methods people use, and re-use of its fault set.

    .venv/bin/python -m benchmarks.compare            # the full benchmark (long)
    .venv/bin/python -m benchmarks.compare --quick    # one model, one scenario, minutes

Writes OUT/results/compare[_quick].json (every run), OUT/results/compare[_quick].png
(the trade-off plot) and the section "## INNER vs other repair methods" of
OUT/RESULTS.md (other sections are left as they are). OUT is benchmarks/ for
the full run and benchmarks/cache/quick/ for --quick. Every number is measured
in onnxruntime on the repaired ONNX model, on Fashion-MNIST test images that
neither the models nor the repairs saw.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import onnx
import onnxruntime
import torch

from benchmarks.models import MODELS, WEAK_CLASS, fashion_test
from benchmarks.report import invocations, write_outputs
from benchmarks.scenarios import SCENARIOS, Case, TestSplit, make_case
from inner_onnx.io.model import OnnxModel
from inner_onnx.measure.evaluation import evaluate
from inner_onnx.measure.metrics import sensitivity
from inner_onnx.repair.methods import METHODS, RepairMethod
from inner_onnx.repair.methods.anp import Anp
from inner_onnx.repair.pipeline import run_plan, settings_for
from inner_onnx.repair.settings import RepairSettings
from inner_onnx.repair.verify import changed_values
from inner_onnx.runtime import Runner

BENCHMARKS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Config:
    pairs: tuple[tuple[str, str, tuple[int, ...]], ...]  # (model, scenario, budgets)
    seeds: int
    methods: tuple[str, ...]
    # None: each scenario's default epochs (`settings_for`), as `inner-onnx repair` runs them
    epochs: int | None
    evaluation_size: int
    anp_iterations: int
    quick: bool


# In order of priority: a run cut short by --deadline loses the last pairs of the last seed.
FULL_PAIRS: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("cnn_badnets", "badnets", (100, 500, 1000)),
    ("keras_badnets", "badnets", (500,)),
    ("vgg_badnets", "badnets", (500,)),
    ("cnn_blend", "blend", (100, 500, 1000)),
    ("vgg_blend", "blend", (500,)),
    ("cnn_weak", "wrong", (100, 500, 1000)),
    ("vgg_weak", "wrong", (500,)),
    ("cnn_weak", "fgsm", (500,)),
    ("vgg_weak", "fgsm", (500,)),
    ("cnn_weak", "pgd", (500,)),
)
# The known-bad-samples track; the clean-data-only defences have their own script
# (benchmarks/defenses.py), except ANP and Fine-Pruning, kept here for comparison with the
# earlier runs (they ignore the bad samples they are given).
KEPT_CLEAN_ONLY = ("anp", "fine_pruning")
ALL_METHODS = tuple(
    name for name, m in METHODS.items() if not m.clean_only or name in KEPT_CLEAN_ONLY
)
FULL = Config(FULL_PAIRS, 3, ALL_METHODS, None, 2000, 200, False)
QUICK = Config((("cnn_badnets", "badnets", (100,)),), 1, ALL_METHODS, 10, 500, 40, True)


def case_settings(config: Config, kind: str, seed: int = 0) -> RepairSettings:
    """The settings `inner-onnx repair` uses for the scenario; every method shares them."""
    return settings_for(kind, epochs=config.epochs)


def methods(anp_iterations: int) -> dict[str, RepairMethod]:
    """The library's registry, with ANP's iteration count set by the run."""
    return {**METHODS, "anp": Anp(iterations=anp_iterations)}


def log(message: str) -> None:
    print(f"[{datetime.now(timezone.utc):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def measure(model: OnnxModel, case: Case) -> dict[str, object]:
    """Every metric of the table, through onnxruntime on `model`."""
    runner = Runner(model, "cpu")
    metrics = evaluate(runner, case.evaluation, case.seed)
    data = case.evaluation.data
    return {
        "clean_accuracy": metrics.accuracy,
        "asr": metrics.asr,
        "robust_accuracy": metrics.robust_accuracy,
        "weak_accuracy": metrics.per_class_accuracy[WEAK_CLASS],
        "fairness_gap": metrics.fairness_gap,
        # Kept to tell a repaired backdoor from a wrecked target class.
        "per_class_accuracy": metrics.per_class_accuracy,
        "sensitivity": sensitivity(runner.predict, data.x, data.y, model.input.layout, (0.0, 1.0)),
    }


def run_method(method: RepairMethod, case: Case) -> dict[str, object]:
    """The method's plan run by the library's repair stages; the proto measured as written."""
    torch.manual_seed(case.seed)
    started = time.perf_counter()
    view, _ = run_plan(case.problem, method.plan(case.problem))
    proto = view.write_back()
    seconds = time.perf_counter() - started
    repaired = OnnxModel(proto)
    record: dict[str, object] = measure(repaired, case)
    record["weights_changed"] = sum(changed_values(case.model, proto).values())
    record["seconds"] = seconds + (case.problem.localize_seconds if method.uses_faults else 0.0)
    return record


def run_case(case: Case, chosen: list[RepairMethod]) -> list[dict[str, object]]:
    base = {
        "model": case.model_name,
        "scenario": case.scenario.name,
        "budget": case.budget,
        "seed": case.seed,
        "train_clean": len(case.problem.train),
        "train_bad": len(case.problem.train_bad.data),
        "bad_samples": case.bad_count,
    }
    original = measure(case.model, case)
    rows = [{**base, "method": "original", **original, "weights_changed": 0, "seconds": 0.0}]
    faults = case.problem.faults  # localized once, before any method is timed
    base["fault_neurons"] = len(faults.neurons)
    base["fault_weights"] = faults.weights_covered(case.model)
    base["localize_seconds"] = case.problem.localize_seconds
    for method in chosen:
        if case.kind not in method.scenarios:
            continue
        record = run_method(method, case)
        log(
            f"    {method.name:18s} acc {record['clean_accuracy']:.3f}  "
            f"{case.scenario.bad_metric} {record[case.scenario.bad_metric]:.3f}  "
            f"changed {record['weights_changed']:>6}  {record['seconds']:.1f}s"
        )
        rows.append({**base, "method": method.name, **record})
    return rows


def library_state() -> dict[str, object]:
    """The commit and the hashes of the files that decide INNER's numbers (they may be
    uncommitted while the library is being worked on)."""
    root = BENCHMARKS_DIR.parent
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False
    ).stdout.strip()
    folders = ("repair", "localize", "scenarios")
    return {
        "commit": commit,
        "sha256": {
            str(path.relative_to(root / "inner_onnx")): hashlib.sha256(
                path.read_bytes()
            ).hexdigest()[:16]
            for folder in folders
            for path in sorted((root / "inner_onnx" / folder).rglob("*.py"))
        },
    }


def machine() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def configure(args: argparse.Namespace) -> Config:
    config = QUICK if args.quick else FULL
    if args.models or args.scenarios or args.budgets:
        pairs = tuple(
            (model, scenario, tuple(args.budgets) if args.budgets else budgets)
            for model, scenario, budgets in config.pairs
            if (not args.models or model in args.models)
            and (not args.scenarios or scenario in args.scenarios)
        )
        config = replace(config, pairs=pairs)
    if args.seeds is not None:
        config = replace(config, seeds=args.seeds)
    if args.methods:
        config = replace(config, methods=tuple(args.methods))
    if args.anp_iterations is not None:
        config = replace(config, anp_iterations=args.anp_iterations)
    return config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small case, a few minutes")
    parser.add_argument("--out", type=Path, help="where RESULTS.md and results/ go")
    parser.add_argument("--cache", type=Path, default=BENCHMARKS_DIR / "cache")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS))
    parser.add_argument("--scenarios", nargs="+", choices=sorted(SCENARIOS))
    parser.add_argument("--budgets", nargs="+", type=int)
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--methods", nargs="+", choices=ALL_METHODS)
    parser.add_argument("--anp-iterations", type=int)
    parser.add_argument(
        "--append",
        action="store_true",
        help="add the cases not yet in the JSON to it (same settings), keep the earlier runs",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite RESULTS.md and the plot from the existing JSON (e.g. after editing "
        "results/compare_reading.md)",
    )
    parser.add_argument(
        "--deadline",
        type=lambda text: datetime.fromisoformat(text).replace(tzinfo=timezone.utc),
        help="UTC time (YYYY-MM-DDTHH:MM) after which no new case starts",
    )
    return parser.parse_args(argv)


def describe(config: Config) -> dict[str, object]:
    kinds = sorted({SCENARIOS[scenario].kind for _, scenario, _ in config.pairs})
    return {
        "pairs": [list(p) for p in config.pairs],
        "seeds": config.seeds,
        "methods": list(config.methods),
        "epochs": config.epochs,
        "evaluation_size": config.evaluation_size,
        "anp_iterations": config.anp_iterations,
        "repair_settings": {kind: settings_record(case_settings(config, kind)) for kind in kinds},
        "scenarios": {name: str(s.trigger or s.attack or "") for name, s in SCENARIOS.items()},
        "models": {name: MODELS[name].description for name in {p[0] for p in config.pairs}},
    }


def settings_record(settings: RepairSettings) -> dict[str, object]:
    """The training, loss and stopping settings, flat, and the routing in words."""
    record: dict[str, object] = {}
    for group in ("training", "loss", "stopping"):
        record.update(asdict(getattr(settings, group)))
    routing = settings.localize.routing
    record["routing"] = f"{routing.granularity} gates, {settings.localize.layers} units"
    return record


# What must match for appended runs to share tables with the earlier ones.
SHARED_SETTINGS = ("epochs", "evaluation_size", "anp_iterations", "repair_settings")


def start_payload(
    path: Path, append: bool, invocation: dict[str, object], described: dict[str, object]
) -> dict[str, object]:
    """A new payload, or with --append the existing one with this invocation added."""
    if not (append and path.is_file()):
        return {
            "invocations": [invocation],
            "machine": machine(),
            "library": library_state(),
            "config": described,
            "runs": [],
        }
    payload = json.loads(path.read_text())
    payload["invocations"] = invocations(payload)
    for key in ("command", "started", "finished"):
        payload.pop(key, None)
    config = payload["config"]
    for key in SHARED_SETTINGS:
        if config[key] != described[key]:
            raise SystemExit(f"--append: {key} differs from {path} ({config[key]!r})")
    if payload["library"]["sha256"] != library_state()["sha256"]:
        raise SystemExit(f"--append: INNER's files changed since {path} was written; run afresh")
    payload["invocations"].append(invocation)
    config["pairs"] += [p for p in described["pairs"] if p not in config["pairs"]]
    config["models"].update(described["models"])
    config["seeds"] = max(config["seeds"], described["seeds"])
    return payload


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = configure(args)
    out = args.out or (BENCHMARKS_DIR / "cache" / "quick" if config.quick else BENCHMARKS_DIR)
    torch.set_num_threads(1)
    stem = "compare_quick" if config.quick else "compare"
    json_path = out / "results" / f"{stem}.json"
    if args.report_only:
        write_outputs(json.loads(json_path.read_text()), out, stem)
        return 0
    command = "python -m benchmarks.compare " + " ".join(argv if argv is not None else sys.argv[1:])
    invocation: dict[str, object] = {
        "command": command.strip(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": os.getloadavg(),
    }
    payload = start_payload(json_path, args.append, invocation, describe(config))
    chosen = [methods(config.anp_iterations)[name] for name in config.methods]
    x_test, y_test = fashion_test()
    split = TestSplit.cut(x_test, y_test, config.evaluation_size)
    runs: list[dict[str, object]] = payload["runs"]  # type: ignore[assignment]
    done = {(r["model"], r["scenario"], r["budget"], r["seed"]) for r in runs}
    loaded: dict[str, OnnxModel] = {}
    skipped: list[str] = payload.setdefault("not_run_deadline", [])  # type: ignore[assignment]
    # Seed-major: a run cut short by --deadline still covers every case with fewer seeds.
    for seed in range(config.seeds):
        for model_name, scenario_name, budgets in config.pairs:
            for budget in budgets:
                if (model_name, scenario_name, budget, seed) in done:
                    continue
                name = f"{model_name} / {scenario_name} / budget {budget} / seed {seed}"
                if args.deadline is not None and datetime.now(timezone.utc) >= args.deadline:
                    skipped.append(name)
                    continue
                log(name)
                if model_name not in loaded:
                    loaded[model_name] = OnnxModel.load(MODELS[model_name].path(args.cache, log))
                case = make_case(
                    model_name,
                    loaded[model_name],
                    SCENARIOS[scenario_name],
                    split,
                    budget,
                    seed,
                    case_settings(config, SCENARIOS[scenario_name].kind, seed),
                )
                runs.extend(run_case(case, chosen))
                invocation["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
                write_outputs(payload, out, stem)
    if skipped:
        write_outputs(payload, out, stem)
        log(f"deadline reached: {len(skipped)} cases not run")
    log(f"wrote {json_path} and {out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
