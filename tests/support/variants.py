"""Models that stretch the loader: several outputs, Constant-node weights, dynamic sizes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.support.models import tiny_cnn


def two_output_cnn(score_name: str = "logits") -> onnx.ModelProto:
    """tiny_cnn that also outputs its [N, 6] embedding, listed before the [N, 4] scores."""
    model = tiny_cnn()
    graph = model.graph
    for node in graph.node:
        node.output[:] = [score_name if o == "logits" else o for o in node.output]
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info("flat", TensorProto.FLOAT, [None, 6]),
            helper.make_tensor_value_info(score_name, TensorProto.FLOAT, [None, 4]),
        ]
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def constant_weight_cnn(seed: int = 0) -> onnx.ModelProto:
    """tiny_cnn with every weight and bias in a Constant node, as older paddle2onnx writes them."""
    model = tiny_cnn(seed=seed)
    graph = model.graph
    constants = [
        helper.make_node("Constant", [], [init.name], value=init, name=f"const_{init.name}")
        for init in graph.initializer
    ]
    del graph.initializer[:]
    nodes = [*constants, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model, full_check=True)
    return model


def constant_matmul_mlp(seed: int = 0) -> onnx.ModelProto:
    """x[N, 5] -> MatMul(Constant W1) + b1 -> Relu -> Gemm(Constant W2) -> logits[N, 3]."""
    rng = np.random.default_rng(seed)

    def constant(name: str, array: np.ndarray) -> onnx.NodeProto:
        # unnamed tensors, as some exporters write them: the Constant's output names the weight
        tensor = numpy_helper.from_array(array.astype(np.float32))
        return helper.make_node("Constant", [], [name], value=tensor)

    nodes = [
        constant("w1", rng.normal(size=(5, 7))),
        constant("b1", rng.normal(size=7)),
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["hr"]),
        constant("w2", rng.normal(size=(7, 3))),
        constant("b2", rng.normal(size=3)),
        helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 5])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def dynamic_spatial_cnn() -> onnx.ModelProto:
    """A CNN whose input is [N, 1, H, W] with H and W unknown, and a 5x5 valid conv in it.

    Random 1x1 inputs (what `inspect` draws when H and W are unknown) are too small for it.
    """
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "conv.w"], ["conv"]),
        helper.make_node("Relu", ["conv"], ["conv_relu"]),
        helper.make_node("GlobalAveragePool", ["conv_relu"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc.w"], ["logits"], transB=1),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(size=(3, 1, 5, 5)).astype(np.float32), "conv.w"),
        numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "fc.w"),
    ]
    graph = helper.make_graph(
        nodes,
        "dynamic_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def token_classifier(seed: int = 0) -> onnx.ModelProto:
    """Text-model inputs: int64 `input_ids` and `attention_mask` [N, 6] -> masked mean of
    a [10, 8] embedding -> Gemm -> logits [N, 3]."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["embedded"]),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "last"], ["mask3"]),
        helper.make_node("Mul", ["embedded", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "tokens"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask", "tokens"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["safe_count"]),
        helper.make_node("Div", ["summed", "safe_count"], ["mean"]),
        helper.make_node("Gemm", ["mean", "fc.w", "fc.b"], ["logits"], transB=1),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(size=(10, 8)).astype(np.float32), "table"),
        numpy_helper.from_array(np.array([-1], np.int64), "last"),
        numpy_helper.from_array(np.array([1], np.int64), "tokens"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(rng.normal(size=(3, 8)).astype(np.float32), "fc.w"),
        numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "fc.b"),
    ]
    graph = helper.make_graph(
        nodes,
        "token_classifier",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", 6]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", 6]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
