"""What `inspect` reports about a model: graph facts, units, op support, view parity.

It reports what it can: a model the rest of the tool refuses (several inputs, an
integer input, no clear class output, no weights) is still described, with the
reason under `problems`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx

from inner_onnx.errors import InputError
from inner_onnx.io.data import Dataset, Inputs, load_npz
from inner_onnx.io.model import (
    OnnxModel,
    input_specs,
    model_weights,
    parse_model,
    read_model_bytes,
)
from inner_onnx.io.outputs import class_output, output_candidates
from inner_onnx.io.units import find_units
from inner_onnx.torchview.graph import graph_inputs


def _dtype_name(elem_type: int) -> str:
    return onnx.TensorProto.DataType.Name(elem_type).lower()


def _value_info(value: onnx.ValueInfoProto) -> dict[str, object]:
    dims = value.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    return {
        "name": value.name,
        "shape": shape,
        # A ZipMap's output is a sequence of maps: say so rather than "undefined".
        "dtype": _dtype_name(value.type.tensor_type.elem_type)
        if value.type.HasField("tensor_type")
        else str(value.type.WhichOneof("value")).removesuffix("_type"),
    }


def random_batch(model: OnnxModel, batch: int = 8, seed: int = 0) -> np.ndarray | Inputs:
    """Inputs drawn to the inputs' shapes (unknown dims: `batch`, else 1): floats uniform in
    [0, 1), integers (token ids, masks) 0 or 1."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in model.inputs:
        shape = [batch] + [d or 1 for d in spec.shape[1:]]
        values = rng.random(shape) if spec.numpy_dtype.kind == "f" else rng.integers(0, 2, shape)
        arrays[spec.name] = values.astype(spec.numpy_dtype)
    return Inputs(arrays) if len(arrays) > 1 else next(iter(arrays.values()))


def parity_outputs(model: OnnxModel) -> list[str]:
    """What parity compares: the class scores, and every other graph output the view runs
    (not, say, the labels a scikit-learn export looks up beside its probabilities)."""
    from inner_onnx.torchview import unsupported_nodes

    others = [
        value.name
        for value in model.proto.graph.output
        if value.name != model.output_name and not unsupported_nodes(model.proto, [value.name])
    ]
    return [model.output_name, *others]


def _parity(model: OnnxModel, data: Dataset | None) -> tuple[float | None, str | None]:
    """Torch view against onnxruntime on the data (else a random batch): (diff, why not)."""
    from inner_onnx.runtime import parity_max_abs_diff

    x = data.x[:64] if data is not None else random_batch(model)
    try:
        return float(parity_max_abs_diff(model.proto, x, parity_outputs(model))), None
    except (InputError, RuntimeError) as exc:
        if data is not None and isinstance(exc, InputError):
            raise  # the user's data does not fit the model: theirs to fix
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        unknown = [spec for spec in model.inputs if any(d is None for d in spec.shape[1:])]
        if data is None and unknown:
            # The guessed size (1 for each unknown dim) is the likely culprit, not the model.
            dims = ["N", *(str(d or "?") for d in unknown[0].shape[1:])]
            raise InputError(
                f"input {unknown[0].name!r} has unknown dims [{', '.join(dims)}] and the model "
                "does not run at a guessed size: give -d DATA.npz so the shapes are known"
            ) from None
        return None, first


def inspect_file(
    path: str | Path, data: str | Path | None = None, output: str | None = None
) -> dict[str, object]:
    """Describe the model at `path`; a file that is no ONNX model, or a bad `output` or `data`,
    is an `InputError`, anything else the tool cannot use is listed under `problems`."""
    path = Path(path)
    raw = read_model_bytes(path)
    proto = parse_model(raw, path)
    sha256 = hashlib.sha256(raw).hexdigest()
    graph = proto.graph
    if output is not None:
        class_output(graph, output)  # a wrong name is the user's to fix, not a finding
    from inner_onnx.torchview import unsupported_nodes

    problems: list[str] = []
    model: OnnxModel | None = None
    try:
        model = OnnxModel(proto, path, sha256, output)
        model.check_repairable()
    except InputError as exc:
        problems.append(str(exc))
    dataset = load_npz(data, model) if data is not None else None
    weights = model_weights(graph)
    units = model.units if model is not None else find_units(graph, weights)
    unsupported = unsupported_nodes(proto)
    parity, parity_error = None, None
    if model is not None and not unsupported_nodes(proto, [model.output_name]):
        parity, parity_error = _parity(model, dataset)
    chosen = model.output_name if model is not None else None
    return {
        "path": str(path),
        "sha256": sha256,
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "ir_version": proto.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
        "inputs": [
            dict(_value_info(v), layout=spec.layout)
            for v, spec in zip(graph_inputs(graph, weights), input_specs(graph, weights))
        ],
        "outputs": [_value_info(v) for v in graph.output],
        "output_candidates": [
            {"name": name, "classes": classes} for name, classes in output_candidates(graph)
        ],
        "class_output": chosen,
        "num_classes": model.num_classes if model is not None else None,
        "units": [u.to_dict() for u in units],
        "unit_parameters": sum(u.parameters for u in units),
        "op_types": sorted({node.op_type for node in graph.node}),
        "unsupported_ops": [{"op": op, "node": node} for op, node in unsupported],
        "parity_max_abs_diff": parity,
        "parity_error": parity_error,
        "problems": problems,
    }
