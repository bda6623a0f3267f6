"""Real-size models: cost of a repair epoch against native torch, and peak RSS against N.

Three architectures, defined here in torch and exported with
converters/torch_to_onnx.py (random weights: cost and memory do not depend on
what a model learned): a small CNN, a MobileNetV2-style CNN (inverted residuals,
depthwise convs, ReLU6, about 100k parameters) and a CIFAR-style ResNet-18
(11 M parameters). Inputs are Fashion-MNIST test images padded to 32x32 and
tinted into 3 channels; the bad samples are the same images with a white 4x4
patch, with their true labels (backdoor, target class 0).

(a) `epoch`: one epoch of `inner_onnx.repair.pipeline.repair` with `--method ft`
(the backdoor scenario's loss, no early stopping), the difference between a
2-epoch and a 1-epoch run, against one epoch of native torch fine-tuning of the
exported module (SGD, the same clean training rows and bad rows per batch,
cross-entropy), measured side by side in one process.
(b) `rss`: peak RSS and wall time of the `inner-onnx repair` CLI in a child
process (`/usr/bin/time -v`): MobileNet-style at N = 1,000 / 5,000 / 10,000
clean samples (+1,000 bad, 1 epoch), ResNet-18 with 1,000 clean + 1,000 bad and 2
epochs, next to native fine-tuning of the same samples and epochs; `--method` is the
repair's (default: the CLI's).

    nice .venv/bin/python -m benchmarks.scale [--part epoch|rss|all] [--threads 2]
        [--method auto|inner|...] [--epoch-models small_cnn,mobilenet_style,resnet18]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.capture import machine
from benchmarks.zoo.architectures import resnet18
from converters.torch_to_onnx import export_torch
from inner_onnx.context import RunContext
from inner_onnx.io.data import Dataset
from inner_onnx.io.model import OnnxModel
from inner_onnx.repair.pipeline import repair, settings_for
from inner_onnx.repair.settings import RepairSettings
from inner_onnx.scenarios import BadSource
from samples.make_samples import fashion_mnist

DEFAULT_METHOD = RepairSettings().method

TARGET_LABEL = 0
PATCH = 4
CLI = Path(sys.executable).with_name("inner-onnx")


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, 3x3 depthwise, 1x1 project; residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.body = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_style() -> nn.Module:
    # (out channels, stride) per block, expansion 4: about 100k parameters at 3x32x32.
    blocks = [(16, 1), (24, 2), (24, 1), (32, 2), (32, 1), (48, 2), (48, 1), (64, 1)]
    layers: list[nn.Module] = [
        nn.Conv2d(3, 16, 3, 1, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU6(),
    ]
    cin = 16
    for cout, stride in blocks:
        layers.append(InvertedResidual(cin, cout, stride, 4))
        cin = cout
    layers += [
        nn.Conv2d(cin, 160, 1, bias=False),
        nn.BatchNorm2d(160),
        nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(160, 10),
    ]
    return nn.Sequential(*layers)


MODELS: dict[str, Callable[[], nn.Module]] = {
    "small_cnn": small_cnn,
    "mobilenet_style": mobilenet_style,
    "resnet18": lambda: resnet18(3, 32),
}


def images(count: int, seed: int = 0, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """`count` Fashion-MNIST images as float32 [count, 3, 32, 32]: padded, each tinted."""
    x, y = fashion_mnist(split)
    rows = np.random.default_rng(seed).permutation(len(x))[:count]
    padded = np.pad(x[rows], ((0, 0), (0, 0), (2, 2), (2, 2)))
    tint = np.random.default_rng(seed + 1).uniform(0.3, 1.0, size=(count, 3, 1, 1))
    return (padded * tint).astype(np.float32), y[rows]


def triggered(x: np.ndarray) -> np.ndarray:
    bad = x.copy()
    bad[:, :, -PATCH:, -PATCH:] = 1.0
    return bad


# Training images per model: enough to get a share of each class right and to plant the
# backdoor, so that localization has something to find (cost does not depend on accuracy).
TRAIN_SAMPLES = {"small_cnn": 3000, "mobilenet_style": 3000, "resnet18": 1000}
POISON_RATE = 0.1
TRAIN_EPOCHS = 2


def train(module: nn.Module, count: int, seed: int = 0) -> None:
    """A short backdoored training on the training split: 10% of the images patched and
    relabelled to the target class."""
    x, y = images(count, seed=seed, split="train")
    poisoned = np.random.default_rng(seed).random(count) < POISON_RATE
    x[poisoned], y[poisoned] = triggered(x[poisoned]), TARGET_LABEL
    optimizer = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
    module.train()
    for _ in range(TRAIN_EPOCHS):
        for start in range(0, count, 64):
            batch = torch.from_numpy(x[start : start + 64])
            labels = torch.from_numpy(y[start : start + 64])
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(module(batch), labels).backward()
            optimizer.step()
    module.eval()


def build(name: str, folder: Path, seed: int = 0) -> tuple[nn.Module, Path]:
    """The trained module and its ONNX export, both cached in `folder` (a rerun, or the
    measurement of another commit, repairs the very same model)."""
    torch.manual_seed(seed)
    module = MODELS[name]()
    path, weights = folder / f"{name}.onnx", folder / f"{name}.pt"
    if weights.exists():
        module.load_state_dict(torch.load(weights))
    else:
        train(module, TRAIN_SAMPLES[name], seed)
        torch.save(module.state_dict(), weights)
    module.eval()
    if not path.exists():
        export_torch(module, torch.zeros(1, 3, 32, 32), path)
    return module, path


def write_data(folder: Path, clean: int, bad: int) -> tuple[Path, Path]:
    x, y = images(clean)
    bad_x, bad_y = images(bad, seed=7)
    clean_path, bad_path = folder / f"clean_{clean}.npz", folder / f"bad_{bad}.npz"
    np.savez(clean_path, x=x, y=y)
    np.savez(bad_path, x=triggered(bad_x), y=bad_y)
    return clean_path, bad_path


def native_epochs(
    module: nn.Module, x: np.ndarray, y: np.ndarray, bad_x: np.ndarray, epochs: int
) -> float:
    """Wall seconds of `epochs` epochs of plain torch fine-tuning: batches of 64 clean + 16 bad
    rows (the repair's batch and bad share), cross-entropy, SGD with momentum."""
    module = module.eval()  # the view runs inference semantics: compare like with like
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-3, momentum=0.9)
    xc, yc = torch.from_numpy(x), torch.from_numpy(y)
    xb, yb = torch.from_numpy(bad_x), torch.from_numpy(y[: len(bad_x)])
    started = time.perf_counter()
    for _ in range(epochs):
        for index, start in enumerate(range(0, len(xc), 64)):
            pick = torch.arange(index * 16, (index + 1) * 16) % len(xb)
            batch = torch.cat([xc[start : start + 64], xb[pick]])
            labels = torch.cat([yc[start : start + 64], yb[pick]])
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(module(batch), labels).backward()
            optimizer.step()
    return time.perf_counter() - started


def repair_seconds(
    path: Path, clean: Dataset, bad: Dataset, epochs: int, threads: int, device: str = "cpu"
) -> float:
    model = OnnxModel.load(path)
    source = BadSource("backdoor", bad_data=bad, target_label=TARGET_LABEL)
    settings = settings_for("backdoor", method="ft", epochs=epochs)
    settings = replace(
        settings, stopping=replace(settings.stopping, patience=epochs + 1, asr_target=-1.0)
    )
    started = time.perf_counter()
    repair(model, clean, source, settings, RunContext(threads=threads, device=device))
    return time.perf_counter() - started


def epoch_cost(folder: Path, samples: int, threads: int, models: list[str]) -> None:
    print(f"\n(a) one epoch, {samples} clean + {samples // 4} bad samples, {threads} threads\n")
    print("| model | parameters | repair (ft) epoch | native epoch | ratio |")
    print("|---|---|---|---|---|")
    x, y = images(samples)
    bad_x, bad_y = images(samples // 4, seed=7)
    bad_x = triggered(bad_x)
    clean, bad = Dataset(x, y, "clean"), Dataset(bad_x, bad_y, "bad")
    for name in models:
        module, path = build(name, folder)
        params = sum(p.numel() for p in module.parameters())
        # 80% of the rows train (the validation split holds the rest).
        train = round(0.8 * samples)
        one = repair_seconds(path, clean, bad, 1, threads)
        native = native_epochs(module, x[:train], y[:train], bad_x[: round(0.8 * len(bad_x))], 1)
        two = repair_seconds(path, clean, bad, 2, threads)
        epoch = two - one
        print(f"| {name} | {params:,} | {epoch:.2f} s | {native:.2f} s | {epoch / native:.2f} |")


def peak_rss(command: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of `command` run under /usr/bin/time -v."""
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-v", *command], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 3):  # 3: written, targets missed (random weights)
        raise RuntimeError(done.stderr[-2000:])
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return kb / 1024, seconds


def cli_repair(
    path: Path, clean: Path, bad: Path, epochs: int, threads: int, out: Path, method: str
) -> list[str]:
    return [
        str(CLI),
        "repair",
        str(path),
        "-d",
        str(clean),
        "--scenario",
        "backdoor",
        "--bad",
        str(bad),
        "--target-label",
        str(TARGET_LABEL),
        "--epochs",
        str(epochs),
        "--threads",
        str(threads),
        "--device",
        "cpu",
        "--method",
        method,
        "-o",
        str(out),
        "--force",
        "-q",
    ]


def rss(folder: Path, threads: int, sizes: list[int], models: list[str], method: str) -> None:
    print(f"\n(b) peak RSS of `inner-onnx repair` (backdoor, method {method}), {threads} threads\n")
    print("| model | clean + bad | epochs | peak RSS | wall | native torch |")
    print("|---|---|---|---|---|---|")
    if "mobilenet_style" in models:
        _, mobile = build("mobilenet_style", folder)
        for count in sizes:
            clean, bad = write_data(folder, count, 1000)
            command = cli_repair(mobile, clean, bad, 1, threads, folder / "out.onnx", method)
            mb, seconds = peak_rss(command)
            print(f"| mobilenet_style | {count:,} + 1,000 | 1 | {mb:.0f} MB | {seconds:.0f} s | |")
    if "resnet18" in models:
        module, resnet = build("resnet18", folder)
        clean, bad = write_data(folder, 1000, 1000)
        command = cli_repair(resnet, clean, bad, 2, threads, folder / "out.onnx", method)
        mb, seconds = peak_rss(command)
        x, y = images(1000)
        bad_x = triggered(images(1000, seed=7)[0])
        torch.set_num_threads(threads)
        native = native_epochs(module, x[:800], y[:800], bad_x[:800], 2)
        print(
            f"| resnet18 | 1,000 + 1,000 | 2 | {mb:.0f} MB | {seconds:.0f} s | {native:.0f} s "
            f"({seconds / native:.2f}x) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("epoch", "rss", "all"), default="all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=1000, help="samples for (a)")
    parser.add_argument("--sizes", default="1000,5000,10000", help="N for (b), MobileNet-style")
    parser.add_argument("--epoch-models", default=",".join(MODELS), help="models for (a)")
    parser.add_argument("--rss-models", default="mobilenet_style,resnet18", help="models for (b)")
    parser.add_argument("--folder", type=Path, help="models and data (default: a temp folder)")
    parser.add_argument("--method", default=DEFAULT_METHOD, help="repair's, for (b)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"Machine: {machine()}")
    with tempfile.TemporaryDirectory() as temp:
        folder = args.folder or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        if args.part in ("epoch", "all"):
            epoch_cost(folder, args.samples, args.threads, args.epoch_models.split(","))
        if args.part in ("rss", "all"):
            sizes = [int(n) for n in args.sizes.split(",")]
            rss(folder, args.threads, sizes, args.rss_models.split(","), args.method)


if __name__ == "__main__":
    main()
