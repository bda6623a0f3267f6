"""Load an ONNX classifier safely and describe it: input spec, output, units.

Everything downstream (runtime, torch view, probes, repair) works from an
`OnnxModel`. Loading refuses, with one line, anything that has no class-score
output, and never follows an external-data reference out of the model's
folder; `check_repairable` refuses what localize and repair cannot work on (neither
a single float input nor a text model, no weights).

A text model takes integer inputs only, one of them token ids read by an embedding
(a Gather on a float table, a unit); an integer input whose name has `mask` in it is
its attention mask, which pooling over the tokens respects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from inner_onnx.errors import InputError
from inner_onnx.io.outputs import _logits_name, class_output
from inner_onnx.io.units import Unit, data_input, find_units
from inner_onnx.torchview.graph import FLOAT_TYPES, constant_weights, graph_inputs, value_dims

if TYPE_CHECKING:
    import torch

    from inner_onnx.torchview import TorchView


# ai.onnx.ml classifiers whose coefficients are node attributes (skl2onnx writes
# LogisticRegression, LinearSVC, SVC this way): onnxruntime evaluates them, but no
# initializer holds a weight to repair.
ATTRIBUTE_WEIGHT_OPS = frozenset({"LinearClassifier", "SVMClassifier"})


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | None, ...]
    elem_type: int
    layout: str  # "NCHW", "NHWC", "NC" (flat features) or "other"

    @property
    def numpy_dtype(self) -> np.dtype:
        try:
            return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.elem_type))
        except (KeyError, TypeError, ValueError):
            type_name = onnx.TensorProto.DataType.Name(self.elem_type)
            raise InputError(
                f"model input {self.name!r} is {type_name}, which numpy data cannot feed"
            ) from None


class OnnxModel:
    """A validated ONNX classifier with its units and input/output description."""

    def __init__(
        self,
        proto: onnx.ModelProto,
        path: Path | None = None,
        sha256: str = "",
        output: str | None = None,
    ):
        """`output` names the class-score output; see `class_output` for the default."""
        self.proto = proto
        self.path = path
        self.sha256 = sha256 or hashlib.sha256(proto.SerializeToString()).hexdigest()
        graph = proto.graph
        self.initializers = model_weights(graph)
        # Every real input, whatever its type: evaluating runs any model onnxruntime runs.
        self.inputs = input_specs(graph, self.initializers)
        if any(
            not value.type.HasField("tensor_type")
            for value in graph_inputs(graph, self.initializers)
        ):
            raise InputError("a model input is not a tensor (a sequence or map): not supported")
        self.output_name, self.num_classes = class_output(graph, output)
        self.logits_name = _logits_name(graph, self.output_name)
        self.units = find_units(graph, self.initializers)

    @property
    def input(self) -> InputSpec:
        """The one float input that repair, attacks and the probes differentiate through."""
        return _single_float_input(self.inputs)

    @property
    def token_input(self) -> InputSpec | None:
        """A text model's token ids: the integer input an embedding unit reads; None when
        the model is no text model."""
        found = self._token_embedding
        return found[1] if found is not None else None

    @property
    def token_embedding(self) -> Unit | None:
        """A text model's token embedding: the embedding unit that reads the token ids
        (its output, [N, tokens, C], is where attacks on a text model perturb)."""
        found = self._token_embedding
        return found[0] if found is not None else None

    @cached_property
    def _token_embedding(self) -> tuple[Unit, InputSpec] | None:
        if any(spec.elem_type in FLOAT_TYPES for spec in self.inputs):
            return None
        embeddings = {unit.output: unit for unit in self.units if unit.op == "Gather"}
        specs = {spec.name: spec for spec in self.inputs}
        for node in self.proto.graph.node:
            if node.op_type == "Gather" and node.output[0] in embeddings:
                ids = node.input[data_input("Gather")]
                if ids in specs:
                    return embeddings[node.output[0]], specs[ids]
        return None

    @property
    def is_text(self) -> bool:
        return self.token_input is not None

    @property
    def mask_input(self) -> InputSpec | None:
        """A text model's attention mask: its other integer input named like `*mask*`."""
        token = self.token_input
        if token is None:
            return None
        return next((s for s in self.inputs if s.name != token.name and is_mask_name(s.name)), None)

    def check_repairable(self) -> None:
        """Refuse, in one line, what localize and repair cannot work on."""
        if not self.is_text:
            _single_float_input(self.inputs)
        attribute_weights = [
            node for node in self.proto.graph.node if node.op_type in ATTRIBUTE_WEIGHT_OPS
        ]
        if not self.units and attribute_weights:
            node = attribute_weights[0]
            raise InputError(
                f"{node.op_type} node {node.name or node.output[0]!r} keeps its weights in node "
                "attributes, not initializers: inner-onnx repairs initializer weights only "
                "(a scikit-learn MLPClassifier exports its layers as initializers)"
            )
        if not self.units:
            raise InputError(
                "model has no weight initializers (nor Constant-node weights) in "
                "Conv/ConvTranspose/Gemm/MatMul nodes: nothing to repair"
            )

    @classmethod
    def load(cls, path: str | Path, output: str | None = None) -> OnnxModel:
        """Read, check and describe the model at `path`; `output` names the class scores."""
        path = Path(path)
        raw = read_model_bytes(path)
        proto = parse_model(raw, path)
        return cls(proto, path, hashlib.sha256(raw).hexdigest(), output)

    def with_proto(self, proto: onnx.ModelProto) -> OnnxModel:
        """The same model with other weights (a repair's result): same class output."""
        return OnnxModel(proto, self.path, output=self.output_name)

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


def model_weights(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Constant tensors by name: the initializers, and the float values of Constant nodes
    (by their output name), which older exporters use for weights."""
    weights = {init.name: init for init in graph.initializer}
    weights.update(constant_weights(graph))
    return weights


def is_mask_name(name: str) -> bool:
    """The naming rule for a text model's attention mask (`attention_mask`, `input_mask`)."""
    return "mask" in name.lower()


def input_specs(graph: onnx.GraphProto, initializers: dict) -> list[InputSpec]:
    """Every real graph input as it is, whatever its type (what `inspect` shows)."""
    specs = []
    for value in graph_inputs(graph, initializers):
        shape = value_dims(value)
        elem_type = value.type.tensor_type.elem_type
        specs.append(InputSpec(value.name, shape, elem_type, _layout(graph, value.name, shape)))
    return specs


def _single_float_input(specs: list[InputSpec]) -> InputSpec:
    if len(specs) != 1:
        names = ", ".join(spec.name for spec in specs) or "none"
        raise InputError(
            f"model has {len(specs)} inputs ({names}); inner-onnx repairs classifiers with one "
            "float input, or text models (integer inputs only, token ids read by an embedding)"
        )
    spec = specs[0]
    if spec.elem_type not in FLOAT_TYPES:
        type_name = onnx.TensorProto.DataType.Name(spec.elem_type)
        raise InputError(
            f"model input {spec.name!r} is {type_name}; inner-onnx needs a float input "
            "(the gradients of repair and attacks flow through it)"
        )
    return spec


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
