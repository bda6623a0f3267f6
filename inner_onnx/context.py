"""What every stage of a run shares and the user sets once: seed, threads, device."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from inner_onnx.errors import InputError


@dataclass(frozen=True)
class RunContext:
    """`seed` decides every random draw (splits, probes, routing samples, batches, attacks);
    `threads` pins torch (float sums differ with the thread count, and the same inputs and
    seed must give the same bytes); `device` places onnxruntime and the torch side (the
    runtime checks its name)."""

    seed: int = 0
    threads: int = 1
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise InputError(f"--threads must be at least 1, got {self.threads}")

    @property
    def torch_device(self) -> str:
        """Where the torch side runs: CUDA when asked for, or offered under auto."""
        if self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available()):
            return "cuda"
        return "cpu"

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Run torch on `threads` threads for the duration."""
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)
