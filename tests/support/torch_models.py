"""Small real models for the runtime, probe and selection tests (torch exports and onnx.helper)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn


class TinyTorchCNN(nn.Module):
    """Conv-Relu-Conv-Relu-Flatten-Linear-Relu-Linear on 1x8x8 images.

    Every Relu is its own module, so forward hooks read each unit's activation.
    """

    def __init__(self, classes: int = 3, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2)
        self.relu2 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(6 * 3 * 3, 8)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc2(self.relu3(self.fc1(self.flatten(x))))

    # Modules whose outputs are the ONNX units' activations, in graph order.
    activation_modules = ("relu1", "relu2", "relu3", "fc2")


def export_torch(module: nn.Module, example: torch.Tensor) -> onnx.ModelProto:
    """TorchScript-based export with a dynamic batch axis, as most PyTorch users ship."""
    buffer = io.BytesIO()
    module.eval()
    with warnings.catch_warnings():
        # The TorchScript exporter announces its own deprecation on every call.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (example,),
            buffer,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return onnx.load_from_string(buffer.getvalue())


def dense_sequence_model(seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Keras-style dense layers (MatMul + Add) on [N, 4, 5] sequences, and their weights.

    The first dense layer acts per position (a rank-3 MatMul, channels last); the
    second is a plain [N, 28] x [28, 3] MatMul + Add.
    """
    rng = np.random.default_rng(seed)
    weights = {
        "w1": rng.normal(size=(5, 7)).astype(np.float32),
        "b1": rng.normal(size=7).astype(np.float32),
        "w2": rng.normal(size=(28, 3)).astype(np.float32),
        "b2": rng.normal(size=3).astype(np.float32),
    }
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["mm1"], name="dense1"),
            helper.make_node("Add", ["mm1", "b1"], ["dense1_out"]),
            helper.make_node("Relu", ["dense1_out"], ["dense1_act"]),
            helper.make_node("Flatten", ["dense1_act"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w2"], ["mm2"], name="dense2"),
            helper.make_node("Add", ["mm2", "b2"], ["logits"]),
        ],
        "dense_sequence",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 5])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model, weights
