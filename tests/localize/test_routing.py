"""The unit subgraph routing re-runs under the gates: what it must carry along."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from inner_onnx.io.model import OnnxModel
from inner_onnx.localize.routing import unit_subgraph
from inner_onnx.torchview import TorchView


def _opset17_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def relu6_model() -> onnx.ModelProto:
    """Conv then Clip(0, 6) with its bounds from Constant nodes, as torch exports ReLU6."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "fc")
    scalar = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node(
                "Constant", [], ["lo"], value=helper.make_tensor("lo", scalar, [], [0])
            ),
            helper.make_node(
                "Constant", [], ["hi"], value=helper.make_tensor("hi", scalar, [], [6])
            ),
            helper.make_node("Clip", ["conv", "lo", "hi"], ["act"]),
            helper.make_node("GlobalAveragePool", ["act"], ["pool"]),
            helper.make_node("Flatten", ["pool"], ["flat"]),
            helper.make_node("MatMul", ["flat", "fc"], ["logits"], name="fc"),
        ],
        "relu6",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 5, 5])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
        [weight, fc],
    )
    return _opset17_model(graph)


def test_constants_feeding_the_activation_go_into_the_subgraph() -> None:
    model = OnnxModel(relu6_model())
    unit = model.unit("conv")
    sub, unit_input = unit_subgraph(model, unit)
    assert unit_input == "x"
    x = torch.randn(2, 1, 5, 5) * 10
    with torch.no_grad():
        got = TorchView(sub)(x)
        _, captured = model.torch_view()(x, capture=[unit.activation])
    torch.testing.assert_close(got, captured[unit.activation])
    assert float(got.max()) <= 6.0


def aliased_bias_model() -> onnx.ModelProto:
    """A Gemm whose bias is an Identity alias of another layer's bias, as the TorchScript
    exporter writes equal weights (a fresh BERT's zero biases)."""
    rng = np.random.default_rng(1)
    tensors = {
        "w1": rng.normal(size=(4, 3)).astype(np.float32),
        "w2": rng.normal(size=(3, 3)).astype(np.float32),
        "b": rng.normal(size=3).astype(np.float32),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["b"], ["b_alias"]),
            helper.make_node("Gemm", ["x", "w1", "b"], ["h"], name="first"),
            helper.make_node("Relu", ["h"], ["act"]),
            helper.make_node("Gemm", ["act", "w2", "b_alias"], ["logits"], name="second"),
        ],
        "aliased",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(value, name) for name, value in tensors.items()],
    )
    return _opset17_model(graph)


def test_weight_aliases_feeding_the_unit_go_into_the_subgraph() -> None:
    model = OnnxModel(aliased_bias_model())
    unit = model.unit("second")
    sub, unit_input = unit_subgraph(model, unit)
    assert unit_input == "act"
    assert [node.op_type for node in sub.graph.node] == ["Identity", "Gemm"]
    with torch.no_grad():
        _, captured = model.torch_view()(torch.randn(5, 4), capture=["act", unit.activation])
        got = TorchView(sub)(captured["act"])
    torch.testing.assert_close(got, captured[unit.activation])
