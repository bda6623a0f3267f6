"""Graphs that pin their batch axis (exported without a dynamic one): the torch view runs any
number of samples in groups of the pinned size, as onnxruntime gets them, with gradients;
inspect and repair work on such a dynamo export end to end."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from inner_onnx.errors import InputError
from inner_onnx.runtime import parity_max_abs_diff
from inner_onnx.torchview import TorchView
from tests.support.cli import run_cli, save_npz


def _reshaping_graph(batch: int) -> onnx.ModelProto:
    """[batch, 4] -> MatMul -> Reshape to the constant [batch, 2, 3] -> ReduceMax -> [batch, 2]:
    the constant shape holds only for the pinned batch."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([batch, 2, 3], np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Reshape", ["h", "shape"], ["r"]),
            helper.make_node("ReduceMax", ["r"], ["y"], axes=[2], keepdims=0),
        ],
        "pinned",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2])],
        [weight, shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _per_batch_onnxruntime(model: onnx.ModelProto, x: np.ndarray, batch: int) -> np.ndarray:
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    padded = np.concatenate([x, np.zeros((-len(x) % batch, *x.shape[1:]), x.dtype)])
    outputs = [session.run(None, {"x": padded[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outputs)[: len(x)]


@pytest.mark.parametrize("batch", [1, 2])
def test_pinned_batch_runs_any_number_of_samples(batch: int) -> None:
    model = _reshaping_graph(batch)
    view = TorchView(model)
    assert view.fixed_batch == batch
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    with torch.no_grad():
        got = view(torch.from_numpy(x)).numpy()
    assert got.shape == (5, 2)
    np.testing.assert_allclose(got, _per_batch_onnxruntime(model, x, batch), atol=1e-6)
    with torch.no_grad():
        _, captured = view(torch.from_numpy(x), capture=["h"])
    np.testing.assert_allclose(
        captured["h"].numpy(), x @ numpy_helper.to_array(model.graph.initializer[0]), atol=1e-5
    )
    # the pinned count itself runs the graph as it is
    with torch.no_grad():
        exact = view(torch.from_numpy(x[:batch])).numpy()
    np.testing.assert_allclose(exact, got[:batch], atol=1e-6)


def test_pinned_batch_gradients_are_those_of_the_groups() -> None:
    model = _reshaping_graph(1)
    view = TorchView(model)
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32))
    view(x).square().sum().backward()
    weight = view.parameter("w")
    together = weight.grad.clone()
    weight.grad = None
    for row in x:
        view(row.unsqueeze(0)).square().sum().backward()
    assert together.abs().sum() > 0
    torch.testing.assert_close(together, weight.grad)


def test_pinned_batch_refuses_batch_statistics_of_other_counts() -> None:
    view = TorchView(_reshaping_graph(2))
    view.batch_statistics = True
    with pytest.raises(InputError, match="pins its batch axis at 2"):
        view(torch.zeros(5, 4))


class _GroupNormNet(torch.nn.Module):
    """GroupNorm: the dynamo exporter writes its reshapes with the example's batch (1)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.GroupNorm(2, 4),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(4 * 8 * 8, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _dynamo_export(batch: int, dynamic: bool) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _GroupNormNet().eval(),
            (torch.zeros(batch, 1, 8, 8),),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamic else None,
            verbose=False,
        )
    return program.model_proto


@pytest.fixture(scope="module")
def pinned_dynamo_export() -> onnx.ModelProto:
    """The dynamo exporter's default: every shape static, the example's batch of 1."""
    model = _dynamo_export(1, dynamic=False)
    shapes = [
        numpy_helper.to_array(init)
        for init in model.graph.initializer
        if init.data_type == TensorProto.INT64
    ]
    assert any(s.ndim == 1 and len(s) > 1 and s[0] == 1 for s in shapes), "no pinned reshape"
    return model


def test_pinned_dynamo_export_matches_onnxruntime(pinned_dynamo_export: onnx.ModelProto) -> None:
    x = np.random.default_rng(3).standard_normal((7, 1, 8, 8)).astype(np.float32)
    assert parity_max_abs_diff(pinned_dynamo_export, x) <= 1e-5
    with torch.no_grad():
        got = TorchView(pinned_dynamo_export)(torch.from_numpy(x)).numpy()
    expected = _GroupNormNet().eval()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_pinned_dynamo_export_is_inspected_and_repaired_as_a_dynamic_one(
    pinned_dynamo_export: onnx.ModelProto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((400, 1, 8, 8)).astype(np.float32)
    # every prediction wrong: the repair has something to train on
    y = (np.asarray(_GroupNormNet().eval()(torch.from_numpy(x)).argmax(1)) + 1) % 3
    data = save_npz(tmp_path / "clean.npz", x=x, y=y)
    histories = []
    for name, model in (("pinned", pinned_dynamo_export), ("dynamic", _dynamo_export(2, True))):
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, path)
        code, out, err = run_cli(["inspect", path, "-d", data, "--json"], capsys)
        assert code == 0, err
        assert json.loads(out)["parity_max_abs_diff"] <= 1e-5
        output = tmp_path / f"{name}_repaired.onnx"
        repair = ["repair", path, "-d", data, "--scenario", "wrong", "--method", "ft"]
        code, out, err = run_cli(
            [*repair, "--epochs", "3", "-o", output, "--json", "--quiet"], capsys
        )
        assert code in (0, 3), err
        histories.append([(r["loss"], r["val_accuracy"]) for r in json.loads(out)["history"][1:]])
    pinned, dynamic = histories
    losses = [loss for loss, _ in pinned]
    assert len(losses) == 3 and losses[-1] < losses[0]
    np.testing.assert_allclose(pinned, dynamic, rtol=1e-5)
