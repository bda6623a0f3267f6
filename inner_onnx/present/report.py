"""`repair --report DIR`: report.json (the `repair --json` summary) and a one-file report.html.

The page loads nothing from anywhere: the CSS is inline and every plot is a
PNG drawn on matplotlib's Agg canvas and embedded as a base64 data URI, so the
file can be mailed or archived on its own. Every string that comes from the
model or the user (unit and tensor names, paths, settings) is HTML-escaped, and
`$` is escaped in plot labels so matplotlib never reads a name as mathtext.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from inner_onnx import __version__
from inner_onnx.errors import InputError
from inner_onnx.io.fileio import write_bytes_atomic, write_json_atomic
from inner_onnx.io.model import OnnxModel
from inner_onnx.measure.metrics import Metrics
from inner_onnx.present.html import (
    AFTER_COLOR,
    BEFORE_COLOR,
    CSS,
    KEPT_COLOR,
    PLOT_WIDTH,
    SELECTED_COLOR,
    change,
    escape,
    image,
    percent,
    plot_label,
    row,
    table,
    verdict,
)

if TYPE_CHECKING:
    from inner_onnx.localize.faults import FaultSet
    from inner_onnx.repair.result import RepairResult
    from inner_onnx.repair.trainer import EpochRecord

# Muted grey for "before" and for what was not selected, so the colour marks what changed.

# (field of Metrics, label, which direction is better)
METRIC_ROWS = (
    ("accuracy", "accuracy", "higher"),
    ("fairness_gap", "fairness gap (mean − worst class)", "lower"),
    ("asr", "attack success rate (ASR)", "lower"),
    ("bad_accuracy", "bad-sample accuracy", "higher"),
    ("robust_accuracy", "robust accuracy", "higher"),
    ("sensitivity", "sensitivity (rotation, brightness)", "lower"),
)


def write_report(directory: Path, model: OnnxModel, result: RepairResult, summary: dict) -> Path:
    """Write report.json (`summary` as pretty JSON) and report.html into `directory`."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"report path is a file, not a folder: {directory}")
    directory.mkdir(exist_ok=True)
    write_json_atomic(directory / "report.json", summary)
    page = directory / "report.html"
    write_bytes_atomic(page, render_html(model, result, summary).encode("utf-8"))
    return page


def render_html(model: OnnxModel, result: RepairResult, summary: dict) -> str:
    """The whole report page as one self-contained HTML string."""
    title = f"inner-onnx repair report: {result.scenario}, method {result.method}"
    sections = [
        ("summary", "Before and after", _summary_section(result)),
        ("per-class", "Per-class accuracy", _per_class_section(result.before, result.after)),
        ("layer-selection", "Layer selection", _layer_section(result.faults)),
        ("votes", "Fault neurons: routing votes", _votes_section(result.faults)),
        ("training", "Training", _training_section(result)),
        ("changed", "Changed tensors", _changed_section(model, result)),
        ("provenance", "Provenance", _provenance_section(model, result, summary)),
    ]
    nav = "".join(f'<a href="#{key}">{escape(heading)}</a>' for key, heading, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{escape(heading)}</h2>{content}</section>'
        for key, heading, content in sections
    )
    model_label = str(model.path) if model.path else model.sha256[:12]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{escape(title)}</h1>"
        f'<p class="lead">model {escape(model_label)} · evaluated on '
        f"{escape(result.evaluation_name)} · every number measured in onnxruntime on the model "
        "as written</p>"
        f"<nav>{nav}</nav>{body}</main></body></html>\n"
    )


def _metric_row(field: str, label: str, better: str, before: Metrics, after: Metrics) -> str:
    old, new = getattr(before, field), getattr(after, field)
    return row(
        [
            (label, False),
            (percent(old), True),
            (percent(new), True),
            (change(old, new), True),
            (f"{better} is better", False),
            (verdict(old, new, better), False),
        ]
    )


def _headline_fields(result: RepairResult) -> list[str]:
    """The scenario's own measure first, then clean accuracy."""
    from inner_onnx.scenarios import scenario_named

    primary = scenario_named(result.scenario).headline_field(result.before)
    fields = [primary] if primary and getattr(result.before, primary) is not None else []
    return [*fields, "accuracy"]


def _summary_section(result: RepairResult) -> str:
    before, after = result.before, result.after
    labels = {field: label for field, label, _ in METRIC_ROWS}
    cards = [
        (
            labels[field],
            f"{percent(getattr(before, field))} → {percent(getattr(after, field))}",
        )
        for field in _headline_fields(result)
    ]
    changed = sum(result.changed.values())
    share = changed / result.weights_total if result.weights_total else 0.0
    cards.append(("weights changed", f"{changed:,} ({100 * share:.2f} %)"))
    card_html = "".join(
        f'<div class="card"><div class="label">{escape(label)}</div>'
        f'<div class="value">{escape(value)}</div></div>'
        for label, value in cards
    )
    rows = [
        _metric_row(field, label, better, before, after)
        for field, label, better in METRIC_ROWS
        if getattr(before, field) is not None or getattr(after, field) is not None
    ]
    metrics = table(["metric", "before", "after", "change", "", "verdict"], rows)
    return (
        f'<div class="cards">{card_html}</div>{metrics}'
        f'<p class="note">{changed:,} of {result.weights_total:,} unit weights changed in '
        f"{len(result.changed)} tensors.</p>"
    )


def _per_class_section(before: Metrics, after: Metrics) -> str:
    classes = len(before.per_class_accuracy)
    figure = Figure(figsize=(PLOT_WIDTH, 3.4), layout="constrained")
    axes = figure.add_subplot()
    index = np.arange(classes)
    width = 0.4
    for offset, label, metrics, color in (
        (-width / 2, "before", before, BEFORE_COLOR),
        (width / 2, "after", after, AFTER_COLOR),
    ):
        values = [math.nan if a is None else a for a in metrics.per_class_accuracy]
        axes.bar(index + offset, values, width, label=label, color=color)
    absent = [i for i, a in enumerate(before.per_class_accuracy) if a is None]
    for i in absent:
        axes.text(i, 0.02, "n/a", ha="center", va="bottom", fontsize=8, color="#4a5360")
    axes.set_xlabel("class")
    axes.set_ylabel("accuracy")
    axes.set_ylim(0, 1.08)
    axes.set_xlim(-0.6, classes - 0.4)
    if classes <= 30:
        axes.set_xticks(index)
    else:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, frameon=False)
    note = (
        f'<p class="note">Classes {", ".join(map(str, absent))} have no evaluation sample.</p>'
        if absent
        else ""
    )
    return image(figure, "per-class accuracy before and after repair") + note


def _no_faults_note() -> str:
    return (
        '<p class="note">No fault localization for this method: every unit weight was '
        "trainable.</p>"
    )


def _layer_section(faults: FaultSet | None) -> str:
    if faults is None or not faults.units:
        return _no_faults_note()
    units = faults.units
    names = [plot_label(u.name) for u in units]
    colors = [SELECTED_COLOR if u.selected else BEFORE_COLOR for u in units]
    figure = Figure(figsize=(PLOT_WIDTH, 1.0 + 0.32 * len(units)), layout="constrained")
    score_axes, probe_axes = figure.subplots(1, 2, sharey=True)
    positions = np.arange(len(units))
    score_axes.barh(positions, [u.score for u in units], color=colors)
    score_axes.set_xlabel("selection score (cross-entropy, clean vs bad)")
    probe_axes.barh(positions, [u.probe_accuracy for u in units], color=colors)
    probe_axes.set_xlabel("probe accuracy")
    probe_axes.set_xlim(0, 1)
    score_axes.set_yticks(positions, names)
    score_axes.invert_yaxis()  # graph order, first unit on top
    for axes in (score_axes, probe_axes):
        axes.grid(axis="x", alpha=0.3)
    rows = [
        row(
            [
                (u.name, False),
                (f"{u.score:.4f}", True),
                (percent(u.probe_accuracy), True),
                ("yes" if u.selected else "", False),
            ],
            "selected" if u.selected else "",
        )
        for u in units
    ]
    return (
        f'<p class="note">Selected units (orange) are the {len(faults.selected_units)} with the '
        "highest score: there the probes see clean and bad samples differently.</p>"
        + image(figure, "unit selection scores and probe accuracy")
        + table(["unit", "score", "probe accuracy", "selected"], rows)
    )


def _votes_section(faults: FaultSet | None) -> str:
    if faults is None:
        return _no_faults_note()
    selected = faults.selected_units
    if not selected:
        return '<p class="note">No unit was selected.</p>'
    kept_by_unit: dict[str, dict[int, int]] = {name: {} for name in selected}
    for neuron in faults.neurons:
        kept_by_unit.setdefault(neuron.unit, {})[neuron.index] = neuron.votes
    figure = Figure(figsize=(PLOT_WIDTH, 0.6 + 2.1 * len(selected)), layout="constrained")
    panels = figure.subplots(len(selected), 1, squeeze=False)[:, 0]
    for axes, name in zip(panels, selected):
        kept = kept_by_unit[name]
        # Fault sets written before unit_votes existed only know the kept neurons' votes.
        votes = faults.unit_votes.get(name) or [
            kept.get(i, 0) for i in range(max(kept, default=-1) + 1)
        ]
        colors = [KEPT_COLOR if i in kept else BEFORE_COLOR for i in range(len(votes))]
        axes.bar(np.arange(len(votes)), votes, width=0.85, color=colors)
        axes.set_title(
            f"{plot_label(name, 60)}: {len(kept)} fault neurons of {len(votes)}",
            fontsize=10,
            loc="left",
        )
        axes.set_ylabel("votes")
        axes.set_xlim(-0.6, max(len(votes), 1) - 0.4)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(axis="y", alpha=0.3)
    panels[-1].set_xlabel("neuron (output channel)")
    kept_total = sum(len(k) for k in kept_by_unit.values())
    return (
        '<p class="note">Each bad sample votes for the neurons its route keeps open '
        f"(neuron gates). The {kept_total} kept fault neurons (red) are the only ones "
        "repair changes.</p>"
        if faults.granularity == "neuron"
        else '<p class="note">Each bad sample votes for the weights its route keeps open '
        "(weight gates); the bars sum them per neuron. Repair changes only the kept "
        f"weights, which lie in the {kept_total} red neurons.</p>"
    ) + image(figure, "routing votes per neuron")


def _bad_curve_label(result: RepairResult) -> str | None:
    """What EpochRecord.val_bad measures in this scenario (None: nothing)."""
    from inner_onnx.scenarios import scenario_named

    source = result.settings.get("bad_source") or {}
    target = source.get("target_label") if isinstance(source, dict) else None
    has_target = target is not None or result.before.asr is not None
    return scenario_named(result.scenario).curve_label(has_target)


def _training_section(result: RepairResult) -> str:
    history: list[EpochRecord] = result.outcome.history
    kept = result.outcome.kept_epoch
    figure = Figure(figsize=(PLOT_WIDTH, 3.4), layout="constrained")
    loss_axes, metric_axes = figure.subplots(1, 2)
    trained = [r for r in history if r.loss is not None and math.isfinite(r.loss)]
    loss_axes.plot([r.epoch for r in trained], [r.loss for r in trained], "o-", color="#555d69")
    loss_axes.set_title("training loss", fontsize=11, loc="left")
    epochs = [r.epoch for r in history]
    metric_axes.plot(epochs, [r.val_accuracy for r in history], "o-", label="accuracy")
    bad_label = _bad_curve_label(result)
    if bad_label and any(r.val_bad is not None for r in history):
        values = [math.nan if r.val_bad is None else r.val_bad for r in history]
        metric_axes.plot(epochs, values, "s-", color=KEPT_COLOR, label=bad_label)
    metric_axes.plot(
        epochs,
        [r.val_fairness_gap for r in history],
        "^--",
        color="#2ca02c",
        label="fairness gap",
    )
    metric_axes.set_title("validation split (epoch 0 = before)", fontsize=11, loc="left")
    metric_axes.set_ylim(-0.03, 1.03)
    metric_axes.legend(loc="best", framealpha=0.9, fontsize=9)
    for axes in (loss_axes, metric_axes):
        axes.axvline(kept, color="#888", linestyle=":", linewidth=1.2)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    stopped = "stopped early" if result.outcome.stopped_early else "ran every epoch"
    averaged = result.outcome.averaged_epochs
    if averaged:
        average = result.outcome.average
        assert average is not None
        kept_text = (
            f"the weights averaged over the last {averaged} epochs were kept (validation: "
            f"accuracy {average.val_accuracy:.3f}"
            + ("" if average.val_bad is None else f", {bad_label} {average.val_bad:.3f}")
            + f", fairness gap {average.val_fairness_gap:.3f})"
        )
    else:
        kept_text = f"the weights of epoch {kept} (dotted line) were kept"
    return (
        f'<p class="note">{len(history) - 1} epochs ({stopped}); {kept_text}. Validation uses '
        "a held-out split of the repair data, never the evaluation data.</p>"
        + image(figure, "training loss and validation metrics")
    )


def _tensor_size(model: OnnxModel, name: str) -> int | None:
    init = model.initializers.get(name)
    return None if init is None else int(np.prod(init.dims, dtype=np.int64))


def _changed_section(model: OnnxModel, result: RepairResult) -> str:
    if not result.changed:
        return '<p class="note">No value changed.</p>'
    rows = []
    for name, count in result.changed.items():
        size = _tensor_size(model, name)
        rows.append(
            row(
                [
                    (name, False),
                    (f"{count:,}", True),
                    ("–" if size is None else f"{size:,}", True),
                    ("–" if not size else percent(count / size), True),
                ]
            )
        )
    changed = sum(result.changed.values())
    share = percent(changed / result.weights_total) if result.weights_total else "–"
    rows.append(
        row(
            [
                ("all unit weights", False),
                (f"{changed:,}", True),
                (f"{result.weights_total:,}", True),
                (share, True),
            ],
            "total",
        )
    )
    return table(["initializer", "values changed", "values", "share"], rows)


def _provenance_section(model: OnnxModel, result: RepairResult, summary: dict) -> str:
    proto = model.proto
    items = [
        ("tool", f"inner-onnx {__version__}"),
        ("model", str(model.path) if model.path else "(in memory)"),
        ("model sha256", model.sha256),
        ("producer", f"{proto.producer_name} {proto.producer_version}".strip() or "–"),
        ("opsets", ", ".join(f"{k} {v}" for k, v in model.opsets.items())),
        ("repaired model", summary.get("output", "–")),
        ("scenario", result.scenario),
        ("method", result.method),
        ("evaluated on", result.evaluation_name),
        ("seed", result.settings.get("seed", "–")),
        ("seconds", f"{result.seconds:.1f}"),
    ]
    if result.faults is not None:
        items.append(("fault set granularity", result.faults.granularity))
    definitions = "".join(f"<dt>{escape(key)}</dt><dd>{escape(value)}</dd>" for key, value in items)
    settings = json.dumps(result.settings, indent=2, default=str)
    return f"<dl>{definitions}</dl><h3>settings</h3><pre>{escape(settings)}</pre>"
