"""Weights held in Constant nodes (older paddle2onnx): units, view parity, exact write-back."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from inner_onnx.io.model import OnnxModel
from inner_onnx.torchview import TorchView
from tests.support.models import tiny_cnn
from tests.support.variants import constant_matmul_mlp, constant_weight_cnn


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_constant_weights_are_units_like_initializers() -> None:
    def described(model: onnx.ModelProto) -> list[dict[str, object]]:
        # Unnamed nodes are named by position, which the Constant nodes shift.
        return [{**u.to_dict(), "name": None} for u in OnnxModel(model).units]

    assert described(constant_weight_cnn()) == described(tiny_cnn())


def test_matmul_and_gemm_on_constants() -> None:
    units = OnnxModel(constant_matmul_mlp()).units
    described = [(u.op, u.weight, u.bias, u.neurons, u.neuron_axis) for u in units]
    assert described == [("MatMul", "w1", "b1", 7, 1), ("Gemm", "w2", "b2", 3, 1)]


@pytest.mark.parametrize("build", [constant_weight_cnn, constant_matmul_mlp])
def test_view_parity_and_constant_parameters(build) -> None:
    model = build()
    shape = (5, 1, 8, 8) if build is constant_weight_cnn else (5, 5)
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    view = TorchView(model)
    for unit in OnnxModel(model).units:
        assert view.parameter(unit.weight).requires_grad
    with torch.no_grad():
        got = view(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, _ort(model, x), atol=1e-5)


def test_write_back_changes_only_that_constant() -> None:
    model = constant_weight_cnn()
    view = TorchView(model)
    with torch.no_grad():
        view.parameter("fc.w")[0, 0] += 1.0
    written = view.write_back()
    changed = [
        (before.name, before.output[0])
        for before, after in zip(model.graph.node, written.graph.node)
        if before.SerializeToString() != after.SerializeToString()
    ]
    assert changed == [("const_fc.w", "fc.w")]
    value = numpy_helper.to_array(written.graph.node[2].attribute[0].t)
    original = numpy_helper.to_array(model.graph.node[2].attribute[0].t)
    assert value[0, 0] == pytest.approx(original[0, 0] + 1.0)
    # everything else byte-identical: undo the one change and compare whole models
    written.graph.node[2].CopyFrom(model.graph.node[2])
    assert written.SerializeToString() == model.SerializeToString()
    onnx.checker.check_model(view.write_back(), full_check=True)


def test_untouched_write_back_is_byte_identical() -> None:
    model = constant_matmul_mlp()
    assert TorchView(model).write_back().SerializeToString() == model.SerializeToString()


def test_routing_subgraph_holds_constant_weights() -> None:
    from inner_onnx.localize.routing import unit_subgraph

    model = OnnxModel(constant_weight_cnn())
    for unit in model.units:
        sub, _ = unit_subgraph(model, unit)
        assert TorchView(sub).parameter(unit.weight).shape == tuple(
            model.initializers[unit.weight].dims
        )
