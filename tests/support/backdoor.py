"""A small CNN trained here with a BadNets backdoor (a 2x2 patch sends any image to class 0),
so that a repair really changes weights."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import torch

from inner_onnx.io.data import Dataset
from inner_onnx.io.model import OnnxModel
from inner_onnx.measure.evaluation import EvaluationSet
from inner_onnx.scenarios import BadSource
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


# INNER confined to one neuron of one hidden unit: it changes weights but cannot remove
# the fixture's backdoor, so a repair with these options misses its targets (exit 3)
# whatever the defaults.
ONE_HIDDEN_NEURON = ["--method", "inner_noout", "--layers", 1, "--top-k", 1]


def backdoor_problem_inputs() -> tuple[OnnxModel, Dataset, BadSource, EvaluationSet]:
    """The backdoored model with clean data, triggered samples (true labels) as the bad
    source, and a held-out evaluation set, for library-level repairs."""
    model = OnnxModel(onnx.load_from_string(backdoored_model_bytes()))
    x, y = bar_images(160, seed=11)
    others = y != TARGET
    bad = Dataset(stamp_patch(x[others]), y[others], "triggered bars")
    source = BadSource("backdoor", target_label=TARGET, bad_data=bad)
    x_eval, y_eval = bar_images(120, seed=12)
    eval_bad = Dataset(stamp_patch(x_eval[y_eval != TARGET]), y_eval[y_eval != TARGET], "eval")
    evaluation = EvaluationSet(Dataset(x_eval, y_eval, "eval"), eval_bad, TARGET, name="eval")
    return model, Dataset(x, y, "bars"), source, evaluation
