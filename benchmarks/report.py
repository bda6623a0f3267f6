"""Tables, the trade-off plot and the RESULTS.md section from the benchmark's runs.

Runs are aggregated over seeds as mean ± standard deviation (sample std; 0
with one seed). Methods are ranked per case by `score`, which is the library
scenario's own objective (`Scenario.objective`, the one that picks repair's kept
epoch): clean accuracy minus ASR for backdoors, plus robust accuracy for attacks,
minus the fairness gap for wrong predictions, with the scenario's penalties for
lost accuracy and a wider fairness gap (a backdoor "removed" by wrecking the
target class is no repair).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.scenarios import SCENARIOS as THREATS
from inner_onnx.io.fileio import write_json_atomic
from inner_onnx.scenarios import SCENARIOS, Measurement

SECTION = "## INNER vs other repair methods"
KINDS = {name: threat.kind for name, threat in THREATS.items()}
BAD_METRIC = {name: scenario.bad_metric for name, scenario in SCENARIOS.items()}
BAD_LABEL = {
    "backdoor": "ASR ↓",
    "adversarial": "robust acc. ↑",
    "wrong": "weak-class acc. ↑",
}
LABELS = {
    "original": "original model",
    "inner": "**INNER**",
    "ft": "fine-tune all",
    "ft_last2": "fine-tune last 2 units",
    "fine_pruning": "Fine-Pruning",
    "random": "random neurons or weights (INNER's count)",
    "grad_ratio": "gradient ratio (INNER's count)",
    "anp": "ANP",
    "ft_faults": "fine-tune INNER's fault set",
    "grad_ratio_faults": "gradient ratio in fault set",
    "ft_clean": "fine-tune on clean data",
    "nad": "NAD",
    "ibau": "i-BAU",
    "ft_sam": "FT-SAM",
    "nc_unlearn": "Neural Cleanse + unlearning",
    "scan": "inner-onnx scan + repair",
    "auto": "auto (the default)",
    "inner_majority": "INNER, majority fault rule",
    # result files written before the union rule became INNER's default name it so
    "inner_union": "INNER, union fault rule",
    "inner_top": "INNER, top fault rule",
}
METRICS = (
    "clean_accuracy",
    "asr",
    "robust_accuracy",
    "weak_accuracy",
    "fairness_gap",
    "sensitivity",
    "weights_changed",
    "seconds",
)
READING_FILE = "compare_reading.md"

Key = tuple[str, str, int]  # model, scenario, budget


# The settings that differ between scenarios or describe the loss; the rest are the
# defaults of inner_onnx/repair/settings.py.
SHOWN_SETTINGS = (
    "routing",
    "epochs",
    "average_epochs",
    "patience",
    "learning_rate",
    "bad",
    "clean_distillation",
    "clean_mixup",
    "bad_mixup",
    "probe",
)


def _settings_shown(record: dict[str, object]) -> list[tuple[str, object]]:
    return [(key, record[key]) for key in SHOWN_SETTINGS if key in record]


def kind_of(scenario: str) -> str:
    """The library scenario of a benchmark threat (or of a run that names its scenario)."""
    return KINDS.get(scenario, scenario if scenario in SCENARIOS else "wrong")


def mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def aggregate(runs: list[dict]) -> dict[Key, dict[str, dict[str, tuple[float, float, int]]]]:
    """(model, scenario, budget) -> method -> metric -> (mean, std, seeds)."""
    grouped: dict[Key, dict[str, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for run in runs:
        key = (run["model"], run["scenario"], run["budget"])
        for metric in METRICS:
            if run.get(metric) is not None:
                grouped[key][run["method"]][metric].append(float(run[metric]))
    return {
        key: {
            method: {m: (*mean_std(v), len(v)) for m, v in metrics.items()}
            for method, metrics in by_method.items()
        }
        for key, by_method in grouped.items()
    }


def score(kind: str, metrics: dict[str, tuple[float, float, int]], original: dict) -> float:
    """The library scenario's own objective (the one that picks repair's kept epoch), on the
    means over seeds; higher is better."""
    scenario = SCENARIOS[kind]

    def measured(figures: dict[str, tuple[float, float, int]]) -> Measurement:
        bad = figures.get(scenario.bad_metric)
        return Measurement(
            figures["clean_accuracy"][0],
            bad[0] if bad is not None else None,
            figures["fairness_gap"][0],
            scenario.bad_metric,
        )

    rule = scenario.default_settings().stopping
    return scenario.objective(measured(metrics), measured(original), rule)


def ranking(kind: str, by_method: dict[str, dict]) -> list[tuple[str, int]]:
    """(method, rank), best first; equal scores share the better rank (1, 2, 2, 4)."""
    scores = {
        method: round(score(kind, metrics, by_method["original"]), 9)
        for method, metrics in by_method.items()
        if method != "original"
    }
    ranked = [(m, 1 + sum(other > s for other in scores.values())) for m, s in scores.items()]
    return sorted(ranked, key=lambda item: item[1])


def cell(stats: tuple[float, float, int] | None, digits: int = 3) -> str:
    if stats is None:
        return "–"
    mean, std, n = stats
    if digits == 0:
        return f"{mean:,.0f}" + (f" ± {std:,.0f}" if n > 1 else "")
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 else "")


def case_table(key: Key, by_method: dict[str, dict], runs: list[dict]) -> list[str]:
    model, scenario, budget = key
    kind = kind_of(scenario)
    case_runs = [r for r in runs if (r["model"], r["scenario"], r["budget"]) == key]
    seeds = len({r["seed"] for r in case_runs})
    sample = next((r for r in case_runs if "fault_neurons" in r), case_runs[0])
    ranks = dict(ranking(kind, by_method))
    lines = [
        f"### {model} · {scenario} · budget {budget}",
        "",
        f"{sample['train_clean']} clean + {sample['train_bad']} bad samples to train on "
        f"(a fifth more held out for validation; {sample['bad_samples']} bad in all), "
        f"{seeds} seed(s). INNER's fault set: {sample.get('fault_neurons', '–')} neurons, "
        f"{sample.get('fault_weights', '–')} values; localization "
        f"{sample.get('localize_seconds', float('nan')):.1f} s (seed 0).",
        "",
        f"| method | rank | clean acc. ↑ | {BAD_LABEL[kind]} | fairness gap ↓ | sensitivity ↓ "
        "| weights changed | time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, metrics in by_method.items():
        lines.append(
            f"| {LABELS.get(method, method)} | {ranks.get(method, '–')} "
            f"| {cell(metrics.get('clean_accuracy'))} "
            f"| {cell(metrics.get(BAD_METRIC[kind]))} "
            f"| {cell(metrics.get('fairness_gap'))} "
            f"| {cell(metrics.get('sensitivity'))} "
            f"| {cell(metrics.get('weights_changed'), 0)} "
            f"| {cell(metrics.get('seconds'), 1)} |"
        )
    return [*lines, ""]


def summary_lines(table: dict[Key, dict[str, dict]]) -> list[str]:
    """Where INNER ranks in each case, and what restricting to its fault set does."""
    lines = [
        "| case | INNER's rank | best method (ties: all) | fault set vs all weights (fine-tune): "
        "Δ bad metric, Δ accuracy | gradient ratio in fault set vs network-wide: "
        "Δ bad metric, Δ accuracy |",
        "|---|---|---|---|---|",
    ]
    for key, by_method in table.items():
        kind = kind_of(key[1])
        ranks = dict(ranking(kind, by_method))
        best = ", ".join(LABELS.get(m, m) for m, rank in ranks.items() if rank == 1)
        lines.append(
            f"| {key[0]} · {key[1]} · {key[2]} | {ranks.get('inner', '–')} of {len(ranks)} "
            f"| {best} "
            f"| {delta(by_method, 'ft_faults', 'ft_all', kind)} "
            f"| {delta(by_method, 'grad_ratio_faults', 'grad_ratio', kind)} |"
        )
    return [*lines, ""]


def overall_lines(table: dict[Key, dict[str, dict]]) -> list[str]:
    """Per method, averaged over the cases it ran on (each case already a mean over seeds)."""
    gathered: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for key, by_method in table.items():
        kind = kind_of(key[1])
        bad = BAD_METRIC[kind]
        original = by_method["original"]
        for method, rank in ranking(kind, by_method):
            metrics = by_method[method]
            row = gathered[method]
            row["rank"].append(rank)
            row["accuracy"].append(metrics["clean_accuracy"][0] - original["clean_accuracy"][0])
            # a defect rate (ASR) is shown as is, an accuracy as its gain over the original
            gain = SCENARIOS[kind].bad_metric_higher_is_better
            row[kind].append(metrics[bad][0] - (original[bad][0] if gain else 0.0))
            row["changed"].append(metrics["weights_changed"][0])

    def average(values: list[float], digits: int = 3, sign: str = "+") -> str:
        if not values:
            return "–"
        return f"{sum(values) / len(values):{sign}.{digits}f} ({len(values)})"

    lines = [
        "| method | mean rank (cases) | Δ clean acc. | ASR after (backdoor) "
        "| Δ robust acc. (adversarial) | Δ class-2 acc. (wrong) | weights changed |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in [m for m in LABELS if m in gathered]:
        row = gathered[method]
        lines.append(
            f"| {LABELS[method]} | {average(row['rank'], 1, '')} | {average(row['accuracy'])} "
            f"| {average(row['backdoor'], 3, '')} | {average(row['adversarial'])} "
            f"| {average(row['wrong'])} | {sum(row['changed']) / len(row['changed']):,.0f} |"
        )
    return [*lines, ""]


def delta(by_method: dict[str, dict], method: str, baseline: str, kind: str) -> str:
    if method not in by_method or baseline not in by_method:
        return "–"
    bad = BAD_METRIC[kind]
    d_bad = by_method[method][bad][0] - by_method[baseline][bad][0]
    d_acc = by_method[method]["clean_accuracy"][0] - by_method[baseline]["clean_accuracy"][0]
    return f"{d_bad:+.3f}, {d_acc:+.3f}"


def plot(table: dict[Key, dict[str, dict]], path: Path) -> None:
    keys = list(table)
    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(max(5 * columns, 12), 4 * rows + 1.5), squeeze=False
    )
    markers = "o*sDv^<>pPhX"
    colors = plt.get_cmap("tab10")
    handles: dict[str, object] = {}
    for axis, key in zip(axes.ravel(), keys):
        kind = kind_of(key[1])
        bad = BAD_METRIC[kind]
        for method, metrics in table[key].items():
            if bad not in metrics:
                continue
            # The same marker and colour for a method in every panel.
            index = list(LABELS).index(method) if method in LABELS else len(LABELS)
            handle = axis.errorbar(
                metrics["clean_accuracy"][0],
                metrics[bad][0],
                xerr=metrics["clean_accuracy"][1],
                yerr=metrics[bad][1],
                fmt=markers[index % len(markers)],
                color=colors(index % 10),
                markersize=13 if method == "inner" else 7,
                capsize=2,
            )
            handles[LABELS.get(method, method).strip("*")] = handle
        budget = f" · budget {key[2]}" if key[2] else ""
        axis.set_title(f"{key[0]} · {key[1]}{budget}", fontsize=9)
        axis.set_xlabel("clean accuracy")
        axis.set_ylabel(BAD_LABEL[kind])
        axis.grid(alpha=0.3)
    for axis in axes.ravel()[len(keys) :]:
        axis.axis("off")
    figure.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=8)
    figure.tight_layout(rect=(0, 1.4 / (4 * rows + 1.5), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def invocations(payload: dict) -> list[dict]:
    """The runs that filled the JSON (older files: one command, machine-wide start time)."""
    if "invocations" in payload:
        return payload["invocations"]
    return [
        {
            "command": payload["command"],
            "started": payload["started"],
            "finished": payload.get("finished"),
            "load_average_at_start": payload["machine"]["load_average_at_start"],
        }
    ]


def not_run_lines(payload: dict) -> list[str]:
    skipped = payload.get("not_run_deadline") or []
    if not skipped:
        return []
    return [
        "",
        f"Not run (the run's deadline came first; seed-major order, so these are the last "
        f"seeds): {'; '.join(skipped)}.",
    ]


# Over 60 lines only because it is the section's text with its figures filled in.
def section(payload: dict, stem: str, reading: str) -> str:
    runs = payload["runs"]
    table = aggregate(runs)
    machine = payload["machine"]
    config = payload["config"]
    lines = [
        SECTION,
        "",
        "Commands (from the repository root, with the project's venv; UTC):",
        "",
        *[
            f"- `{run['command']}`: {run['started']} to {run.get('finished', '?')}, load "
            f"average at start {', '.join(f'{v:.1f}' for v in run['load_average_at_start'])}"
            for run in invocations(payload)
        ],
        "",
        f"Machine: {machine['platform']}, {machine['cpus']} CPUs, torch "
        f"{machine['torch']} ({machine['torch_threads']} thread), onnxruntime "
        f"{machine['onnxruntime']}. It was shared with other jobs, so times compare methods "
        "within a run, not machines.",
        "",
        "Every fine-tuning method is the library's `MaskedTrainer` with "
        "the same data, validation split and the settings `inner-onnx repair` uses for the "
        "scenario (`settings_for`; "
        + "; ".join(
            f"{kind}: " + ", ".join(f"{key} {value}" for key, value in _settings_shown(record))
            for kind, record in config["repair_settings"].items()
        )
        + "); only the values each may change differ, and INNER alone adds its probe loss "
        "(the routing settings apply to the methods that use INNER's fault set). "
        f"ANP does not fine-tune ({config['anp_iterations']} mask iterations on the clean data). "
        "Every number is measured in onnxruntime on the repaired ONNX model, on "
        f"{config['evaluation_size']} Fashion-MNIST test images no model or repair saw; "
        "sensitivity is 1 − accuracy under ±5°/±10° rotations and ±10% brightness. Time "
        "includes INNER's localization for the methods that use its fault set (INNER, and "
        "fine-tuning and gradient ratio restricted to it).",
        "",
        "Models: "
        + "; ".join(f"`{name}`: {text}" for name, text in sorted(config["models"].items()))
        + ".",
        "Scenarios: "
        + "; ".join(f"`{name}` {spec}" for name, spec in config["scenarios"].items() if spec)
        + "; `wrong`: misclassified test-pool images as bad samples.",
        *not_run_lines(payload),
        "",
        f"![ASR / accuracy trade-off per method](results/{stem}.png)",
        "",
        "### Summary",
        "",
        "Over all cases (number of cases in brackets). Rank 1 is best by a score: clean "
        "accuracy − ASR (backdoor), + robust accuracy (adversarial), − fairness gap (wrong); "
        "an accuracy loss beyond 1 point costs 3× its size, and for backdoor and adversarial "
        "a fairness gap wider than the original's by more than 5 points costs its size (a "
        "backdoor removed by wrecking the target class is no repair).",
        "",
        *overall_lines(table),
        "Per case, and what restricting a method to INNER's fault set changes (Δ bad metric: "
        "ASR for backdoors, lower is better; robust or class-2 accuracy otherwise, higher is "
        "better):",
        "",
        *summary_lines(table),
    ]
    if reading:
        lines += ["### Reading", "", reading.strip(), ""]
    for key, by_method in table.items():
        lines += case_table(key, by_method, runs)
    return "\n".join(lines).rstrip() + "\n"


def replace_section(path: Path, text: str) -> None:
    """Put `text` in place of this benchmark's section of `path`, leaving the others."""
    existing = path.read_text() if path.is_file() else "# Benchmarks\n"
    start = existing.find(SECTION + "\n")
    if start < 0:
        updated = existing.rstrip() + "\n\n" + text
    else:
        end = existing.find("\n## ", start + len(SECTION))
        rest = "\n" + existing[end + 1 :] if end >= 0 else ""
        updated = existing[:start] + text + rest
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(updated)
    tmp.replace(path)


def write_outputs(payload: dict, out: Path, stem: str) -> None:
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)
    write_json_atomic(results / f"{stem}.json", payload)
    plot(aggregate(payload["runs"]), results / f"{stem}.png")
    reading_path = results / READING_FILE
    reading = reading_path.read_text() if reading_path.is_file() and stem == "compare" else ""
    replace_section(out / "RESULTS.md", section(payload, stem, reading))
