"""The `inner-onnx` application: the Typer app, shared printing helpers, and the entry point
that maps every failure to one line and an exit status. The commands live one per module.

Exit status: 0 done; 3 a finding the pipeline must act on (repair: targets missed or
nothing changed); 2 bad input or usage (one line on stderr, no traceback); 1 anything
else (one line; INNER_ONNX_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from inner_onnx.errors import InputError

if TYPE_CHECKING:
    from inner_onnx.io.model import OnnxModel
    from inner_onnx.progress import Reporter
    from inner_onnx.scenarios import BadSource

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Repair ONNX classifiers (backdoors, adversarial robustness, wrong predictions) "
    "by optimizing only the neurons responsible (INNER).",
)
stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True, highlight=False)


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


def reporter(quiet: bool) -> Reporter:
    from inner_onnx.progress import Reporter

    return Reporter(quiet=quiet)


def bad_source_from(
    scenario: str | None,
    bad: Path | None,
    trigger: str | None,
    attack: str | None,
    target_label: int | None,
    clip: str | None,
) -> BadSource:
    """The bad-sample options as parsed specs, checked for consistency."""
    from inner_onnx.io.specs import parse_attack, parse_trigger
    from inner_onnx.measure.attacks import parse_clip
    from inner_onnx.scenarios import bad_source

    return bad_source(
        scenario,
        bad,
        parse_trigger(trigger) if trigger else None,
        parse_attack(attack) if attack else None,
        target_label,
        parse_clip(clip) if clip else None,
    )


def load_checked(model_path: Path, output_name: str | None = None) -> OnnxModel:
    """The model, refused up front when the torch view cannot run a node its class scores
    need (a label branch beside them, a ZipMap, is left to onnxruntime)."""
    from inner_onnx.io.model import OnnxModel
    from inner_onnx.torchview import check_supported

    model = OnnxModel.load(model_path, output_name)
    model.check_repairable()
    check_supported(model.proto, [model.output_name])
    return model


def metrics_rows(before: dict, after: dict | None = None) -> Table:
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


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main() -> None:
    """Console-script entry: maps every failure to one line and an exit status."""
    warnings.formatwarning = lambda message, *_args, **_kw: f"warning: {message}\n"
    try:
        status = app(standalone_mode=False)
    except InputError as exc:
        stderr.print(f"error: {_one_line(str(exc))}", markup=False)
        sys.exit(2)
    except typer.TyperException as exc:
        # Usage errors (unknown option, missing argument, bad value) carry exit status 2;
        # the bare command has already printed its help.
        if exc.format_message():
            stderr.print(f"error: {_one_line(exc.format_message())}", markup=False)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        stderr.print("interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("INNER_ONNX_DEBUG"):
            raise
        stderr.print(f"internal error: {type(exc).__name__}: {_one_line(str(exc))}", markup=False)
        sys.exit(1)
    if status == 130:
        # typer turns Ctrl-C inside a command into a bare exit status 130.
        stderr.print("interrupted", markup=False)
    sys.exit(status if isinstance(status, int) else 0)
