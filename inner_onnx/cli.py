"""The `inner-onnx` command line: parses options, calls the library, prints results.

Exit status: 0 done; 2 bad input or usage (one line on stderr, no traceback);
1 anything else (one line; INNER_ONNX_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import json
import os
import sys
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
DataOpt = Annotated[Path, typer.Option("--data", "-d", help=".npz with x (float32) and y (int).")]


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


def print_json(payload: object) -> None:
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


@app.command()
def inspect(
    model_path: ModelArg,
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="Parity on this data, not random.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show producer, opsets, inputs/outputs, units, op support and torch-view parity."""
    from inner_onnx.data import load_npz
    from inner_onnx.model import OnnxModel
    from inner_onnx.summary import describe

    model = OnnxModel.load(model_path)
    dataset = load_npz(data, model) if data else None
    info = describe(model, dataset)
    if as_json:
        print_json(info)
        return
    stdout.print(
        f"[bold]{model_path}[/]  producer: {info['producer'] or '?'}  opsets: "
        + ", ".join(f"{k} {v}" for k, v in model.opsets.items())
    )
    for kind in ("inputs", "outputs"):
        for value in info[kind]:
            stdout.print(
                f"{kind[:-1]:>6}: {value['name']} {value['shape']} {value['dtype']}"
                + (f" ({value['layout']})" if "layout" in value else "")
            )
    table = Table("unit", "op", "neurons", "parameters", "activation", title="units")
    for unit in model.units:
        table.add_row(unit.name, unit.op, str(unit.neurons), str(unit.parameters), unit.activation)
    stdout.print(table)
    stdout.print("ops: " + ", ".join(info["op_types"]))
    unsupported = info["unsupported_ops"]
    stdout.print(
        "unsupported ops: " + (", ".join(f"{u['op']} ({u['node']})" for u in unsupported) or "none")
    )
    if info["parity_max_abs_diff"] is not None:
        stdout.print(f"torch view vs onnxruntime, max abs diff: {info['parity_max_abs_diff']:.2e}")


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main() -> None:
    """Console-script entry: maps every failure to one line and an exit status."""
    err = Console(stderr=True, soft_wrap=True, highlight=False)
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
    sys.exit(status if isinstance(status, int) else 0)
