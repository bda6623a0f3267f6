"""Options shared by the commands; help texts that name defaults read them from the
scenario registry, so they cannot drift from what a run uses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from inner_onnx.repair.methods import METHODS
from inner_onnx.repair.settings import RepairSettings
from inner_onnx.scenarios import SCENARIOS


def per_scenario(describe: Callable[[RepairSettings], object]) -> str:
    """'backdoor X, adversarial Y, wrong Z' from each scenario's default settings."""
    return ", ".join(f"{name} {describe(s.default_settings())}" for name, s in SCENARIOS.items())


def _epochs(settings: RepairSettings) -> str:
    averaged = settings.training.average_epochs
    return f"{settings.training.epochs}" + (f" (last {averaged} averaged)" if averaged else "")


def _top_k(settings: RepairSettings) -> str:
    return f"{100 * settings.localize.routing.top_fraction:.0f}%"


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
# numpy refuses negative seeds and torch seeds past 2**63, deep inside a run: check up front.
SeedOpt = Annotated[
    int,
    typer.Option("--seed", min=0, max=2**32 - 1, help="Random seed (same seed, same result)."),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device", help="auto | cpu | cuda: onnxruntime and the torch side (CPU fallback)."
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")]
BadOpt = Annotated[
    Path | None, typer.Option("--bad", help="Bad samples (.npz): triggered inputs, true labels.")
]
TriggerOpt = Annotated[
    str | None,
    typer.Option(
        "--trigger",
        help="Stamp a trigger: patch:F.npy@R,C | blend:F.npy,alpha=A | token:ID@POS,...",
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
ScenarioOpt = Annotated[
    str,
    typer.Option("--scenario", help=" | ".join(f"{n}: {s.summary}" for n, s in SCENARIOS.items())),
]
DEFAULT_METHOD = RepairSettings().method
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help="auto: try "
        + ", ".join(RepairSettings().auto.candidates)
        + " (fewest changeable values first) and keep the smallest about as sure to meet "
        "the validation targets as the surest, else the best | "
        + " | ".join(f"{n}: {m.summary}" for n, m in METHODS.items()),
    ),
]
GranularityOpt = Annotated[
    str | None,
    typer.Option(
        "--granularity",
        help="Routing gates per neuron or per weight element; default "
        + per_scenario(lambda s: s.localize.routing.granularity)
        + ".",
    ),
]
LayersOpt = Annotated[
    int | None,
    typer.Option(
        "--layers",
        help="Units to select (top-L); default " + per_scenario(lambda s: s.localize.layers) + ".",
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help="Torch threads (default: every core); results are byte-identical for a given "
        "count, which the provenance records.",
    ),
]
TopKOpt = Annotated[
    int | None,
    typer.Option(
        "--top-k",
        help="Fault neurons (or weights) kept per unit by the top fault rule (implies "
        "--fault-rule top); without it the top rule keeps this share: "
        + per_scenario(_top_k)
        + ".",
    ),
]
EpochsOpt = Annotated[
    int | None,
    typer.Option("--epochs", help="Epochs; default " + per_scenario(_epochs) + "."),
]
ValFractionOpt = Annotated[
    float | None,
    typer.Option(
        "--val-fraction",
        help="Share of -d held out for validation; default "
        + per_scenario(lambda s: s.stopping.validation_fraction)
        + ".",
    ),
]
FaultRuleOpt = Annotated[
    str | None,
    typer.Option(
        "--fault-rule",
        help="union: every neuron or weight with a routing vote (the reference code's rule); "
        "majority: those on at least half the routed samples' routes; top: the most-voted "
        "per unit (--top-k). Default union; --top-k alone means top.",
    ),
]
ProbeOpt = Annotated[
    str | None,
    typer.Option(
        "--probe",
        help="linear: a logistic regression on each unit's channel means; conv: the reference "
        "code's small conv head on the unpooled map of 2-D conv units (linear elsewhere; "
        "slower). Default linear.",
    ),
]
