"""`inner-onnx localize`: the units and neurons that carry the bad behaviour, as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from inner_onnx.cli.app import app, bad_source_from, load_checked, print_json, reporter, stdout
from inner_onnx.cli.options import (
    AttackOpt,
    BadOpt,
    ClipOpt,
    DataOpt,
    DeviceOpt,
    FaultRuleOpt,
    ForceOpt,
    GranularityOpt,
    JsonOpt,
    LayersOpt,
    ModelArg,
    OutputNameOpt,
    ProbeOpt,
    QuietOpt,
    SeedOpt,
    TargetOpt,
    ThreadsOpt,
    TopKOpt,
    TriggerOpt,
)
from inner_onnx.localize.faults import FaultSet


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
    fault_rule: FaultRuleOpt = None,
    probe: ProbeOpt = None,
    threads: ThreadsOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    output_name: OutputNameOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Find the units and neurons that carry the bad behaviour; write them as JSON."""
    from inner_onnx.context import RunContext
    from inner_onnx.io.data import load_npz
    from inner_onnx.io.fileio import check_output_path
    from inner_onnx.localize.pipeline import localize as run_localize
    from inner_onnx.repair.pipeline import settings_for
    from inner_onnx.runtime import Runner
    from inner_onnx.scenarios import scenario_named
    from inner_onnx.scenarios.base import Sampler

    model = load_checked(model_path, output_name)
    source = bad_source_from(scenario, bad, trigger, attack, target_label, clip)
    source.check(model)
    # the scenario's localization defaults, as `repair` uses them (so `repair --faults`
    # gets the set repair would find)
    settings = settings_for(
        source.scenario,
        layers=layers,
        granularity=granularity,
        top_k=top_k,
        fault_rule=fault_rule,
        probe=probe,
    ).localize
    context = RunContext(seed, threads, device)
    trigger_file = list(source.trigger.files) if source.trigger is not None else []
    check_output_path(output, [model_path, data, *([bad] if bad else []), *trigger_file], force)
    clean = load_npz(data, model)
    progress = reporter(quiet or as_json)
    runner = Runner(model, context.device)
    view = model.torch_view(device=context.torch_device)
    scenario = scenario_named(source.scenario)
    with context.pinned():
        sizes = runner.batch_sizes(clean.x)
        sampler = Sampler(model, runner.predict, view, seed, progress, sizes)
        bad_samples = scenario.bad_samples(source, clean, sampler)
        result = run_localize(
            runner, view, clean, bad_samples.data, settings, seed, progress, sizes
        )
    result.faults.save(output, model)
    payload = result.faults.to_dict(model)
    if as_json:
        print_json({"output": str(output), **payload})
        return
    _print_faults(result.faults, payload, output)


def _print_faults(faults: FaultSet, payload: dict, output: Path) -> None:
    table = Table(
        "unit",
        "score",
        "probe acc.",
        "selected",
        "top neurons (votes)",
        title="layer selection and routing",
    )
    by_unit: dict[str, list[str]] = {}
    for neuron in faults.neurons:
        by_unit.setdefault(neuron.unit, []).append(f"{neuron.index} ({neuron.votes})")
    for unit in faults.units:
        table.add_row(
            unit.name,
            f"{unit.score:.3f}",
            f"{unit.probe_accuracy:.3f}",
            "yes" if unit.selected else "",
            ", ".join(by_unit.get(unit.name, [])[:8]),
        )
    stdout.print(table)
    stdout.print(
        f"{len(faults.neurons)} fault neurons covering "
        f"{payload['weights_covered']} of {payload['weights_total']} weights "
        f"({100 * payload['weights_covered_fraction']:.2f}%) -> {output}"
    )
