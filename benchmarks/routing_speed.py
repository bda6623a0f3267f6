"""Neuron routing with the gates scaling the unit's output against gated weights per sample.

For every Conv, ConvTranspose, Gemm and MatMul unit of each model folder (model.onnx and
clean.npz, like samples/*), a linear probe is fitted on the unit's pooled activations of
the clean samples, and the first `--samples` of them are routed at neuron granularity
with the default routing settings twice: by `UnitRouter`'s output-scaled path (the one
routing takes for these units) and by its general path, a gated weight per sample under
`torch.func.vmap` (`scales_output` switched off). The two run alternately, `--repeats`
times each; the table gives the medians, their ratio and whether the votes are the same.

    .venv/bin/python -m benchmarks.routing_speed samples/torch_weak_class \
        samples/torch_badnets [--samples 100] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import end_line, start_line
from inner_onnx.io.model import OnnxModel
from inner_onnx.localize.probes import LinearProbe
from inner_onnx.localize.routing import RoutingSettings, UnitRouter, routing_chunk


def timed_votes(router: UnitRouter, inputs: torch.Tensor, chunk: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    votes = router.votes(inputs, chunk)
    return time.perf_counter() - start, votes


def unit_rows(folder: Path, samples: int, repeats: int) -> list[str]:
    model = OnnxModel.load(folder / "model.onnx")
    with np.load(folder / "clean.npz") as data:
        x, y = torch.from_numpy(data["x"][:samples]), data["y"][:samples]
    view = model.torch_view(frozen=True)
    settings = RoutingSettings(granularity="neuron")
    rows = []
    for unit in model.units:
        if unit.op == "Gather":
            continue
        probe = LinearProbe(model.num_classes)
        fast = UnitRouter(model, unit, probe, settings)
        if not fast.scales_output:
            continue
        with torch.no_grad():
            _, captured = view(x, capture=[unit.activation, fast.input_name])
        probe.fit(probe.torch_features(captured[unit.activation], unit).numpy(), y)
        general = UnitRouter(model, unit, probe, settings)
        general.scales_output = False
        inputs = captured[fast.input_name]
        chunk = routing_chunk(general.gate_elements(), inputs[0].numel())
        times: dict[str, list[float]] = {"fast": [], "general": []}
        votes: dict[str, np.ndarray] = {}
        for _ in range(repeats):
            for name, router in (("fast", fast), ("general", general)):
                seconds, votes[name] = timed_votes(router, inputs, chunk)
                times[name].append(seconds)
        fast_s, general_s = (statistics.median(times[n]) for n in ("fast", "general"))
        same = "yes" if np.array_equal(votes["fast"], votes["general"]) else "NO"
        rows.append(
            f"| {folder.name} | {unit.name} ({unit.op}) | {unit.neurons} | "
            f"{general_s * 1000:.1f} | {fast_s * 1000:.1f} | {general_s / fast_s:.1f}× | {same} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--samples", type=int, default=100, help="routed samples (the default)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        start_line(args.threads) + f"; {args.samples} samples, medians of {args.repeats}",
        flush=True,
    )
    print(
        "| model | unit | neurons | gated weights (ms) | output-scaled (ms) | ratio | same votes |"
    )
    print("|---|---|---|---|---|---|---|")
    for folder in args.folders:
        for row in unit_rows(folder, args.samples, args.repeats):
            print(row, flush=True)
    print(end_line())


if __name__ == "__main__":
    main()
