"""Small ONNX classifiers built with onnx.helper."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_cnn(layout: str = "NCHW", classes: int = 4, seed: int = 0) -> onnx.ModelProto:
    """Conv-Relu-GlobalAveragePool-Flatten-Gemm on 1x8x8 images; NHWC adds a leading Transpose."""
    rng = np.random.default_rng(seed)
    shape = [None, 1, 8, 8] if layout == "NCHW" else [None, 8, 8, 1]
    nodes = []
    image = "x"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
        image = "x_nchw"
    nodes += [
        helper.make_node("Conv", [image, "conv.w", "conv.b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["conv_relu"]),
        helper.make_node("GlobalAveragePool", ["conv_relu"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(size=(6, 1, 3, 3)).astype(np.float32), "conv.w"),
        numpy_helper.from_array(rng.normal(size=6).astype(np.float32), "conv.b"),
        numpy_helper.from_array(rng.normal(size=(classes, 6)).astype(np.float32), "fc.w"),
        numpy_helper.from_array(rng.normal(size=classes).astype(np.float32), "fc.b"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
