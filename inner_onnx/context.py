"""What every stage of a run shares and the user sets once: seed, threads, device."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from inner_onnx.errors import InputError
from inner_onnx.io.data import Inputs
from inner_onnx.runtime import DEVICES
from inner_onnx.torchview.inputs import Batch as TorchBatch
from inner_onnx.torchview.inputs import TensorInputs

# cuBLAS reuses workspaces nondeterministically unless told their size (CUDA docs,
# "Reproducibility"); ":4096:8" is the documented setting.
CUBLAS_WORKSPACE = ":4096:8"


class TorchDeviceFallbackWarning(UserWarning):
    """CUDA was asked for but this torch build or machine has no CUDA device."""


@dataclass(frozen=True)
class RunContext:
    """`seed` decides every random draw (splits, probes, routing samples, batches, attacks);
    `threads` pins torch (float sums differ with the thread count, and the same inputs and
    seed must give the same bytes); None: torch's count when the context is made, in a fresh
    process every core (or OMP_NUM_THREADS), resolved here so the provenance records the
    count used; `device` places onnxruntime (the runtime checks its name) and the torch side
    (`torch_device`)."""

    seed: int = 0
    threads: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.threads is None:
            object.__setattr__(self, "threads", torch.get_num_threads())
        elif self.threads < 1:
            raise InputError(f"--threads must be at least 1, got {self.threads}")
        if self.device.strip().lower() not in DEVICES:
            raise InputError(f"unknown device {self.device!r}: use one of {', '.join(DEVICES)}")

    @property
    def thread_count(self) -> int:
        assert self.threads is not None, "resolved in __post_init__"
        return self.threads

    @property
    def torch_device(self) -> torch.device:
        """Where the torch side runs: CUDA when asked for (or, for auto, present), else CPU."""
        wanted = self.device.strip().lower()
        if wanted == "cpu" or (wanted == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        if not torch.cuda.is_available():
            warnings.warn(
                "device cuda: torch sees no CUDA device; the torch side runs on CPU",
                TorchDeviceFallbackWarning,
                stacklevel=2,
            )
            return torch.device("cpu")
        return torch.device("cuda")

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Run torch on `threads` threads for the duration; on CUDA, with deterministic kernels.

        CUDA caveats: the flags make a rerun on the same GPU, driver and torch give the same
        bytes, but CUDA and CPU results differ in the last bits, and so do two GPU models;
        an op with no deterministic CUDA kernel raises instead of running
        (`torch.use_deterministic_algorithms`)."""
        before = torch.get_num_threads()
        torch.set_num_threads(self.thread_count)
        cuda = self.torch_device.type == "cuda"
        if cuda:
            saved = _cuda_determinism(True)
        try:
            yield
        finally:
            torch.set_num_threads(before)
            if cuda:
                _restore_cuda_determinism(saved)


def _cuda_determinism(enabled: bool) -> tuple[bool, bool, bool, str | None]:
    """Switch the deterministic settings; returns what they were."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    # Read by cuBLAS when its handle is made: set before the first CUDA matmul of the run.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    # cudnn's autotuner picks kernels by timing: another pick, other float sums.
    torch.backends.cudnn.benchmark = not enabled
    return saved


def _restore_cuda_determinism(saved: tuple[bool, bool, bool, str | None]) -> None:
    algorithms, deterministic, benchmark, workspace = saved
    torch.use_deterministic_algorithms(algorithms)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = benchmark
    if workspace is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace


def device_of(forward: object) -> torch.device:
    """Where a torch forward function computes: its parameters' (or buffers') device; CPU for
    a plain function or a module without tensors."""
    if isinstance(forward, torch.nn.Module):
        for tensor in (*forward.parameters(), *forward.buffers()):
            return tensor.device
    return torch.device("cpu")


def on_device_of(forward: object, tensor: TorchBatch) -> TorchBatch:
    """`tensor` where `forward` computes: the numpy-to-torch edge of every batched pass."""
    return tensor.to(device_of(forward))


def as_numpy(x: TorchBatch) -> np.ndarray | Inputs:
    """Host tensors as numpy arrays sharing their memory: the inverse of `as_torch`."""
    if isinstance(x, TensorInputs):
        return Inputs({name: t.numpy() for name, t in x.tensors.items()})
    return x.numpy()


def as_torch(x: np.ndarray | Inputs) -> TorchBatch:
    """Host samples as torch tensors sharing their memory: one tensor, or one per input."""
    if isinstance(x, Inputs):
        return TensorInputs({name: torch.from_numpy(a) for name, a in x.arrays.items()})
    return torch.from_numpy(x)
