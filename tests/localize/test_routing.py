"""The unit subgraph routing re-runs under the gates: what it must carry along."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from inner_onnx.io.model import OnnxModel
from inner_onnx.localize.probes import LinearProbe
from inner_onnx.localize.routing import RoutingSettings, UnitRouter, unit_subgraph
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


def linear_units_model() -> onnx.ModelProto:
    """Conv (with its bias), Gemm (transB, with C) and MatMul + Add: the three units whose
    output is linear in their weight, each before a ReLU."""
    rng = np.random.default_rng(1)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)

    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["conv_act"]),
            helper.make_node("Flatten", ["conv_act"], ["flat"]),
            helper.make_node("Gemm", ["flat", "g", "c"], ["gemm"], name="gemm", transB=1),
            helper.make_node("Relu", ["gemm"], ["gemm_act"]),
            helper.make_node("MatMul", ["gemm_act", "m"], ["matmul"], name="matmul"),
            helper.make_node("Add", ["matmul", "m_bias"], ["logits"]),
        ],
        "linear_units",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
        [
            weight("w", 6, 1, 3, 3),
            weight("b", 6),
            weight("g", 8, 96),
            weight("c", 8),
            weight("m", 8, 3),
            weight("m_bias", 3),
        ],
    )
    return _opset17_model(graph)


def test_output_scaled_neuron_votes_equal_the_gated_weight_votes() -> None:
    """Scaling each neuron's share of the output by its gate routes as gating its weight
    slice does: same votes on Conv, Gemm and MatMul units; weight gates keep the vmap path."""
    model = OnnxModel(linear_units_model())
    x = torch.randn(24, 1, 4, 4)
    labels = np.arange(24) % 3
    view = model.torch_view()
    settings = RoutingSettings(granularity="neuron", steps=15, step_size=0.5, l1=0.02)
    for name in ("conv", "gemm", "matmul"):
        unit = model.unit(name)
        with torch.no_grad():
            _, captured = view(x, capture=[unit.activation])
        probe = LinearProbe(3)
        activation = captured[unit.activation]
        probe.fit(probe.torch_features(activation, unit).numpy(), labels)
        fast = UnitRouter(model, unit, probe, settings)
        slow = UnitRouter(model, unit, probe, settings)
        slow.scales_output = False
        _, inputs = view(x, capture=[fast.input_name])
        votes = fast.votes(inputs[fast.input_name], chunk=10)
        assert fast.scales_output
        assert 0 < votes.sum() < 24 * unit.neurons  # the gates moved: some votes, not all
        np.testing.assert_array_equal(votes, slow.votes(inputs[slow.input_name], chunk=10))
    weights = UnitRouter(model, unit, probe, RoutingSettings(granularity="weight"))
    assert not weights.scales_output
