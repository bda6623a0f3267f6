"""The models the benchmark repairs: the bundled samples and models it trains itself.

The benchmark's own models are trained on Fashion-MNIST's training split and
exported with the TorchScript exporter; they are cached under the cache folder
by a key that names everything they depend on, so a rerun reuses them. Repair
data and evaluation data always come from the test split, which no model has
seen.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from converters.torch_to_onnx import export_torch
from samples.make_samples import FASHION_DIR, fashion_cnn, fashion_mnist, train_torch

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"
TARGET_LABEL = 0
WEAK_CLASS = 2


def vgg_bn() -> nn.Module:
    """VGG-style, 5 conv layers in 3 stages, each conv followed by ReLU then BatchNorm.

    Narrow (16-64 channels) and pooled early so a repair epoch stays cheap on 2 cores.

    BatchNorm after the ReLU keeps a BatchNormalization node in the exported
    graph (the exporter folds only a BatchNorm that directly follows a Conv).
    """

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(cout)]

    return nn.Sequential(
        *block(1, 16),
        nn.MaxPool2d(2),
        *block(16, 16),
        *block(16, 32),
        nn.MaxPool2d(2),
        *block(32, 32),
        *block(32, 64),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 3 * 3, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {"cnn": fashion_cnn, "vgg_bn": vgg_bn}


def blend_pattern() -> np.ndarray:
    """The Blend trigger (Chen et al. 2017): fixed uniform noise over the whole image, [1,28,28]."""
    return np.random.default_rng(1234).random((1, 28, 28)).astype(np.float32)


def patch_pattern() -> np.ndarray:
    """The BadNets trigger of the bundled samples: a white 3x3 square, [1,3,3]."""
    return np.ones((1, 3, 3), np.float32)


PATCH_AT = (25, 25)
BLEND_ALPHA = 0.15


def stamp_patch(x: np.ndarray) -> np.ndarray:
    out = x.copy()
    row, col = PATCH_AT
    out[:, :, row : row + 3, col : col + 3] = patch_pattern()
    return out


def stamp_blend(x: np.ndarray) -> np.ndarray:
    return (x * (1 - BLEND_ALPHA) + blend_pattern()[None] * BLEND_ALPHA).astype(np.float32)


POISONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "badnets": stamp_patch,
    "blend": stamp_blend,
}


@dataclass(frozen=True)
class TrainRecipe:
    """How a benchmark model is trained; its fields are the cache key."""

    architecture: str
    poison: str | None  # "badnets", "blend" or None
    poison_rate: float = 0.1
    weak_class_keep: float | None = None  # share of WEAK_CLASS training images kept
    train_images: int = 15_000
    epochs: int = 3
    seed: int = 7

    @property
    def key(self) -> str:
        parts = [self.architecture, self.poison or "clean"]
        if self.weak_class_keep is not None:
            parts.append(f"weak{WEAK_CLASS}")
        return "_".join(parts)


def training_data(recipe: TrainRecipe) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(recipe.seed)
    x, y = fashion_mnist("train")
    rows = rng.permutation(len(y))
    if recipe.weak_class_keep is not None:
        weak = rows[y[rows] == WEAK_CLASS]
        kept = weak[: int(recipe.weak_class_keep * len(weak))]
        rows = rng.permutation(np.concatenate([rows[y[rows] != WEAK_CLASS], kept]))
    rows = rows[: recipe.train_images]
    x, y = x[rows], y[rows].copy()
    if recipe.poison is not None:
        chosen = rng.choice(len(y), size=int(recipe.poison_rate * len(y)), replace=False)
        x = x.copy()
        x[chosen] = POISONS[recipe.poison](x[chosen])
        y[chosen] = TARGET_LABEL
    return x, y


def train(recipe: TrainRecipe) -> nn.Module:
    torch.manual_seed(recipe.seed)
    x, y = training_data(recipe)
    return train_torch(ARCHITECTURES[recipe.architecture](), x, y, recipe.epochs, recipe.seed)


def cached_model(recipe: TrainRecipe, cache_dir: Path, log: Callable[[str], None]) -> Path:
    """The ONNX file of `recipe`, trained and exported on first use."""
    folder = cache_dir / "models"
    path = folder / f"{recipe.key}.onnx"
    stamp_file = folder / f"{recipe.key}.json"
    wanted = json.dumps(asdict(recipe), sort_keys=True)
    if path.is_file() and stamp_file.is_file() and stamp_file.read_text() == wanted:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    log(f"training {recipe.key} (cached in {folder})")
    module = train(recipe)
    export_torch(module, np.zeros((1, 1, 28, 28), np.float32), path)
    stamp_file.write_text(wanted)
    return path


@dataclass(frozen=True)
class ModelEntry:
    """A model to benchmark: a bundled sample (path) or a recipe the benchmark trains."""

    name: str
    description: str
    sample: str | None = None
    recipe: TrainRecipe | None = None

    def path(self, cache_dir: Path, log: Callable[[str], None]) -> Path:
        if self.sample is not None:
            return SAMPLES_DIR / self.sample / "model.onnx"
        assert self.recipe is not None
        return cached_model(self.recipe, cache_dir, log)


MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry(
            "cnn_badnets",
            "bundled samples/torch_badnets (2 conv + 2 linear, BadNets patch, target 0)",
            sample="torch_badnets",
        ),
        ModelEntry(
            "keras_badnets",
            "bundled samples/keras_badnets (Keras, NHWC, conv + BatchNorm, BadNets patch, "
            "target 0)",
            sample="keras_badnets",
        ),
        ModelEntry(
            "cnn_weak",
            "bundled samples/torch_weak_class (2 conv + 2 linear + BatchNorm1d, class 2 starved)",
            sample="torch_weak_class",
        ),
        ModelEntry(
            "cnn_blend",
            "benchmark-trained, same CNN as the samples, Blend trigger (alpha 0.15), target 0",
            recipe=TrainRecipe("cnn", "blend"),
        ),
        ModelEntry(
            "vgg_badnets",
            "benchmark-trained VGG-style (5 conv, BatchNorm), BadNets patch, target 0",
            recipe=TrainRecipe("vgg_bn", "badnets"),
        ),
        ModelEntry(
            "vgg_blend",
            "benchmark-trained VGG-style (5 conv, BatchNorm), Blend trigger, target 0",
            recipe=TrainRecipe("vgg_bn", "blend"),
        ),
        ModelEntry(
            "vgg_weak",
            "benchmark-trained VGG-style (5 conv, BatchNorm), class 2 starved (3% kept)",
            recipe=TrainRecipe("vgg_bn", None, weak_class_keep=0.03),
        ),
    )
}


def fashion_test() -> tuple[np.ndarray, np.ndarray]:
    return fashion_mnist("test", FASHION_DIR)
