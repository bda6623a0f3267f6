"""Activation capture: onnxruntime throughput vs the torch view, and peak memory vs N.

Throughput: `Runner.capture` (onnxruntime, every unit's activation marked as a
graph output, pooled to [N, C] batch by batch) against the torch view running
the same graph under `torch.no_grad` with the same activations captured and
pooled by `pool_activation_torch`; same data, same batch size, interleaved
repetitions, medians. The ratio is onnxruntime's samples/s over the view's.

Memory: each N runs in a fresh subprocess that resets its RSS high-water mark
(/proc/self/clear_refs) just before the capture and reads VmHWM after it. The
growth is the pooled outputs (N x channels floats) plus what does not depend on N
(one batch of activations, the session's buffers); capture streams, so the rest
must not grow with N.

    .venv/bin/python -m benchmarks.capture [--repeats 7] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from inner_onnx.io.model import OnnxModel
from inner_onnx.runtime import Runner, pool_activation_torch
from inner_onnx.torchview import TorchView

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "torch_badnets"
MEMORY_SIZES = (2_000, 10_000)


def load() -> tuple[OnnxModel, np.ndarray]:
    model = OnnxModel.load(SAMPLE / "model.onnx")
    with np.load(SAMPLE / "eval.npz") as data:
        return model, data["x"]


def tiled(x: np.ndarray, count: int) -> np.ndarray:
    """`count` samples made by repeating `x` (the capture's cost does not depend on values)."""
    return np.resize(x, (count, *x.shape[1:])).astype(np.float32)


def torch_capture(
    model: OnnxModel, view: TorchView, x: np.ndarray, batch_size: int
) -> dict[str, np.ndarray]:
    """The torch view's twin of `Runner.capture`: pooled activations into [N, C] arrays."""
    names = list(dict.fromkeys(unit.activation for unit in model.units))
    pooled = {unit.name: np.empty((len(x), unit.neurons), np.float32) for unit in model.units}
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            rows = slice(start, start + batch_size)
            _, captured = view(torch.from_numpy(x[rows]), capture=names)
            for unit in model.units:
                pooled[unit.name][rows] = pool_activation_torch(
                    captured[unit.activation], unit
                ).numpy()
    return pooled


def throughput(repeats: int, batch_size: int, samples: int) -> dict[str, object]:
    model, eval_x = load()
    x = tiled(eval_x, samples)
    runner = Runner(model, "cpu")
    view = TorchView(model.proto).eval()
    runs = {
        "onnxruntime": lambda: runner.capture(x, model.units, batch_size).pooled,
        "torch view": lambda: torch_capture(model, view, x, batch_size),
    }
    first = {name: run() for name, run in runs.items()}  # warm-up: sessions, plans
    difference = max(
        float(np.abs(first["onnxruntime"][u.name] - first["torch view"][u.name]).max())
        for u in model.units
    )
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    return {
        "units": len(model.units),
        "channels": sum(unit.neurons for unit in model.units),
        "samples_per_s": {name: samples / median for name, median in medians.items()},
        "ratio": medians["torch view"] / medians["onnxruntime"],
        "max_abs_difference": difference,
    }


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_child(count: int, batch_size: int) -> None:
    """Print the capture's peak RSS growth for `count` samples as JSON (run in a subprocess)."""
    model, eval_x = load()
    x = tiled(eval_x, count)
    runner = Runner(model, "cpu")
    runner.capture(x[:batch_size], model.units, batch_size)  # session and arenas built here
    # Writing 5 resets VmHWM to the current RSS (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")
    before = status_kib("VmRSS")
    capture = runner.capture(x, model.units, batch_size)
    peak = status_kib("VmHWM")
    output_bytes = capture.scores.nbytes + sum(a.nbytes for a in capture.pooled.values())
    print(
        json.dumps(
            {"samples": count, "growth_kib": peak - before, "output_kib": output_bytes // 1024}
        )
    )


def memory(batch_size: int) -> list[dict[str, int]]:
    rows = []
    for count in MEMORY_SIZES:
        command = [sys.executable, __file__, "--memory-child", str(count)]
        command += ["--batch-size", str(batch_size)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout))
    return rows


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({model}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), onnxruntime {ort.__version__}, load average {load}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=2_000, help="samples per throughput run")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.batch_size)
        return
    print(f"Machine: {machine()}")
    result = throughput(args.repeats, args.batch_size, args.samples)
    rate = result["samples_per_s"]
    print(
        f"\nThroughput: {args.samples} samples of samples/torch_badnets, batch {args.batch_size}, "
        f"{result['units']} units ({result['channels']} channels), median of {args.repeats}; "
        f"max |onnxruntime - torch view| {result['max_abs_difference']:.1e}\n"
    )
    print("| capture | samples/s |\n|---|---|")
    for name, value in rate.items():
        print(f"| {name} | {value:,.0f} |")
    print(f"\nonnxruntime / torch view throughput: {result['ratio']:.2f}x")
    print("\nPeak RSS growth during the capture (fresh process each):\n")
    print("| samples | peak RSS growth | of which output arrays | rest |\n|---|---|---|---|")
    for row in memory(args.batch_size):
        rest = row["growth_kib"] - row["output_kib"]
        print(
            f"| {row['samples']:,} | {row['growth_kib'] / 1024:.1f} MiB "
            f"| {row['output_kib'] / 1024:.1f} MiB | {rest / 1024:.1f} MiB |"
        )


if __name__ == "__main__":
    main()
