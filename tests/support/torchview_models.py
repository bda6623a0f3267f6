"""Models for the torch view tests: PyTorch exports (both exporters) and Keras-style graphs."""

from __future__ import annotations

import functools
import io
import warnings

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper


class SmallCNN(torch.nn.Module):
    """Conv, unfoldable BatchNorm (after ReLU), depthwise conv, Dropout, adaptive pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.BatchNorm2d(8),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 8, 3, groups=8),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.3),
            torch.nn.AdaptiveAvgPool2d(3),
        )
        self.classifier = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(72, 32),
            torch.nn.BatchNorm1d(32),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.5),
            torch.nn.Linear(32, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MixedNet(torch.nn.Module):
    """Squeeze-excite, channel split, transposed conv, bilinear resize, reflect pad, LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.squeeze = torch.nn.Conv2d(16, 4, 1)
        self.excite = torch.nn.Conv2d(4, 16, 1)
        self.up = torch.nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.branch = torch.nn.Conv2d(16, 8, 3, padding=1)
        self.norm = torch.nn.LayerNorm(16)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.hardswish(self.stem(x))
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean((2, 3), keepdim=True)))))
        a, b = torch.chunk(x * gate, 2, dim=1)
        x = torch.cat([b, a], 1)
        up = F.interpolate(self.up(x), scale_factor=0.5, mode="bilinear", align_corners=False)
        x = torch.cat([up, self.branch(x)], 1)
        x = F.max_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 2)
        x = F.gelu(self.norm(x.flatten(2).transpose(1, 2))).mean(1)
        return F.log_softmax(self.head(x) * 5, -1)


def trained_looking_cnn() -> SmallCNN:
    torch.manual_seed(0)
    net = SmallCNN()
    # Non-trivial running statistics, so BatchNorm really does something.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    # Logits of a trained classifier's magnitude, so a 1e-4 parity bound means something.
    net.classifier[-1].weight.data *= 20
    return net.eval()


def export_torchscript(
    net: torch.nn.Module, example: torch.Tensor, opset: int | None = None
) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return onnx.load_from_string(buffer.getvalue())


def export_dynamo(
    net: torch.nn.Module, example: torch.Tensor, opset: int | None = None
) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            net,
            (example,),
            dynamo=True,
            opset_version=opset,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    return program.model_proto


def _init(rng: np.random.Generator, name: str, shape, scale: float = 0.3) -> TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def keras_style_cnn(seed: int = 0) -> onnx.ModelProto:
    """The shape of a tf2onnx export of a small Keras CNN.

    NHWC input and a Transpose to NCHW, batch norm folded into Mul/Add, the
    flatten as Shape -> Gather -> Unsqueeze -> Concat -> Reshape, dense layers
    as MatMul + Add, and a final Softmax.
    """
    rng = np.random.default_rng(seed)
    conv_w, conv_b = "sequential/conv2d/Conv2D/ReadVariableOp:0", "sequential/conv2d/BiasAdd:0"
    dense_w, dense_b = "sequential/dense/MatMul/ReadVariableOp:0", "sequential/dense/BiasAdd:0"
    out_w, out_b = "sequential/dense_1/MatMul/ReadVariableOp:0", "sequential/dense_1/BiasAdd:0"
    initializers = [
        _init(rng, conv_w, (6, 1, 3, 3)),
        _init(rng, conv_b, (6,), 0.1),
        numpy_helper.from_array(
            rng.uniform(0.5, 1.5, (1, 6, 1, 1)).astype(np.float32), "sequential/bn/mul:0"
        ),
        _init(rng, "sequential/bn/add:0", (1, 6, 1, 1), 0.1),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "const_zero"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "const_axes_0"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "const_minus_one"),
        _init(rng, dense_w, (6 * 13 * 13, 16), 0.05),
        _init(rng, dense_b, (16,), 0.1),
        _init(rng, out_w, (16, 10), 1.0),
        _init(rng, out_b, (10,), 0.1),
    ]
    node = helper.make_node
    nodes = [
        node("Transpose", ["input_1"], ["nchw"], perm=[0, 3, 1, 2], name="tr_in"),
        node("Conv", ["nchw", conv_w, conv_b], ["conv"], name="conv2d", kernel_shape=[3, 3]),
        node("Mul", ["conv", "sequential/bn/mul:0"], ["bn_mul"], name="bn_mul"),
        node("Add", ["bn_mul", "sequential/bn/add:0"], ["bn_add"], name="bn_add"),
        node("Relu", ["bn_add"], ["relu"], name="conv2d/Relu"),
        node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        node("Transpose", ["pool"], ["nhwc"], perm=[0, 2, 3, 1], name="tr_out"),
        node("Shape", ["nhwc"], ["shape"], name="flatten/Shape"),
        node("Gather", ["shape", "const_zero"], ["batch"], axis=0, name="flatten/Gather"),
        node("Unsqueeze", ["batch", "const_axes_0"], ["batch1"], name="flatten/Unsqueeze"),
        node("Concat", ["batch1", "const_minus_one"], ["flat_shape"], axis=0, name="flatten/c"),
        node("Reshape", ["nhwc", "flat_shape"], ["flat"], name="flatten/Reshape"),
        node("MatMul", ["flat", dense_w], ["d1"], name="dense/MatMul"),
        node("Add", ["d1", dense_b], ["d1b"], name="dense/BiasAdd"),
        node("Relu", ["d1b"], ["d1r"], name="dense/Relu"),
        node("MatMul", ["d1r", out_w], ["d2"], name="dense_1/MatMul"),
        node("Add", ["d2", out_b], ["d2b"], name="dense_1/BiasAdd"),
        node("Softmax", ["d2b"], ["probabilities"], axis=-1, name="dense_1/Softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "keras_style",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["N", 28, 28, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tf2onnx"
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _mixed_net() -> MixedNet:
    torch.manual_seed(0)
    return MixedNet().eval()


_SOURCES = {"cnn": (trained_looking_cnn, (1, 28, 28)), "mixed": (_mixed_net, (3, 32, 32))}
# name -> (source module, exporter, opset or None for the exporter's default)
_EXPORTS = {
    "torchscript_cnn": ("cnn", export_torchscript, None),
    "torchscript_cnn_opset11": ("cnn", export_torchscript, 11),
    "dynamo_cnn": ("cnn", export_dynamo, None),
    "mixed_torchscript": ("mixed", export_torchscript, None),
    "mixed_torchscript_opset11": ("mixed", export_torchscript, 11),
    "mixed_dynamo": ("mixed", export_dynamo, None),
}
ALL_MODELS = [*_EXPORTS, "keras_cnn"]


@functools.cache
def source_module(name: str) -> torch.nn.Module:
    build, _ = _SOURCES[name]
    return build()


@functools.cache
def model_named(name: str) -> onnx.ModelProto:
    """Each export runs once per session (the dynamo exporter takes seconds)."""
    if name == "keras_cnn":
        return keras_style_cnn()
    source, exporter, opset = _EXPORTS[name]
    example = torch.randn(2, *_SOURCES[source][1])
    if opset is None:
        return exporter(source_module(source), example)
    return exporter(source_module(source), example, opset)


def batch_for(model: onnx.ModelProto, size: int = 16, seed: int = 1) -> np.ndarray:
    """A random float32 batch for the model's single input (symbolic dims become `size`)."""
    initializer_names = {init.name for init in model.graph.initializer}
    value = next(vi for vi in model.graph.input if vi.name not in initializer_names)
    dims = value.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else size for d in dims]
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
