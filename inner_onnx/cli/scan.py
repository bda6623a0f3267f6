"""`inner-onnx scan`: is there a backdoor, and to which class? From clean data alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from inner_onnx.cli.app import app, load_checked, print_json, reporter, stderr, stdout
from inner_onnx.cli.options import (
    DataOpt,
    DeviceOpt,
    JsonOpt,
    ModelArg,
    OutputNameOpt,
    QuietOpt,
    SeedOpt,
    ThreadsOpt,
)
from inner_onnx.errors import InputError


def parse_classes(text: str | None, num_classes: int) -> list[int] | None:
    if text is None:
        return None
    try:
        classes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise InputError(f"--classes wants class numbers like 0,3,7, not {text!r}") from None
    if not classes or classes[0] < 0 or classes[-1] >= num_classes:
        raise InputError(f"--classes must lie in 0..{num_classes - 1}, got {text!r}")
    return classes


# Over 60 lines only because its signature is the command's option list.
@app.command()
def scan(
    model_path: ModelArg,
    data: DataOpt,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for the reversed triggers (.npy and PNG)."),
    ] = None,
    classes: Annotated[
        str | None, typer.Option("--classes", help="Candidate target classes, e.g. 0,3,7.")
    ] = None,
    time_budget: Annotated[
        float | None,
        typer.Option("--time-budget", min=0, help="Seconds; no class is started after that."),
    ] = None,
    log_norms: Annotated[
        bool,
        typer.Option(
            "--log-norms/--raw-norms",
            help="Anomaly index on log mask norms (default) or on raw ones, as the reference.",
        ),
    ] = True,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    device: DeviceOpt = "auto",
    output_name: OutputNameOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Reverse-engineer a trigger per class (Neural Cleanse); exit 3 if a backdoor is suspected."""
    from dataclasses import replace

    from inner_onnx.context import RunContext
    from inner_onnx.io.data import load_npz
    from inner_onnx.scan import NeuralCleanseSettings
    from inner_onnx.scan import scan as run_scan
    from inner_onnx.scan.artifacts import write_triggers

    model = load_checked(model_path, output_name)
    chosen = parse_classes(classes, model.num_classes)
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out is a file, not a folder: {out_dir}")
    clean = load_npz(data, model)
    context = RunContext(seed, threads, device)
    settings = replace(NeuralCleanseSettings(), log_norms=log_norms)
    view = model.torch_view(frozen=True).to(context.torch_device)
    with context.pinned():
        result = run_scan(
            view,
            clean.x,
            clean.y,
            model.input.layout,
            model.num_classes,
            classes=chosen,
            settings=settings,
            time_budget=time_budget,
            seed=seed,
            device=context.torch_device,
            reporter=reporter(quiet or as_json),
        )
    payload = {"model": str(model_path), **result.to_dict()}
    payload["backdoor_suspected"] = bool(result.flagged)
    by_label = {c.label: c for c in result.classes}
    target = result.target_label
    payload["anomaly_index"] = by_label[target].anomaly_index if target is not None else None
    if out_dir is not None:
        payload["triggers"] = [str(p) for p in write_triggers(out_dir, result)]
    if as_json:
        print_json(payload)
    else:
        _print_scan(result, payload)
    if result.flagged:
        stderr.print(
            f"backdoor suspected: class {target} (anomaly index {payload['anomaly_index']:.2f})",
            markup=False,
        )
        raise typer.Exit(3)


def _print_scan(result, payload: dict) -> None:
    table = Table("class", "mask L1", "attack success", "anomaly index", "flagged", title="scan")
    for row in result.classes:
        index = "-" if row.anomaly_index is None else f"{row.anomaly_index:.2f}"
        flagged = "yes" if row.label in result.flagged else ""
        table.add_row(
            str(row.label), f"{row.mask_l1:.1f}", f"{row.attack_success:.3f}", index, flagged
        )
    stdout.print(table)
    if result.skipped:
        stdout.print(f"time budget spent: classes not scanned: {result.skipped}")
    if payload.get("triggers"):
        stdout.print(f"reversed triggers written: {len(payload['triggers'])} files")
    if not result.flagged:
        stdout.print("no class is anomalous: no backdoor suspected")
