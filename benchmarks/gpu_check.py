"""On a CUDA machine: parity of the torch view on the GPU, and repairs on CUDA against the CPU.

Runs, in a few minutes: the view of every bundled sample on CUDA against
onnxruntime (CPU provider) on its clean data; one repair of samples/torch_badnets
(backdoor, 5 epochs) and one of the CIFAR-style ResNet-18 of benchmarks/scale.py
(1,000 clean + 250 bad samples, 2 epochs of `ft`) with `RunContext(device="cuda")` and
`"cpu"`, printing both times. Without CUDA it says so and exits 0. The ONNX
conformance cases on CUDA are not run here: tests/torchview/test_conformance.py runs
them on the CPU only.

    .venv/bin/python -m benchmarks.gpu_check
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.scale import TARGET_LABEL, build, images, repair_seconds, triggered
from inner_onnx.context import RunContext
from inner_onnx.io.data import Dataset, load_npz
from inner_onnx.io.model import OnnxModel
from inner_onnx.io.samples import sample_dir
from inner_onnx.repair.pipeline import repair, settings_for
from inner_onnx.runtime import Runner
from inner_onnx.scenarios import BadSource

SAMPLES = ("torch_badnets", "keras_badnets", "torch_mnist_clean", "torch_weak_class")


def parity(name: str) -> float:
    """Largest |view on CUDA - onnxruntime on CPU| over the sample's clean class scores."""
    folder = sample_dir(name)
    model = OnnxModel.load(folder / "model.onnx")
    x = load_npz(folder / "clean.npz", model).x[:256]
    expected = Runner(model, "cpu").scores(x)
    view = model.torch_view(frozen=True, device="cuda")
    with torch.no_grad():
        got = view(torch.from_numpy(x).cuda()).cpu().numpy()
    return float(np.abs(got - expected).max())


def badnets_seconds(device: str) -> float:
    folder = sample_dir("torch_badnets")
    model = OnnxModel.load(folder / "model.onnx")
    clean = load_npz(folder / "clean.npz", model)
    source = BadSource("backdoor", folder / "bad.npz", target_label=TARGET_LABEL)
    started = time.perf_counter()
    settings = settings_for("backdoor", epochs=5)
    repair(model, clean, source, settings, RunContext(device=device))
    return time.perf_counter() - started


def main() -> None:
    if not torch.cuda.is_available():
        print("no CUDA device visible to torch: nothing to check on this machine")
        return
    print(f"CUDA: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for name in SAMPLES:
        print(f"parity {name}: max |view (cuda) - onnxruntime (cpu)| = {parity(name):.2e}")
    cpu, cuda = badnets_seconds("cpu"), badnets_seconds("cuda")
    print(f"torch_badnets, backdoor, 5 epochs: cpu {cpu:.1f} s, cuda {cuda:.1f} s")
    with tempfile.TemporaryDirectory() as temp:
        _, path = build("resnet18", Path(temp))
        x, y = images(1000)
        bad_x, bad_y = images(250, seed=7)
        clean, bad = Dataset(x, y, "clean"), Dataset(triggered(bad_x), bad_y, "bad")
        threads = torch.get_num_threads()
        cpu = repair_seconds(path, clean, bad, 2, threads, "cpu")
        cuda = repair_seconds(path, clean, bad, 2, threads, "cuda")
    print(f"resnet18, ft, 2 epochs: cpu {cpu:.1f} s, cuda {cuda:.1f} s")


if __name__ == "__main__":
    main()
