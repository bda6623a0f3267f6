"""Forward+backward time of the torch view vs the same architecture as a native nn.Module.

Each architecture is built in PyTorch, exported to ONNX (TorchScript exporter)
and wrapped in a TorchView; both then run the same training step (cross-entropy
on a batch of 128, backward, zero grads) in interleaved repetitions. The ratio
of the medians (view / native) is the overhead of running the graph op by op
from Python; the target is <= 1.3x. A third export pins the batch axis at 1 (no dynamic
axes, as many users export): its view runs the batch in groups of one under vmap, and
"pinned / view" is what that costs.

    .venv/bin/python benchmarks/torchview_overhead.py [--repeats 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import time
import warnings

import onnx
import torch
import torch.nn.functional as F

from inner_onnx.torchview import TorchView


def small_cnn() -> torch.nn.Module:
    """The size of the Fashion-MNIST samples: 3 conv + 2 dense on 1x28x28."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(64 * 5 * 5, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 10),
    )


def vgg_like() -> torch.nn.Module:
    """Six 3x3 conv layers with BatchNorm (after ReLU, so the exporter keeps it) on 3x32x32."""
    layers: list[torch.nn.Module] = []
    channels = 3
    for width in (32, 32, "pool", 64, 64, "pool", 128, 128, "pool"):
        if width == "pool":
            layers.append(torch.nn.MaxPool2d(2))
            continue
        layers += [
            torch.nn.Conv2d(channels, width, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.BatchNorm2d(width),
        ]
        channels = width
    layers += [
        torch.nn.Flatten(),
        torch.nn.Linear(128 * 4 * 4, 256),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.5),
        torch.nn.Linear(256, 10),
    ]
    return torch.nn.Sequential(*layers)


def export(net: torch.nn.Module, example: torch.Tensor, dynamic: bool = True) -> onnx.ModelProto:
    """TorchScript export; `dynamic`: a free batch axis, else the example's batch pinned."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            buffer,
            dynamo=False,
            input_names=["input"],
            dynamic_axes={"input": {0: "batch"}} if dynamic else None,
        )
    return onnx.load_from_string(buffer.getvalue())


def training_step(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    start = time.perf_counter()
    F.cross_entropy(module(x), y).backward()
    module.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def compare(name: str, net: torch.nn.Module, shape: tuple[int, ...], repeats: int) -> float:
    torch.manual_seed(0)
    net.eval()  # inference semantics on both sides: BatchNorm running stats, Dropout off
    x = torch.randn(128, *shape)
    y = torch.randint(0, 10, (128,))
    view = TorchView(export(net, x[:2]))
    pinned = TorchView(export(net, x[:1], dynamic=False))
    assert pinned.fixed_batch == 1
    drift = max((v(x) - net(x)).abs().max().item() for v in (view, pinned))
    candidates = {"native": net, "view": view, "pinned": pinned}
    times: dict[str, list[float]] = {key: [] for key in candidates}
    for _ in range(3):  # warm-up
        for module in candidates.values():
            training_step(module, x, y)
    keys = list(candidates)
    for repeat in range(repeats):
        shift = repeat % len(keys)  # each one first as often as the others
        for key in keys[shift:] + keys[:shift]:
            times[key].append(training_step(candidates[key], x, y))
    native, viewed, grouped = (statistics.median(times[key]) for key in keys)
    nodes = len(view.write_back().graph.node)
    print(
        f"{name:<10} nodes={nodes:<3} native {native * 1e3:7.2f} ms   view {viewed * 1e3:7.2f} ms"
        f"   ratio {viewed / native:.3f}   pinned {grouped * 1e3:7.2f} ms"
        f"   pinned / view {grouped / viewed:.3f}   |view-native| {drift:.1e}"
    )
    return viewed / native


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or 'cpu'}, "
        f"batch 128, forward+backward, median of {args.repeats} interleaved repeats"
    )
    compare("small_cnn", small_cnn(), (1, 28, 28), args.repeats)
    compare("vgg_like", vgg_like(), (3, 32, 32), args.repeats)


if __name__ == "__main__":
    main()
