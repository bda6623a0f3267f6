"""The `inner-onnx` command line: parses options, calls the library, prints results.

Exit status: 0 done; 2 bad input or usage (one line on stderr, no traceback);
1 anything else (one line; INNER_ONNX_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from inner_onnx.errors import InputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Repair ONNX classifiers (backdoors, adversarial robustness, wrong predictions) "
    "by optimizing only the neurons responsible (INNER).",
)
stdout = Console(soft_wrap=True)

ModelArg = Annotated[Path, typer.Argument(help="The ONNX model (never modified).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
DataOpt = Annotated[
    Path,
    typer.Option("--data", "-d", help=".npz: an array per model input (or x) and y (int)."),
]
OutputNameOpt = Annotated[
    str | None,
    typer.Option(
        "--output", help="The class-score output (default: the one float [N, C>=2] output)."
    ),
]


def _print_version(value: bool) -> None:
    if value:
        from inner_onnx import __version__

        stdout.print(f"inner-onnx {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Repair ONNX classifiers by optimizing only the neurons responsible (INNER)."""


def _finite(value: object) -> object:
    """NaN and infinities as null: strict JSON readers (jq, JavaScript) reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def print_json(payload: object) -> None:
    sys.stdout.write(json.dumps(_finite(payload), indent=2, allow_nan=False) + "\n")


@app.command()
def inspect(
    model_path: ModelArg,
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="Parity on this data, not random.")
    ] = None,
    output_name: OutputNameOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show producer, opsets, inputs/outputs, units, op support and torch-view parity."""
    from inner_onnx.present.summary import inspect_file

    info = inspect_file(model_path, data, output_name)
    if as_json:
        print_json(info)
        return
    stdout.print(
        f"[bold]{model_path}[/]  producer: {info['producer'] or '?'}  opsets: "
        + ", ".join(f"{k} {v}" for k, v in info["opsets"].items())
    )
    for kind in ("inputs", "outputs"):
        for value in info[kind]:
            stdout.print(
                f"{kind[:-1]:>6}: {value['name']} {value['shape']} {value['dtype']}"
                + (f" ({value['layout']})" if "layout" in value else "")
            )
    candidates = ", ".join(f"{c['name']} ({c['classes']})" for c in info["output_candidates"])
    stdout.print(
        f"class scores: {info['class_output'] or '?'}  (candidates: {candidates or 'none'})"
    )
    table = Table("unit", "op", "neurons", "parameters", "activation", title="units")
    for unit in info["units"]:
        table.add_row(
            unit["name"],
            unit["op"],
            str(unit["neurons"]),
            str(unit["parameters"]),
            unit["activation"] or "-",
        )
    stdout.print(table)
    stdout.print("ops: " + ", ".join(info["op_types"]))
    unsupported = info["unsupported_ops"]
    stdout.print(
        "unsupported ops: " + (", ".join(f"{u['op']} ({u['node']})" for u in unsupported) or "none")
    )
    if info["parity_max_abs_diff"] is not None:
        stdout.print(f"torch view vs onnxruntime, max abs diff: {info['parity_max_abs_diff']:.2e}")
    if info["parity_error"]:
        stdout.print(f"torch view vs onnxruntime: not measured ({info['parity_error']})")
    for problem in info["problems"]:
        stdout.print(f"[bold yellow]cannot repair:[/] {problem}", highlight=False)


# numpy refuses negative seeds and torch seeds past 2**63, deep inside a run: check up front.
SeedOpt = Annotated[
    int,
    typer.Option("--seed", min=0, max=2**32 - 1, help="Random seed (same seed, same result)."),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto | cpu | cuda (onnxruntime provider; CPU fallback).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")]
BadOpt = Annotated[
    Path | None, typer.Option("--bad", help="Bad samples (.npz): triggered inputs, true labels.")
]
TriggerOpt = Annotated[
    str | None,
    typer.Option(
        "--trigger", help="Stamp a trigger on the data: patch:F.npy@R,C | blend:F.npy,alpha=A"
    ),
]
AttackOpt = Annotated[
    str | None, typer.Option("--attack", help="fgsm:eps=E | pgd:eps=E,steps=S,alpha=A")
]
TargetOpt = Annotated[
    int | None, typer.Option("--target-label", help="The attacker's target class (backdoor).")
]
ClipOpt = Annotated[
    str | None, typer.Option("--clip", help="Valid input range LO,HI for attacks (default: data).")
]
GranularityOpt = Annotated[
    str | None,
    typer.Option(
        "--granularity",
        help="Routing gates per neuron or per weight element; default weight for backdoor, "
        "else neuron.",
    ),
]
LayersOpt = Annotated[
    int | None,
    typer.Option("--layers", help="Units to select (top-L); default 3, adversarial 4."),
]
ThreadsOpt = Annotated[
    int,
    typer.Option("--threads", help="Torch threads; results are byte-identical for a given count."),
]
TopKOpt = Annotated[
    int | None,
    typer.Option(
        "--top-k",
        help="Fault neurons (or weights) kept per unit; default 10% of it (adversarial 50%).",
    ),
]


def _reporter(quiet: bool):
    from inner_onnx.progress import Reporter

    return Reporter(quiet=quiet)


def _bad_source(scenario, bad, trigger, attack, target_label, clip):
    from inner_onnx.io.specs import parse_attack, parse_trigger
    from inner_onnx.measure.attacks import parse_clip
    from inner_onnx.scenarios.sources import BadSource

    return BadSource.from_options(
        scenario,
        bad,
        parse_trigger(trigger) if trigger else None,
        parse_attack(attack) if attack else None,
        target_label,
        parse_clip(clip) if clip else None,
    )


def _load_checked(model_path: Path, output_name: str | None = None):
    from inner_onnx.io.model import OnnxModel
    from inner_onnx.torchview import check_supported

    model = OnnxModel.load(model_path, output_name)
    model.check_repairable()
    check_supported(model.proto)
    return model


def _metrics_rows(before: dict, after: dict | None = None) -> Table:
    table = Table("metric", "before" if after is not None else "value")
    if after is not None:
        table.add_column("after")
    names = ["accuracy", "fairness_gap", "asr", "bad_accuracy", "robust_accuracy"]
    for name in names:
        if before.get(name) is None:
            continue
        row = [name, f"{before[name]:.4f}"]
        if after is not None:
            row.append(f"{after[name]:.4f}")
        table.add_row(*row)
    return table


@app.command()
def evaluate(
    model_path: ModelArg,
    data: DataOpt,
    bad: BadOpt = None,
    target_label: TargetOpt = None,
    attack: AttackOpt = None,
    clip: ClipOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    output_name: OutputNameOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Accuracy, per-class accuracy, fairness gap, ASR, bad-sample and robust accuracy."""
    from inner_onnx.io.data import load_npz
    from inner_onnx.io.model import OnnxModel
    from inner_onnx.io.specs import parse_attack
    from inner_onnx.measure.attacks import parse_clip
    from inner_onnx.measure.evaluation import EvaluationSet
    from inner_onnx.measure.evaluation import evaluate as run_evaluation
    from inner_onnx.runtime import Runner

    model = (
        _load_checked(model_path, output_name)
        if attack
        else OnnxModel.load(model_path, output_name)
    )
    spec = parse_attack(attack) if attack else None
    clip_range = parse_clip(clip) if clip else None
    if target_label is not None and not 0 <= target_label < model.num_classes:
        raise InputError(f"--target-label {target_label} out of range (0..{model.num_classes - 1})")
    if target_label is not None and bad is None:
        raise InputError("--target-label needs --bad (the triggered samples)")
    dataset = load_npz(data, model)
    bad_set = load_npz(bad, model) if bad else None
    evaluation = EvaluationSet(dataset, bad_set, target_label, spec, clip_range, str(data))
    metrics = run_evaluation(Runner(model, device), evaluation, seed, _reporter(quiet or as_json))
    payload = {"model": str(model_path), "data": str(data), **metrics.to_dict()}
    if as_json:
        print_json(payload)
        return
    stdout.print(_metrics_rows(payload))
    stdout.print(
        "per-class accuracy: "
        + ", ".join(
            f"{i}: {'-' if a is None else f'{a:.3f}'}"
            for i, a in enumerate(metrics.per_class_accuracy)
        )
    )


@app.command()
def localize(
    model_path: ModelArg,
    data: DataOpt,
    output: Annotated[Path, typer.Option("--out", "-o", help="Fault set JSON to write.")],
    bad: BadOpt = None,
    trigger: TriggerOpt = None,
    attack: AttackOpt = None,
    scenario: Annotated[
        str | None, typer.Option("--scenario", help="wrong: use the misclassified samples.")
    ] = None,
    target_label: TargetOpt = None,
    clip: ClipOpt = None,
    granularity: GranularityOpt = None,
    layers: LayersOpt = None,
    top_k: TopKOpt = None,
    threads: ThreadsOpt = 1,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    output_name: OutputNameOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Find the units and neurons that carry the bad behaviour; write them as JSON."""
    from inner_onnx.io.data import load_npz
    from inner_onnx.io.fileio import check_output_path
    from inner_onnx.localize.pipeline import localize as run_localize
    from inner_onnx.repair.pipeline import localize_settings_for
    from inner_onnx.runtime import Runner
    from inner_onnx.scenarios.sources import make_bad_samples
    from inner_onnx.torchview import TorchView

    model = _load_checked(model_path, output_name)
    source = _bad_source(scenario, bad, trigger, attack, target_label, clip)
    source.check(model)
    settings = localize_settings_for(
        source.scenario,
        seed=seed,
        layers=layers,
        granularity=granularity,
        top_k=top_k,
        threads=threads,
    )
    trigger_file = [source.trigger.path] if source.trigger is not None else []
    check_output_path(output, [model_path, data, *([bad] if bad else []), *trigger_file], force)
    clean = load_npz(data, model)
    reporter = _reporter(quiet or as_json)
    runner = Runner(model, device)
    view = TorchView(model.proto, outputs=[model.logits_name]).eval()
    bad_samples = make_bad_samples(source, model, clean, runner.predict, view, seed, reporter)
    result = run_localize(runner, view, clean, bad_samples.data, settings, reporter)
    result.faults.save(output, model)
    payload = result.faults.to_dict(model)
    if as_json:
        print_json({"output": str(output), **payload})
        return
    table = Table(
        "unit",
        "score",
        "probe acc.",
        "selected",
        "top neurons (votes)",
        title="layer selection and routing",
    )
    by_unit: dict[str, list[str]] = {}
    for neuron in result.faults.neurons:
        by_unit.setdefault(neuron.unit, []).append(f"{neuron.index} ({neuron.votes})")
    for unit in result.faults.units:
        table.add_row(
            unit.name,
            f"{unit.score:.3f}",
            f"{unit.probe_accuracy:.3f}",
            "yes" if unit.selected else "",
            ", ".join(by_unit.get(unit.name, [])[:8]),
        )
    stdout.print(table)
    stdout.print(
        f"{len(result.faults.neurons)} fault neurons covering "
        f"{payload['weights_covered']} of {payload['weights_total']} weights "
        f"({100 * payload['weights_covered_fraction']:.2f}%) -> {output}"
    )


def _print_repair(summary: dict) -> None:
    stdout.print(_metrics_rows(summary["before"], summary["after"]))
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
    stdout.print(
        f"[bold green]repaired model written to {summary['output']}[/] (checked, verified in "
        "onnxruntime)"
    )
    if summary.get("report"):
        stdout.print(f"report: {summary['report']}")


def run_repair(
    model_path: Path,
    data: Path,
    scenario: str,
    output: Path,
    *,
    bad=None,
    trigger=None,
    attack=None,
    target_label=None,
    clip=None,
    faults_path=None,
    method="inner",
    seed=0,
    granularity=None,
    layers=None,
    top_k=None,
    epochs=None,
    val_fraction=0.2,
    threads=1,
    eval_data=None,
    eval_bad=None,
    report_dir=None,
    device="auto",
    output_name=None,
    force=False,
    quiet=False,
) -> dict:
    """Parse, check everything the user gave, repair, write atomically; returns the summary."""
    from inner_onnx.io.data import load_npz
    from inner_onnx.io.fileio import check_output_path, write_bytes_atomic
    from inner_onnx.localize.faults import load_faults
    from inner_onnx.measure.evaluation import EvaluationSet
    from inner_onnx.repair.pipeline import repair, settings_for

    model = _load_checked(model_path, output_name)
    source = _bad_source(scenario, bad, trigger, attack, target_label, clip)
    source.check(model)
    settings = settings_for(
        source.scenario,
        method=method,
        seed=seed,
        epochs=epochs,
        layers=layers,
        granularity=granularity,
        top_k=top_k,
        validation_fraction=val_fraction,
        threads=threads,
    )
    if faults_path is not None and method != "inner":
        raise InputError("--faults applies only to --method inner")
    trigger_file = [source.trigger.path] if source.trigger is not None else []
    inputs = [p for p in (model_path, data, bad, faults_path, eval_data, eval_bad) if p]
    inputs += trigger_file
    check_output_path(output, inputs, force)
    if report_dir is not None:
        report_dir = Path(report_dir)
        if report_dir.exists() and not report_dir.is_dir():
            raise InputError(f"report path is a file, not a folder: {report_dir}")
        if not report_dir.parent.resolve().is_dir():
            raise InputError(f"report folder's parent does not exist: {report_dir}")
        for name in ("report.html", "report.json"):
            if (report_dir / name).exists():
                check_output_path(report_dir / name, inputs, force)
    clean = load_npz(data, model)
    faults = load_faults(faults_path, model) if faults_path else None
    evaluation = None
    if eval_data is not None:
        target = source.target_label
        bad_eval = load_npz(eval_bad, model) if eval_bad else None
        evaluation = EvaluationSet(
            load_npz(eval_data, model), bad_eval, target, source.attack, source.clip, str(eval_data)
        )
    elif eval_bad is not None:
        raise InputError("--eval-bad needs --eval")
    reporter = _reporter(quiet)
    result = repair(model, clean, source, settings, faults, evaluation, device, reporter)
    write_bytes_atomic(output, result.proto.SerializeToString())
    summary = {"output": str(output), **result.summary(), "seconds": round(result.seconds, 2)}
    if report_dir is not None:
        from inner_onnx.present.report import write_report

        summary["report"] = str(write_report(Path(report_dir), model, result, summary))
    return summary


@app.command("repair")
def repair_command(
    model_path: ModelArg,
    data: DataOpt,
    scenario: Annotated[str, typer.Option("--scenario", help="backdoor | adversarial | wrong")],
    output: Annotated[Path, typer.Option("--out", "-o", help="Repaired ONNX model to write.")],
    bad: BadOpt = None,
    trigger: TriggerOpt = None,
    attack: AttackOpt = None,
    target_label: TargetOpt = None,
    clip: ClipOpt = None,
    faults: Annotated[
        Path | None, typer.Option("--faults", help="Fault set from `localize` (else found now).")
    ] = None,
    method: Annotated[
        str, typer.Option("--method", help="inner (fault neurons) | ft (all unit weights).")
    ] = "inner",
    seed: SeedOpt = 0,
    granularity: GranularityOpt = None,
    layers: LayersOpt = None,
    top_k: TopKOpt = None,
    threads: ThreadsOpt = 1,
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs",
            help="Epochs; default 30 (backdoor: the last 10 averaged), wrong 20 (early stop).",
        ),
    ] = None,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="Share of -d held out for validation.")
    ] = 0.2,
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
    """Repair the model and write a verified ONNX file with only the fault neurons changed."""
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


@app.command()
def demo(
    output_dir: Annotated[
        Path, typer.Option("--output-dir", help="Where the repaired model and report go.")
    ] = Path("demo-output"),
    quiet: QuietOpt = False,
) -> None:
    """Repair the bundled backdoored PyTorch sample and show before/after."""
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
        eval_data=sample / "eval.npz",
        eval_bad=sample / "eval_bad.npz",
        report_dir=output_dir / "report",
        force=True,
        quiet=quiet,
    )
    _print_repair(summary)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main() -> None:
    """Console-script entry: maps every failure to one line and an exit status."""
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    warnings.formatwarning = lambda message, *_args, **_kw: f"warning: {message}\n"
    try:
        status = app(standalone_mode=False)
    except InputError as exc:
        err.print(f"error: {_one_line(str(exc))}", markup=False)
        sys.exit(2)
    except typer.TyperException as exc:
        # Usage errors (unknown option, missing argument, bad value) carry exit status 2;
        # the bare command has already printed its help.
        if exc.format_message():
            err.print(f"error: {_one_line(exc.format_message())}", markup=False)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("INNER_ONNX_DEBUG"):
            raise
        err.print(f"internal error: {type(exc).__name__}: {_one_line(str(exc))}", markup=False)
        sys.exit(1)
    if status == 130:
        # typer turns Ctrl-C inside a command into a bare exit status 130.
        err.print("interrupted", markup=False)
    sys.exit(status if isinstance(status, int) else 0)
