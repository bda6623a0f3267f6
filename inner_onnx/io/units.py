"""Units (DESIGN.md): nodes with a constant weight whose output channels are the neurons,
and the activation that directly follows each."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from inner_onnx.torchview.graph import FLOAT_TYPES, node_names

UNIT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Gather")
# The units whose activations carry channels on axis 1 (the rest: on the last axis).
CONV_OPS = ("Conv", "ConvTranspose")
# The input that holds a unit's weight: a Gather reads its table (an embedding) first and
# the token ids second; every other unit reads its data first.
WEIGHT_INPUT = {"Gather": 0}
# Element-wise activations whose output is taken as the unit's activation.
ACTIVATION_OPS = frozenset(
    {
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Elu",
        "Selu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "Clip",
        "Softplus",
        "Softsign",
        "Gelu",
        "Mish",
        "ThresholdedRelu",
        "Celu",
    }
)


@dataclass(frozen=True)
class Unit:
    """A node with a constant weight (initializer or Constant node); neurons: output channels."""

    name: str
    op: str
    weight: str
    bias: str | None
    neuron_axis: int
    neurons: int
    parameters: int
    output: str
    # The tensor read as the unit's activation (its output when no activation follows) ...
    activation: str
    # ... and the op that computes it (Relu, Gelu, ...), None when no activation follows.
    activation_op: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "op": self.op,
            "weight": self.weight,
            "bias": self.bias,
            "neurons": self.neurons,
            "parameters": self.parameters,
            "activation": self.activation_op,
            "activation_tensor": self.activation,
        }


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _is_float(init: onnx.TensorProto | None) -> bool:
    return init is not None and init.data_type in FLOAT_TYPES


def weight_input(op: str) -> int:
    """Index of the unit's weight among its node's inputs."""
    return WEIGHT_INPUT.get(op, 1)


def data_input(op: str) -> int:
    """Index of the unit's data (the tensor the weight is applied to) among its node's inputs."""
    return 1 - weight_input(op)


def find_units(graph: onnx.GraphProto, initializers: dict[str, onnx.TensorProto]) -> list[Unit]:
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    units = []
    for name, node in zip(node_names(graph), graph.node):
        if node.op_type not in UNIT_OPS or len(node.input) < 2:
            continue
        weight_name = node.input[weight_input(node.op_type)]
        weight = initializers.get(weight_name)
        if not _is_float(weight) or len(weight.dims) < 2:
            continue
        dims = list(weight.dims)
        if node.op_type == "Gather":
            if len(dims) != 2 or _attr(node, "axis", 0) != 0:
                continue
            axis = 1  # a [vocabulary, C] table: a neuron is one embedding dimension
        elif node.op_type == "Conv":
            axis = 0
        elif node.op_type == "ConvTranspose":
            if _attr(node, "group", 1) != 1:
                # an output channel of a grouped transposed conv is a block over two weight
                # axes, not a slice of one: not a unit neuron repair can mask
                continue
            axis = 1  # weight is [C_in, C_out, k...]
        elif node.op_type == "Gemm":
            axis = 0 if _attr(node, "transB", 0) else 1
        else:
            if len(dims) != 2:
                continue
            axis = 1
        neurons = dims[axis]
        bias = None
        if node.op_type in ("Conv", "ConvTranspose", "Gemm") and len(node.input) > 2:
            candidate = initializers.get(node.input[2])
            if _is_float(candidate) and int(np.prod(candidate.dims)) == neurons:
                bias = node.input[2]
        output = node.output[0]
        if node.op_type == "MatMul" or (node.op_type in ("Conv", "ConvTranspose") and not bias):
            bias_shape = (
                [neurons] if node.op_type == "MatMul" else [neurons] + [1] * (len(dims) - 2)
            )
            bias, output = _bias_after(output, bias_shape, consumers, initializers, outputs, bias)
        activation, activation_op = _activation_after(output, consumers, initializers, outputs)
        parameters = int(np.prod(dims)) + (
            int(np.prod(initializers[bias].dims)) if bias is not None else 0
        )
        units.append(
            Unit(
                name,
                node.op_type,
                weight_name,
                bias,
                axis,
                neurons,
                parameters,
                output,
                activation,
                activation_op,
            )
        )
    return units


def _activation_after(
    output: str,
    consumers: dict[str, list[onnx.NodeProto]],
    initializers: dict[str, onnx.TensorProto],
    graph_outputs: set[str],
) -> tuple[str, str | None]:
    """The unit's activation tensor and op: past per-channel affine nodes (a BatchNormalization,
    or the Mul/Add pair a folded one becomes in Keras and tf2onnx graphs) to the element-wise
    activation after them; the unit's own output and None when no activation follows."""
    tensor = output
    while tensor not in graph_outputs:
        followers = consumers.get(tensor, [])
        if len(followers) != 1:
            break
        node = followers[0]
        if node.op_type in ACTIVATION_OPS:
            return node.output[0], node.op_type
        constant_operand = node.op_type in ("Mul", "Add") and any(
            name in initializers for name in node.input if name != tensor
        )
        if node.op_type != "BatchNormalization" and not constant_operand:
            break
        tensor = node.output[0]
    return output, None


def _bias_after(
    output: str,
    bias_shape: list[int],
    consumers: dict[str, list[onnx.NodeProto]],
    initializers: dict[str, onnx.TensorProto],
    graph_outputs: set[str],
    bias: str | None,
) -> tuple[str | None, str]:
    """A unit without its own bias followed by an Add of one value per neuron: the Add holds
    the bias. A MatMul's is [C] (Keras, tf2onnx); a Conv's is [C, 1, 1], leading ones
    allowed (CNTK, the ONNX Model Zoo's mnist-8)."""
    followers = consumers.get(output, [])
    if len(followers) != 1 or followers[0].op_type != "Add" or output in graph_outputs:
        return bias, output
    add = followers[0]
    other = add.input[1] if add.input[0] == output else add.input[0]
    candidate = initializers.get(other)
    if not _is_float(candidate):
        return bias, output
    dims = list(candidate.dims)
    while len(dims) > len(bias_shape) and dims[0] == 1:
        dims = dims[1:]
    if dims == bias_shape or (len(bias_shape) == 1 and int(np.prod(dims)) == bias_shape[0]):
        return other, add.output[0]
    return bias, output
