"""`inner-onnx inspect`: what the model is and whether the tool can run it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from inner_onnx.cli.app import app, print_json, stdout
from inner_onnx.cli.options import JsonOpt, ModelArg, OutputNameOpt


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
