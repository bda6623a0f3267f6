"""Trigger scan (Neural Cleanse) on model folders: flagged classes, the true target's anomaly index,
seconds.

Both anomaly statistics come from the same scan (the masks do not depend on it):
the reference's MAD on raw mask L1 norms, and the MAD on log norms
(`NeuralCleanseSettings.log_norms`).

A model folder holds `model.onnx` and `clean.npz` (like samples/*); the scan sees
only clean.npz. The true target, when the folder's model is backdoored, is given
on the command line as FOLDER=TARGET (the samples' backdoors target class 0), so
nothing the scan computes depends on it.

    .venv/bin/python -m benchmarks.scan samples/torch_badnets=0 samples/keras_badnets=0 \
        samples/torch_mnist_clean samples/torch_weak_class [--threads 2] [--json OUT.json]
        [--triggers DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import end_line, start_line
from inner_onnx.io.fileio import write_json_atomic
from inner_onnx.io.model import OnnxModel
from inner_onnx.scan import ScanResult, scan
from inner_onnx.scan.artifacts import write_triggers
from inner_onnx.scan.neural_cleanse import anomaly_indices


def parse_folder(text: str) -> tuple[Path, int | None]:
    folder, _, target = text.partition("=")
    return Path(folder), int(target) if target else None


def run(folder: Path, seed: int) -> ScanResult:
    model = OnnxModel.load(folder / "model.onnx")
    view = model.torch_view(frozen=True)
    with np.load(folder / "clean.npz") as data:
        x, y = data["x"], data["y"]
    return scan(view, x, y, model.input.layout, model.num_classes, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="FOLDER or FOLDER=TRUE_TARGET")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every figure here, model by model")
    parser.add_argument("--triggers", type=Path, help="write each model's reversed triggers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(start_line(args.threads), flush=True)
    print(
        "| model | true target | flagged (L1) | index of target (L1) | flagged (log L1) "
        "| index of target (log L1) | target L1 | median L1 | wall s | CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    records = []
    for text in args.folders:
        folder, target = parse_folder(text)
        start, cpu_start = time.perf_counter(), time.process_time()
        result = run(folder, args.seed)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        labels = [c.label for c in result.classes]
        norms = [c.mask_l1 for c in result.classes]
        cells = []
        for log_norms in (False, True):
            indices = dict(zip(labels, anomaly_indices(norms, log_norms) or []))
            threshold = result.settings.anomaly_threshold
            flagged = sorted((c for c in indices if indices[c] > threshold), key=indices.get)
            cells.append(str(flagged[::-1]) if flagged else "none")
            cells.append("-" if target is None else f"{indices[target]:.2f}")
        cells.append("-" if target is None else f"{norms[labels.index(target)]:.1f}")
        cells.append(f"{np.median(norms):.1f}")
        cells += [f"{seconds:.1f}", f"{cpu:.1f}"]
        shown = "-" if target is None else target
        print(f"| {folder.name} | {shown} | {' | '.join(cells)} |", flush=True)
        records.append(
            {
                "folder": str(folder),
                "true_target": target,
                "wall_seconds": seconds,
                "cpu_seconds": cpu,
                **result.to_dict(),
            }
        )
        if args.json:
            write_json_atomic(args.json, records)
        if args.triggers:
            write_triggers(args.triggers / folder.name, result)
    print(end_line())


if __name__ == "__main__":
    main()
