"""Load an ONNX classifier safely and describe it: input spec, output, units.

Everything downstream (runtime, torch view, probes, repair) works from an
`OnnxModel`. Loading refuses, with one line, anything that is not a
single-input float classifier with weight initializers, and never follows an
external-data reference out of the model's folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from inner_onnx.errors import InputError
from inner_onnx.torchview.graph import FLOAT_TYPES, graph_inputs, node_names

if TYPE_CHECKING:
    import torch

    from inner_onnx.torchview import TorchView

UNIT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
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
    """A node with a weight initializer; its neurons are its output channels."""

    name: str
    op: str
    weight: str
    bias: str | None
    neuron_axis: int
    neurons: int
    parameters: int
    output: str
    activation: str

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "op": self.op,
            "weight": self.weight,
            "bias": self.bias,
            "neurons": self.neurons,
            "parameters": self.parameters,
            "activation": self.activation,
        }


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | None, ...]
    elem_type: int
    layout: str  # "NCHW", "NHWC", "NC" (flat features) or "other"

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.elem_type))


class OnnxModel:
    """A validated ONNX classifier with its units and input/output description."""

    def __init__(self, proto: onnx.ModelProto, path: Path | None = None, sha256: str = ""):
        self.proto = proto
        self.path = path
        self.sha256 = sha256 or hashlib.sha256(proto.SerializeToString()).hexdigest()
        graph = proto.graph
        self.initializers = {init.name: init for init in graph.initializer}
        self.input = _input_spec(graph, self.initializers)
        self.output_name, self.num_classes = _class_output(graph)
        self.logits_name = _logits_name(graph, self.output_name)
        self.units = find_units(graph, self.initializers)
        if not self.units:
            raise InputError(
                "model has no weight initializers in Conv/ConvTranspose/Gemm/MatMul nodes: "
                "nothing to repair"
            )

    @classmethod
    def load(cls, path: str | Path) -> OnnxModel:
        path = Path(path)
        raw = read_model_bytes(path)
        proto = parse_model(raw, path)
        return cls(proto, path, hashlib.sha256(raw).hexdigest())

    @property
    def opsets(self) -> dict[str, int]:
        return {(o.domain or "ai.onnx"): o.version for o in self.proto.opset_import}

    def unit(self, name: str) -> Unit:
        for unit in self.units:
            if unit.name == name:
                return unit
        raise InputError(f"no unit named {name!r}; units: {', '.join(u.name for u in self.units)}")

    def op_types(self) -> list[str]:
        return sorted({node.op_type for node in self.proto.graph.node})

    def torch_view(self, frozen: bool = False, device: torch.device | str = "cpu") -> TorchView:
        """The one way to get the model's class scores as a differentiable torch module, in
        inference mode, its parameters on `device`; `frozen`: no parameter takes gradients
        (attacks, teachers)."""
        from inner_onnx.torchview import TorchView

        view = TorchView(self.proto, outputs=[self.logits_name]).eval().to(device)
        return view.requires_grad_(False) if frozen else view


def read_model_bytes(path: Path) -> bytes:
    if not path.exists():
        raise InputError(f"model file not found: {path}")
    if path.is_dir():
        raise InputError(f"model path is a folder, not an .onnx file: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read model file {path}: {exc.strerror}") from None
    if not raw:
        raise InputError(f"model file is empty: {path}")
    return raw


def parse_model(raw: bytes, path: Path) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError):
        raise InputError(f"not an ONNX model (cannot parse protobuf): {path}") from None
    if not proto.HasField("graph") or not proto.graph.node or not proto.opset_import:
        raise InputError(f"not an ONNX model (no graph, nodes or opset): {path}")
    _load_external_data(proto, path.parent)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
        raise InputError(f"invalid ONNX model {path}: {first}") from None
    except UnicodeDecodeError:
        # The checker's message quotes a name that is not UTF-8 and cannot itself be decoded.
        raise InputError(f"invalid ONNX model {path}: a name in it is not UTF-8 text") from None
    return proto


def _external_tensors(proto: onnx.ModelProto) -> Iterable[onnx.TensorProto]:
    for init in proto.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            yield init
    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.HasField("t") and attr.t.data_location == onnx.TensorProto.EXTERNAL:
                yield attr.t


def _load_external_data(proto: onnx.ModelProto, base_dir: Path) -> None:
    """Load external tensors, refusing (before reading) any location outside `base_dir`."""
    tensors = list(_external_tensors(proto))
    if not tensors:
        return
    root = base_dir.resolve()
    for tensor in tensors:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        try:
            target = (root / location).resolve()
            outside = (
                not location or Path(location).is_absolute() or not target.is_relative_to(root)
            )
            missing = not outside and not target.is_file()
        except (OSError, ValueError, RuntimeError):
            # A NUL byte, an over-long name or a symlink loop: no file can be read there.
            raise InputError(
                f"external data of tensor {tensor.name!r} has an unusable location "
                f"{location[:80]!r}: refused"
            ) from None
        if outside:
            raise InputError(
                f"external data of tensor {tensor.name!r} points outside the model's folder "
                f"({location!r}): refused"
            )
        if missing:
            raise InputError(f"external data file of tensor {tensor.name!r} is missing: {target}")
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, str(root))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read external data: {exc}") from None


def _dims(value: onnx.ValueInfoProto) -> tuple[int | None, ...]:
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims)


def _input_spec(graph: onnx.GraphProto, initializers: dict) -> InputSpec:
    inputs = graph_inputs(graph, initializers)
    if len(inputs) != 1:
        names = ", ".join(vi.name for vi in inputs) or "none"
        raise InputError(
            f"model has {len(inputs)} inputs ({names}); inner-onnx repairs single-input classifiers"
        )
    value = inputs[0]
    if not value.type.HasField("tensor_type"):
        raise InputError(f"model input {value.name!r} is not a tensor")
    elem_type = value.type.tensor_type.elem_type
    if elem_type not in FLOAT_TYPES:
        type_name = onnx.TensorProto.DataType.Name(elem_type)
        raise InputError(
            f"model input {value.name!r} is {type_name}; inner-onnx needs a float input "
            "(the gradients of repair and attacks flow through it)"
        )
    shape = _dims(value)
    return InputSpec(value.name, shape, elem_type, _layout(graph, value.name, shape))


def _layout(graph: onnx.GraphProto, input_name: str, shape: tuple[int | None, ...]) -> str:
    if len(shape) == 2:
        return "NC"
    if len(shape) != 4:
        return "other"
    consumers = [n for n in graph.node if input_name in n.input]
    for node in consumers:
        if node.op_type == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [])
            if perm == [0, 3, 1, 2]:
                return "NHWC"
        if node.op_type == "Conv":
            return "NCHW"
    channels_first, channels_last = shape[1], shape[3]
    if channels_last in (1, 3, 4) and channels_first not in (1, 3, 4):
        return "NHWC"
    return "NCHW"


def _class_output(graph: onnx.GraphProto) -> tuple[str, int]:
    for value in graph.output:
        tensor_type = value.type.tensor_type
        shape = _dims(value)
        if tensor_type.elem_type in FLOAT_TYPES and len(shape) == 2 and (shape[1] or 0) >= 2:
            return value.name, int(shape[1])  # type: ignore[arg-type]
    described = ", ".join(f"{v.name}{list(_dims(v))}" for v in graph.output)
    raise InputError(
        f"model output is not class scores (need a float [N, classes] output, classes >= 2; "
        f"got {described})"
    )


def _logits_name(graph: onnx.GraphProto, output: str) -> str:
    """The tensor before a final Softmax (Keras ends in one): losses need logits."""
    for node in graph.node:
        if output in node.output and node.op_type == "Softmax":
            return node.input[0]
    return output


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


def find_units(graph: onnx.GraphProto, initializers: dict[str, onnx.TensorProto]) -> list[Unit]:
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    units = []
    for name, node in zip(node_names(graph), graph.node):
        if node.op_type not in UNIT_OPS or len(node.input) < 2:
            continue
        weight = initializers.get(node.input[1])
        if not _is_float(weight) or len(weight.dims) < 2:
            continue
        dims = list(weight.dims)
        if node.op_type == "Conv":
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
                bias = candidate.name
        output = node.output[0]
        if node.op_type == "MatMul":
            bias, output = _matmul_bias(output, neurons, consumers, initializers, outputs, bias)
        activation = _activation_after(output, consumers, initializers, outputs)
        parameters = int(np.prod(dims)) + (
            int(np.prod(initializers[bias].dims)) if bias is not None else 0
        )
        units.append(
            Unit(
                name, node.op_type, weight.name, bias, axis, neurons, parameters, output, activation
            )
        )
    return units


def _activation_after(
    output: str,
    consumers: dict[str, list[onnx.NodeProto]],
    initializers: dict[str, onnx.TensorProto],
    graph_outputs: set[str],
) -> str:
    """The unit's activation tensor: past per-channel affine nodes (a BatchNormalization, or
    the Mul/Add pair a folded one becomes in Keras and tf2onnx graphs) to the element-wise
    activation after them; the unit's own output when no activation follows."""
    tensor = output
    while tensor not in graph_outputs:
        followers = consumers.get(tensor, [])
        if len(followers) != 1:
            break
        node = followers[0]
        if node.op_type in ACTIVATION_OPS:
            return node.output[0]
        constant_operand = node.op_type in ("Mul", "Add") and any(
            name in initializers for name in node.input if name != tensor
        )
        if node.op_type != "BatchNormalization" and not constant_operand:
            break
        tensor = node.output[0]
    return output


def _matmul_bias(
    output: str,
    neurons: int,
    consumers: dict[str, list[onnx.NodeProto]],
    initializers: dict[str, onnx.TensorProto],
    graph_outputs: set[str],
    bias: str | None,
) -> tuple[str | None, str]:
    """A MatMul followed by Add with a [C] initializer: the Add holds the bias (Keras, tf2onnx)."""
    followers = consumers.get(output, [])
    if len(followers) != 1 or followers[0].op_type != "Add" or output in graph_outputs:
        return bias, output
    add = followers[0]
    other = add.input[1] if add.input[0] == output else add.input[0]
    candidate = initializers.get(other)
    if _is_float(candidate) and int(np.prod(candidate.dims)) == neurons:
        return candidate.name, add.output[0]
    return bias, output
