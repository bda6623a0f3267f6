"""`inner-onnx repair` and `inner-onnx demo`: a verified repaired model and its report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inner_onnx.cli.app import (
    app,
    bad_source_from,
    load_checked,
    metrics_rows,
    print_json,
    reporter,
    stderr,
    stdout,
)
from inner_onnx.cli.options import (
    DEFAULT_METHOD,
    AttackOpt,
    BadOpt,
    ClipOpt,
    DataOpt,
    DeviceOpt,
    EpochsOpt,
    FaultRuleOpt,
    ForceOpt,
    GranularityOpt,
    JsonOpt,
    LayersOpt,
    MethodOpt,
    ModelArg,
    OutputNameOpt,
    ProbeOpt,
    QuietOpt,
    ScenarioOpt,
    SeedOpt,
    TargetOpt,
    ThreadsOpt,
    TopKOpt,
    TriggerOpt,
    ValFractionOpt,
)
from inner_onnx.errors import InputError


def _print_repair(summary: dict) -> None:
    stdout.print(metrics_rows(summary["before"], summary["after"]))
    changed = summary["changed_weights"]
    stdout.print(f"evaluated on: {summary['evaluated_on']}")
    if summary["faults"]:
        stdout.print(
            f"selected units: {', '.join(summary['faults']['selected_units'])}; "
            f"fault neurons: {summary['faults']['neurons']}"
        )
    averaged = summary.get("averaged_epochs", 0)
    kept = (
        f"kept the average of the last {averaged}"
        if averaged
        else f"kept epoch {summary['kept_epoch']}"
    )
    stdout.print(
        f"changed weights: {changed['count']} ({100 * changed['fraction']:.2f}%) in "
        f"{len(changed['tensors'])} tensors; epochs: {summary['epochs_run']}, {kept}; "
        f"{summary['seconds']:.1f} s"
    )
    _print_verdict(summary)
    if summary["output"] is None:
        stdout.print("[bold yellow]no weight changed: nothing written[/]")
        return
    stdout.print(
        f"[bold green]repaired model written to {summary['output']}[/] (checked, verified in "
        "onnxruntime)"
    )
    if summary.get("report"):
        stdout.print(f"report: {summary['report']}")


def _print_verdict(summary: dict) -> None:
    met, confidence = summary["targets_met"], summary["targets_confidence"]
    if met is None:
        return
    line = (
        "validation targets met"
        if met
        else "validation targets missed: " + "; ".join(summary["targets_missed"])
    )
    if confidence is not None:
        line += f" (they hold on {100 * confidence:.0f}% of bootstrap resamples)"
    stdout.print(line, markup=False)


# Over 60 lines only because it maps every option onto the library's settings.
def run_repair(
    model_path: Path,
    data: Path,
    scenario: str,
    output: Path,
    *,
    bad: Path | None = None,
    trigger: str | None = None,
    attack: str | None = None,
    target_label: int | None = None,
    clip: str | None = None,
    faults_path: Path | None = None,
    method: str = DEFAULT_METHOD,
    seed: int = 0,
    granularity: str | None = None,
    layers: int | None = None,
    top_k: int | None = None,
    fault_rule: str | None = None,
    probe: str | None = None,
    epochs: int | None = None,
    val_fraction: float | None = None,
    threads: int | None = None,
    eval_data: Path | None = None,
    eval_bad: Path | None = None,
    report_dir: Path | None = None,
    device: str = "auto",
    output_name: str | None = None,
    force: bool = False,
    quiet: bool = False,
) -> dict:
    """The options as a RepairJob, run; returns the summary."""
    from inner_onnx.context import RunContext
    from inner_onnx.repair.job import RepairJob
    from inner_onnx.repair.pipeline import settings_for

    model = load_checked(model_path, output_name)
    source = bad_source_from(scenario, bad, trigger, attack, target_label, clip)
    settings = settings_for(
        source.scenario,
        method=method,
        epochs=epochs,
        layers=layers,
        granularity=granularity,
        top_k=top_k,
        fault_rule=fault_rule,
        validation_fraction=val_fraction,
        probe=probe,
    )
    job = RepairJob(
        model,
        model_path,
        data,
        output,
        source,
        settings,
        RunContext(seed, threads, device),
        faults_path,
        eval_data,
        eval_bad,
        Path(report_dir) if report_dir is not None else None,
        force,
    )
    return job.run(reporter(quiet))


# Over 60 lines only because its signature is the command's option list.
@app.command("repair")
def repair_command(
    model_path: ModelArg,
    data: DataOpt,
    scenario: ScenarioOpt,
    output: Annotated[Path, typer.Option("--out", "-o", help="Repaired ONNX model to write.")],
    bad: BadOpt = None,
    trigger: TriggerOpt = None,
    attack: AttackOpt = None,
    target_label: TargetOpt = None,
    clip: ClipOpt = None,
    faults: Annotated[
        Path | None, typer.Option("--faults", help="Fault set from `localize` (else found now).")
    ] = None,
    method: MethodOpt = DEFAULT_METHOD,
    seed: SeedOpt = 0,
    granularity: GranularityOpt = None,
    layers: LayersOpt = None,
    top_k: TopKOpt = None,
    fault_rule: FaultRuleOpt = None,
    probe: ProbeOpt = None,
    threads: ThreadsOpt = None,
    epochs: EpochsOpt = None,
    val_fraction: ValFractionOpt = None,
    eval_data: Annotated[
        Path | None, typer.Option("--eval", help="Held-out data for the before/after numbers.")
    ] = None,
    eval_bad: Annotated[
        Path | None, typer.Option("--eval-bad", help="Held-out bad samples (with --eval).")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write report.html and report.json here.")
    ] = None,
    device: DeviceOpt = "auto",
    output_name: OutputNameOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Repair the model and write a verified ONNX file with only the chosen values changed."""
    summary = run_repair(
        model_path,
        data,
        scenario,
        output,
        bad=bad,
        trigger=trigger,
        attack=attack,
        target_label=target_label,
        clip=clip,
        faults_path=faults,
        method=method,
        seed=seed,
        granularity=granularity,
        layers=layers,
        top_k=top_k,
        fault_rule=fault_rule,
        probe=probe,
        threads=threads,
        epochs=epochs,
        val_fraction=val_fraction,
        eval_data=eval_data,
        eval_bad=eval_bad,
        report_dir=report,
        device=device,
        output_name=output_name,
        force=force,
        quiet=quiet or as_json,
    )
    if as_json:
        print_json(summary)
    else:
        _print_repair(summary)
    exit_on_findings(summary)


def exit_on_findings(summary: dict) -> None:
    """Exit status 3 (DESIGN.md): nothing changed, or a verified model that misses its
    validation targets; one line on stderr says which."""
    if summary["output"] is None:
        why = f" ({'; '.join(summary['targets_missed'])})" if summary["targets_missed"] else ""
        stderr.print(f"no weight changed: nothing written{why}", markup=False)
        raise typer.Exit(3)
    if summary["targets_met"] is False:
        stderr.print("targets missed: " + "; ".join(summary["targets_missed"]), markup=False)
        raise typer.Exit(3)


@app.command()
def demo(
    output_dir: Annotated[
        Path, typer.Option("--output-dir", help="Where the repaired model and report go.")
    ] = Path("demo-output"),
    quiet: QuietOpt = False,
) -> None:
    """Repair the bundled backdoored PyTorch sample and show before/after (a showcase: exit
    status 0 whatever the validation verdict, which it prints)."""
    from inner_onnx.io.samples import sample_dir

    sample = sample_dir("torch_badnets")
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"--output-dir is a file, not a folder: {output_dir}")
    output_dir.mkdir(parents=True, exist_ok=True)
    output = output_dir / "torch_badnets_repaired.onnx"
    stdout.print(
        f"[bold]inner-onnx demo[/]: BadNets backdoor (white patch, target 0) in "
        f"{sample / 'model.onnx'}"
    )
    summary = run_repair(
        sample / "model.onnx",
        sample / "clean.npz",
        "backdoor",
        output,
        bad=sample / "bad.npz",
        target_label=0,
        # the showcase is INNER itself, the method the tool is named after
        method="inner",
        eval_data=sample / "eval.npz",
        eval_bad=sample / "eval_bad.npz",
        report_dir=output_dir / "report",
        force=True,
        quiet=quiet,
    )
    _print_repair(summary)
