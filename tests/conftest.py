"""Fixtures shared by the tests; the helpers themselves live in tests/support."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.support.cli import save_npz
from tests.support.models import tiny_cnn


@pytest.fixture
def tiny_model_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn(), path)
    return path


@pytest.fixture
def tiny_nhwc_model_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_nhwc.onnx"
    onnx.save(tiny_cnn("NHWC"), path)
    return path


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    x = rng.random((20, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 20)
    return save_npz(tmp_path / "data.npz", x=x, y=y)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread while a test runs: on a busy 2-core machine a second intra-op
    thread made a tiny repair 4-13x slower (1.0 s against 3.8-12.8 s, measured side by side)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
