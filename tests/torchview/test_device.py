"""The torch view on a second device, without a GPU (tests/support/pretend_device.py).

Every tensor an op function creates must sit on its inputs' device. The pretend
device refuses an op that mixes its tensors with CPU ones, as CUDA does, so these
tests fail when an op creates a tensor without `device=`. Its tensors compute
with the CPU kernels, so results must equal the CPU view's bit for bit. A check
over the op functions' source covers the branches no test input reaches.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from inner_onnx.torchview import TorchView, ops
from tests.support.conformance import MATCHED, run_case
from tests.support.pretend_device import PretendDeviceTensor, pretend_device
from tests.support.torchview_models import batch_for

SAMPLE_DIRS = sorted(
    p.parent for p in (Path(__file__).resolve().parents[2] / "samples").glob("*/model.onnx")
)


# torch functions that make a tensor from nothing: on the CPU unless given a device.
_FACTORIES = {"tensor", "as_tensor", "arange", "zeros", "ones", "full", "empty", "eye", "linspace"}


def _unplaced_tensors(path: Path) -> list[str]:
    """Factory calls without `device=`, and `torch.from_numpy(...)` not followed by `.to(...)`.

    Skips the Constant op: it runs once, when the view is built, and its outputs
    become buffers that move with `view.to(device)`.
    """
    tree = ast.parse(path.read_text())
    moved = {
        id(node.func.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        if node.func.attr == "to"
    }
    at_build_time = {
        id(node)
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef) and function.name == "constant"
        for node in ast.walk(function)
    }
    found = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "torch"
            and id(node) not in at_build_time
        ):
            continue
        name = node.func.attr
        unplaced = name in _FACTORIES and not any(k.arg == "device" for k in node.keywords)
        if unplaced or (name == "from_numpy" and id(node) not in moved):
            found.append(f"{path.name}:{node.lineno} torch.{name}")
    return found


def test_op_functions_give_every_tensor_they_make_a_device() -> None:
    """Also covers the branches that no conformance case reaches."""
    sources = sorted(Path(ops.__file__).parent.glob("*.py"))
    assert len(sources) >= 4
    assert [call for path in sources for call in _unplaced_tensors(path)] == []


def _sample(directory: Path, count: int = 16) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    data = np.load(directory / "clean.npz")
    return onnx.load(str(directory / "model.onnx")), data["x"][:count], data["y"][:count]


def test_the_pretend_device_refuses_what_cuda_refuses() -> None:
    with pretend_device() as device:
        x = torch.arange(6.0).to(device)
        assert isinstance(x, PretendDeviceTensor) and x.device == device
        assert torch.zeros(2, device=device).device == device
        assert torch.tensor([1, 2], device=device).device == device
        with pytest.raises(RuntimeError, match="same device"):
            x + torch.ones(6)  # a factory without device=: on the CPU
        with pytest.raises(TypeError):
            x.numpy()
        # Values are kept: shape reads work, and .cpu() is an ordinary tensor again.
        assert x.sum().item() == 15.0 and x.tolist()[-1] == 5.0
        assert type(x.cpu()) is torch.Tensor and torch.equal(x.cpu(), torch.arange(6.0))


@pytest.mark.parametrize("case", MATCHED, ids=lambda case: case.name)
def test_conformance_case_on_another_device(case) -> None:
    with pretend_device() as device:
        run_case(case, device)


def _same_on_both_devices(model: onnx.ModelProto, x: np.ndarray) -> None:
    expected = TorchView(model)(torch.from_numpy(x)).detach()
    with pretend_device() as device:
        got = TorchView(model).to(device)(torch.from_numpy(x).to(device))
        assert got.device == device
        assert torch.equal(got.detach().cpu(), expected)


def test_model_zoo_on_another_device(any_model: onnx.ModelProto) -> None:
    _same_on_both_devices(any_model, batch_for(any_model, size=4))


@pytest.mark.parametrize("directory", SAMPLE_DIRS, ids=lambda p: p.name)
def test_bundled_sample_on_another_device(directory: Path) -> None:
    model, x, _ = _sample(directory)
    _same_on_both_devices(model, x)


def _masked_step(view: TorchView, x: torch.Tensor, y: torch.Tensor, weight: str) -> None:
    """One step of the repair's shape: only two output channels of one conv may move."""
    view.requires_grad_(False)
    parameter = view.parameter(weight)
    parameter.requires_grad_(True)
    optimizer = torch.optim.SGD([parameter], lr=0.5, momentum=0.9)
    mask = torch.zeros_like(parameter)
    mask[:2] = 1.0
    loss = F.cross_entropy(view(x), y)
    loss.backward()
    parameter.grad.mul_(mask)
    optimizer.step()


def test_masked_training_step_on_another_device_writes_back_what_the_cpu_does() -> None:
    model, x, y = _sample(Path(__file__).resolve().parents[2] / "samples" / "torch_badnets")
    weight = next(node.input[1] for node in model.graph.node if node.op_type == "Conv")
    before = TorchView(model).parameter(weight).detach().clone()

    on_cpu = TorchView(model)
    _masked_step(on_cpu, torch.from_numpy(x), torch.from_numpy(y), weight)
    with pretend_device() as device:
        view = TorchView(model).to(device)
        _masked_step(view, torch.from_numpy(x).to(device), torch.from_numpy(y).to(device), weight)
        parameter = view.parameter(weight)
        assert parameter.device == device and parameter.grad.device == device
        after = parameter.detach().cpu()
        written = view.write_back()
    assert not torch.equal(after[:2], before[:2])
    assert torch.equal(after[2:], before[2:])
    assert written.SerializeToString() == on_cpu.write_back().SerializeToString()
