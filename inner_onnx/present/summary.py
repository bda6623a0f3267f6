"""What `inspect` reports about a model: graph facts, units, op support, view parity."""

from __future__ import annotations

import numpy as np
import onnx

from inner_onnx.io.data import Dataset
from inner_onnx.io.model import OnnxModel, output_candidates
from inner_onnx.torchview.graph import graph_inputs


def _dtype_name(elem_type: int) -> str:
    return onnx.TensorProto.DataType.Name(elem_type).lower()


def _value_info(value: onnx.ValueInfoProto) -> dict[str, object]:
    dims = value.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    return {
        "name": value.name,
        "shape": shape,
        "dtype": _dtype_name(value.type.tensor_type.elem_type),
    }


def random_batch(model: OnnxModel, batch: int = 8, seed: int = 0) -> np.ndarray:
    """A batch drawn uniformly in [0, 1) to the input's shape (dynamic dims: batch, else 1)."""
    shape = [batch] + [d or 1 for d in model.input.shape[1:]]
    return np.random.default_rng(seed).random(shape).astype(model.input.numpy_dtype)


def describe(model: OnnxModel, data: Dataset | None = None) -> dict[str, object]:
    from inner_onnx.runtime import parity_max_abs_diff
    from inner_onnx.torchview import unsupported_nodes

    proto = model.proto
    graph = proto.graph
    unsupported = unsupported_nodes(proto)
    parity = None
    if not unsupported:
        x = data.x[:64] if data is not None else random_batch(model)
        parity = float(parity_max_abs_diff(proto, x))
    inputs = graph_inputs(graph, model.initializers)
    return {
        "path": str(model.path) if model.path else None,
        "sha256": model.sha256,
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "ir_version": proto.ir_version,
        "opsets": model.opsets,
        "inputs": [dict(_value_info(v), layout=model.input.layout) for v in inputs],
        "outputs": [_value_info(v) for v in graph.output],
        "output_candidates": [
            {"name": name, "classes": classes} for name, classes in output_candidates(graph)
        ],
        "class_output": model.output_name,
        "num_classes": model.num_classes,
        "units": [u.to_dict() for u in model.units],
        "unit_parameters": sum(u.parameters for u in model.units),
        "op_types": model.op_types(),
        "unsupported_ops": [{"op": op, "node": node} for op, node in unsupported],
        "parity_max_abs_diff": parity,
    }
