"""Repair time of INNER over plain fine-tuning of all weights (target <= 2x), and the demo.

Both methods repair samples/torch_badnets (clean.npz + bad.npz, backdoor, target
label 0) through `inner_onnx.repair.pipeline.repair` with the backdoor scenario's settings
(`settings_for("backdoor")`: the same loss, mixup terms and weight averaging for
both), the same data, the same fixed number of epochs and early stopping disabled
(patience beyond the epochs, an ASR target no model can reach), in interleaved
repetitions; medians of wall time.
INNER's time includes its localization (probes, layer selection, routing); a
reporter that times each progress step gives the breakdown. Then `inner-onnx
demo` runs once, end to end, in a subprocess (target <= 60 s on 2 cores).

    .venv/bin/python -m benchmarks.repair_speed [--repeats 3] [--epochs 30]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from benchmarks.capture import machine
from inner_onnx.context import RunContext
from inner_onnx.io.data import load_npz
from inner_onnx.io.model import OnnxModel
from inner_onnx.progress import Advance, Reporter
from inner_onnx.repair.pipeline import repair, settings_for
from inner_onnx.scenarios import BadSource

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "torch_badnets"
CLI = Path(sys.executable).with_name("inner-onnx")
TARGET_LABEL = 0
OTHER = "other (setup, evaluation, write-back, verify)"


class StepTimer(Reporter):
    """A silent reporter that times each named step; a step run again gets its own entry."""

    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, description: str, total: int) -> Iterator[Advance]:
        runs = sum(name.split(" (run ")[0] == description for name in self.seconds)
        name = description if not runs else f"{description} (run {runs + 1})"
        started = time.perf_counter()
        try:
            yield lambda _n=1: None
        finally:
            self.seconds[name] = time.perf_counter() - started


def timed_repair(method: str, epochs: int) -> tuple[float, dict[str, float], int]:
    """Wall seconds, seconds per step, and epochs actually run, for one repair."""
    model = OnnxModel.load(SAMPLE / "model.onnx")
    clean = load_npz(SAMPLE / "clean.npz", model)
    source = BadSource("backdoor", SAMPLE / "bad.npz", target_label=TARGET_LABEL)
    settings = settings_for("backdoor", method=method, epochs=epochs)
    settings = replace(
        settings, stopping=replace(settings.stopping, patience=epochs + 1, asr_target=-1.0)
    )
    timer = StepTimer()
    started = time.perf_counter()
    result = repair(model, clean, source, settings, RunContext(device="cpu"), reporter=timer)
    seconds = time.perf_counter() - started
    return seconds, dict(timer.seconds), len(result.outcome.history) - 1


def demo_seconds() -> float:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        # The demo prints its before/after table even with -q; only the time matters here.
        command = [str(CLI), "demo", "--output-dir", folder, "-q"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    print(f"Machine: {machine()}; repairs pin torch to 1 thread")
    methods = {"inner": "INNER (incl. localization)", "ft": "fine-tune all"}
    seconds: dict[str, list[float]] = {method: [] for method in methods}
    # step -> method -> seconds per run
    steps: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for method in methods:  # warm-up: first-call costs (imports, kernels) land in no timing
        timed_repair(method, 1)
    for _ in range(args.repeats):
        for method in methods:
            total, by_step, epochs_run = timed_repair(method, args.epochs)
            if epochs_run != args.epochs:
                raise RuntimeError(f"{method} ran {epochs_run} epochs, not {args.epochs}")
            seconds[method].append(total)
            by_step[OTHER] = total - sum(by_step.values())
            for name, value in by_step.items():
                steps[name][method].append(value)
    inner, ft = (statistics.median(seconds[method]) for method in methods)
    print(
        f"\nsamples/torch_badnets, backdoor (target {TARGET_LABEL}), {args.epochs} epochs, "
        f"no early stop, median of {args.repeats} interleaved runs\n"
    )
    print("| method | wall time | runs |\n|---|---|---|")
    for method, label in methods.items():
        runs = ", ".join(f"{value:.1f}" for value in seconds[method])
        print(f"| {label} | {statistics.median(seconds[method]):.2f} s | {runs} |")
    print(f"\nINNER / fine-tune all: {inner / ft:.2f}x\n")
    print("Time by step, seconds (median):\n\n| step | INNER | fine-tune all |\n|---|---|---|")
    for name in sorted(steps, key=lambda step: step == OTHER):
        cells = [
            f"{statistics.median(steps[name][m]):.2f}" if steps[name][m] else "-" for m in methods
        ]
        print(f"| {name} | {' | '.join(cells)} |")
    if not args.skip_demo:
        print(f"\n`inner-onnx demo --output-dir <tmp> -q`: {demo_seconds():.1f} s end to end")


if __name__ == "__main__":
    main()
