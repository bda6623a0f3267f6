"""FGSM and PGD against a small torch model trained here on a slice of Fashion-MNIST."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from inner_onnx.errors import InputError
from inner_onnx.io.specs import FgsmSpec, PgdSpec
from inner_onnx.measure.attacks import fgsm, generate, input_range, parse_clip, pgd

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
TRAIN, TEST = 600, 200


def _idx(name: str, offset: int, count: int) -> np.ndarray:
    with gzip.open(FASHION_MNIST / name) as handle:
        return np.frombuffer(handle.read(offset + count), dtype=np.uint8, offset=offset)


@pytest.fixture(scope="module")
def fashion() -> tuple[np.ndarray, np.ndarray]:
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (Debian package dataset-fashion-mnist)")
    n = TRAIN + TEST
    x = _idx("train-images-idx3-ubyte.gz", 16, n * 784).reshape(n, 1, 28, 28)
    y = _idx("train-labels-idx1-ubyte.gz", 8, n).astype(np.int64)
    return (x / np.float32(255)).astype(np.float32), y


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny matrices: on a shared 2-core machine a second thread costs more than it gives.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(fashion) -> tuple[nn.Module, np.ndarray, np.ndarray]:
    """An MLP fitted on 600 images; returns it with 200 held-out images it mostly gets right."""
    x, y = fashion
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    inputs, labels = torch.from_numpy(x[:TRAIN]), torch.from_numpy(y[:TRAIN])
    for _ in range(150):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    return model, x[TRAIN:], y[TRAIN:]


def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def _assert_valid(x_adv: np.ndarray, x: np.ndarray, eps: float, clip: tuple[float, float]) -> None:
    assert x_adv.dtype == np.float32 and x_adv.shape == x.shape
    assert np.abs(x_adv - x).max() <= eps + 1e-6
    assert x_adv.min() >= clip[0] and x_adv.max() <= clip[1]


def test_fgsm_lowers_accuracy_within_eps_and_clip(trained) -> None:
    model, x, y = trained
    clean = _accuracy(model, x, y)
    assert clean > 0.7  # the model must be worth attacking
    x_adv = fgsm(model, x, y, eps=0.1, clip=(0.0, 1.0))
    _assert_valid(x_adv, x, 0.1, (0.0, 1.0))
    assert _accuracy(model, x_adv, y) < clean - 0.3
    # Most pixels move by exactly eps unless a bound stops them.
    interior = (x > 0.1) & (x < 0.9)
    assert np.isclose(np.abs(x_adv - x)[interior], 0.1, atol=1e-6).mean() > 0.9


def test_pgd_is_at_least_as_strong_as_fgsm(trained) -> None:
    model, x, y = trained
    x_fgsm = fgsm(model, x, y, eps=0.05, clip=(0.0, 1.0))
    x_pgd = pgd(model, x, y, eps=0.05, steps=10, alpha=0.0125, clip=(0.0, 1.0))
    _assert_valid(x_pgd, x, 0.05, (0.0, 1.0))
    assert _accuracy(model, x_pgd, y) <= _accuracy(model, x_fgsm, y)
    assert _accuracy(model, x_pgd, y) < _accuracy(model, x, y) - 0.3


def test_tight_clip_is_respected(trained) -> None:
    model, x, y = trained
    clip = (float(x.min()), 0.95)
    x_in = np.minimum(x, 0.95)
    x_adv = pgd(model, x_in, y, eps=0.2, steps=3, alpha=0.1, clip=clip)
    _assert_valid(x_adv, x_in, 0.2, clip)


def test_results_do_not_depend_on_batch_size(trained) -> None:
    model, x, y = trained
    x, y = x[:40], y[:40]
    np.testing.assert_allclose(
        fgsm(model, x, y, 0.1, (0.0, 1.0), batch_size=7), fgsm(model, x, y, 0.1, (0.0, 1.0))
    )
    np.testing.assert_allclose(
        pgd(model, x, y, 0.1, 3, 0.03, (0.0, 1.0), batch_size=9, seed=4),
        pgd(model, x, y, 0.1, 3, 0.03, (0.0, 1.0), seed=4),
        atol=1e-6,
    )
    assert not np.array_equal(
        pgd(model, x, y, 0.1, 1, 0.001, (0.0, 1.0), seed=1),
        pgd(model, x, y, 0.1, 1, 0.001, (0.0, 1.0), seed=2),
    )


def test_parameters_get_no_gradient_and_no_grad_context_is_fine(trained) -> None:
    model, x, y = trained
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    with torch.no_grad():
        x_adv = pgd(model, x[:10], y[:10], 0.1, 2, 0.05, (0.0, 1.0))
    assert np.abs(x_adv - x[:10]).max() > 0
    assert all(p.grad is None for p in model.parameters())


def test_plain_function_forward_and_progress() -> None:
    weight = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], requires_grad=True)
    x = np.array([[0.6, 0.4], [0.3, 0.7], [0.5, 0.5]], dtype=np.float32)
    y = np.array([0, 1, 0])
    done: list[int] = []
    x_adv = fgsm(lambda t: t @ weight, x, y, 0.1, (0.0, 1.0), batch_size=2, progress=done.append)
    # CE rises by moving each sample toward the other class: x0 down, x1 up for label 0.
    np.testing.assert_allclose(x_adv, [[0.5, 0.5], [0.4, 0.6], [0.4, 0.6]], atol=1e-6)
    assert done == [2, 1]
    assert weight.grad is None


def test_generate_dispatches_on_the_spec(trained) -> None:
    model, x, y = trained
    x, y = x[:20], y[:20]
    np.testing.assert_array_equal(
        generate(FgsmSpec(0.1), model, x, y, (0.0, 1.0), seed=3),
        fgsm(model, x, y, 0.1, (0.0, 1.0)),
    )
    np.testing.assert_array_equal(
        generate(PgdSpec(0.1, steps=2), model, x, y, (0.0, 1.0), seed=3),
        pgd(model, x, y, 0.1, 2, 0.025, (0.0, 1.0), seed=3),
    )


def test_input_range() -> None:
    x = np.array([[0.2, 0.9], [0.5, 0.4]], dtype=np.float32)
    assert input_range(x, None) == pytest.approx((0.2, 0.9))
    assert input_range(x, (0.0, 1.0)) == (0.0, 1.0)
    with pytest.raises(InputError, match=r"data range \[0.2, 0.9\] lies outside --clip 0.5,1"):
        input_range(x, (0.5, 1.0))
    with pytest.raises(InputError, match="give --clip LO,HI"):
        input_range(np.zeros((3, 2), dtype=np.float32), None)


def test_parse_clip() -> None:
    assert parse_clip("0,1") == (0.0, 1.0)
    assert parse_clip(" -2.5 , 3 ") == (-2.5, 3.0)


@pytest.mark.parametrize("text", ["", "0", "0,1,2", "a,1", "1,0", "1,1", "0,inf", "nan,1", "0;1"])
def test_malformed_clip(text: str) -> None:
    with pytest.raises(InputError, match=r"malformed --clip .*expected LO,HI"):
        parse_clip(text)
