"""Facts about an ONNX graph that the view and the model reader share."""

from __future__ import annotations

from collections.abc import Iterable

import onnx

FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)


def graph_inputs(graph: onnx.GraphProto, initializers: dict) -> list[onnx.ValueInfoProto]:
    """Real inputs: graph inputs that are not initializers (old IRs list both)."""
    return [vi for vi in graph.input if vi.name not in initializers]


def value_dims(value: onnx.ValueInfoProto) -> tuple[int | None, ...]:
    """A value's dims, None where a dim is symbolic or unknown."""
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims)


def fixed_batch(inputs: Iterable[onnx.ValueInfoProto]) -> int | None:
    """The batch size the first shaped input pins on axis 0 (an export without a dynamic batch
    axis pins the example's, often 1), or None where that axis is free."""
    return next((dims[0] for dims in map(value_dims, inputs) if dims), None)


def node_names(graph: onnx.GraphProto) -> list[str]:
    """Node names, with `op_index` standing in for empty ones, unique over the graph."""
    names: list[str] = []
    seen: set[str] = set()
    for index, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{index}"
        if name in seen:
            name = f"{name}_{index}"
        seen.add(name)
        names.append(name)
    return names


def constant_weights(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Float tensors held in `Constant` nodes' `value`, by the node's output name.

    Older exporters (paddle2onnx before 1.0) write weights this way instead of
    as initializers; both are weights to the model reader and the view.
    """
    constants = {}
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            continue
        for attribute in node.attribute:
            if attribute.name == "value" and attribute.t.data_type in FLOAT_TYPES:
                constants[node.output[0]] = attribute.t
    return constants


def needed_nodes(graph: onnx.GraphProto, outputs: Iterable[str]) -> set[int]:
    """Indices of the nodes that `outputs` depend on (a classifier's scores need no label
    branch: scikit-learn exports compute their labels beside the probabilities)."""
    wanted = set(outputs)
    needed = set()
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        if wanted.intersection(node.output):
            needed.add(index)
            wanted.update(node.input)
    return needed
