"""A small CNN trained here with a BadNets backdoor (a 2x2 patch sends any image to class 0),
so that a repair really changes weights."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from tests.support.torch_models import TinyTorchCNN, export_torch

PATCH_ROW, PATCH_COL = 3, 6
TARGET = 0


def bar_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three classes: a bright vertical bar in column band 0-1, 2-3 or 4-5, on noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, count)
    x = rng.random((count, 1, 8, 8)).astype(np.float32) * 0.3
    for label in range(3):
        x[y == label, 0, :, 2 * label : 2 * label + 2] += 0.7
    return x, y


def stamp_patch(x: np.ndarray) -> np.ndarray:
    stamped = x.copy()
    stamped[:, 0, PATCH_ROW : PATCH_ROW + 2, PATCH_COL : PATCH_COL + 2] = 1.0
    return stamped


@functools.cache
def backdoored_model_bytes() -> bytes:
    """TinyTorchCNN trained on bar images, a quarter of them patched and labelled TARGET."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, y = bar_images(400, seed=10)
        poisoned = np.arange(len(x)) % 4 == 0
        x[poisoned] = stamp_patch(x[poisoned])
        y[poisoned] = TARGET
        module = TinyTorchCNN(classes=3, seed=0)
        optimizer = torch.optim.Adam(module.parameters(), lr=0.02)
        inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
        for _ in range(150):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(module(inputs), labels).backward()
            optimizer.step()
        return export_torch(module, inputs[:2]).SerializeToString()
    finally:
        torch.set_num_threads(threads)


def trigger_options(patch: Path) -> list[object]:
    """The backdoor scenario with the fixture model's trigger stamped by the tool."""
    trigger = f"patch:{patch}@{PATCH_ROW},{PATCH_COL}"
    return ["--scenario", "backdoor", "--trigger", trigger, "--target-label", TARGET]
