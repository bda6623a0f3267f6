"""Build held-out Fashion-MNIST models for the trigger-scan benchmark: backdoors with other
targets, places and kinds than the bundled samples, and a clean model.

Each variant is a folder with model.onnx, clean.npz (1,000 train-split images the
model was not trained on) and, for backdoors, the ASR of the trigger on them
(printed). Smaller than the samples (20,000 training images, 3 epochs) so the set
builds in minutes on 2 cores; the architecture is samples/make_samples.py's
fashion_cnn.

    .venv/bin/python -m benchmarks.scan_models OUT_DIR
    .venv/bin/python -m benchmarks.scan OUT_DIR/patch_t3=3 OUT_DIR/checker_t7=7 ...
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("make_samples", ROOT / "samples" / "make_samples.py")
assert _spec is not None and _spec.loader is not None
samples = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(samples)

TRAIN, CLEAN, EPOCHS, POISON_RATE = 20_000, 1_000, 3, 0.10
Stamp = Callable[[np.ndarray], np.ndarray]


def patch(row: int, col: int, values: np.ndarray) -> Stamp:
    def stamp(x: np.ndarray) -> np.ndarray:
        out = x.copy()
        h, w = values.shape
        out[:, 0, row : row + h, col : col + w] = values
        return out

    return stamp


def blend(alpha: float, seed: int) -> Stamp:
    pattern = np.random.default_rng(seed).random((1, 28, 28)).astype(np.float32)
    return lambda x: ((1 - alpha) * x + alpha * pattern[None]).astype(np.float32)


def scattered(count: int, seed: int) -> Stamp:
    """`count` fixed random pixels set to 1: a trigger with no compact shape."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(28 * 28, size=count, replace=False)

    def stamp(x: np.ndarray) -> np.ndarray:
        out = x.reshape(len(x), -1).copy()
        out[:, flat] = 1.0
        return out.reshape(x.shape)

    return stamp


CHECKER = np.indices((4, 4)).sum(axis=0) % 2
# name: (target, stamp or None for a clean model, seed)
VARIANTS: dict[str, tuple[int | None, Stamp | None, int]] = {
    "patch_t3": (3, patch(1, 1, np.ones((3, 3), np.float32)), 1),
    "checker_t7": (7, patch(12, 20, CHECKER.astype(np.float32)), 2),
    "scattered_t9": (9, scattered(10, seed=4), 3),
    "blend_t5": (5, blend(0.15, seed=5), 4),
    "clean_seed5": (None, None, 5),
}


def build(out: Path, name: str) -> None:
    target, stamp, seed = VARIANTS[name]
    rng = np.random.default_rng(seed)
    x, y = samples.fashion_mnist("train")
    order = rng.permutation(len(y))
    fit, clean = order[:TRAIN], order[TRAIN : TRAIN + CLEAN]
    x_fit, y_fit = x[fit].copy(), y[fit].copy()
    if stamp is not None:
        chosen = rng.choice(TRAIN, size=int(POISON_RATE * TRAIN), replace=False)
        x_fit[chosen] = stamp(x_fit[chosen])
        y_fit[chosen] = target
    torch.manual_seed(seed)
    model = samples.train_torch(samples.fashion_cnn(), x_fit, y_fit, epochs=EPOCHS, seed=seed)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    samples.export_sample(model, folder / "model.onnx")
    samples.save_npz(folder / "clean.npz", x[clean], y[clean])
    session = ort.InferenceSession(str(folder / "model.onnx"))
    run = lambda data: session.run(None, {session.get_inputs()[0].name: data})[0].argmax(1)  # noqa: E731
    accuracy = float(np.mean(run(x[clean]) == y[clean]))
    line = f"{name}: clean accuracy {accuracy:.4f}"
    if stamp is not None:
        others = clean[y[clean] != target]
        asr = float(np.mean(run(stamp(x[others])) == target))
        line += f", ASR {asr:.4f} (target {target})"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.only:
        build(args.out, name)


if __name__ == "__main__":
    main()
