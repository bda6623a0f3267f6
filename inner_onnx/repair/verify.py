"""Stage 5 (DESIGN.md): what changed, provenance, and the check of the bytes to be written."""

from __future__ import annotations

import json

import numpy as np
import onnx

from inner_onnx import __version__
from inner_onnx.io.model import OnnxModel, model_weights
from inner_onnx.runtime import Runner

PROVENANCE_KEY = "inner_onnx.provenance"


def changed_values(model: OnnxModel, proto: onnx.ModelProto) -> dict[str, int]:
    """Weight name (initializer or Constant-node output) -> how many values differ."""
    changed = {}
    for name, tensor in model_weights(proto.graph).items():
        before = onnx.numpy_helper.to_array(model.initializers[name])
        after = onnx.numpy_helper.to_array(tensor)
        count = int(np.count_nonzero(before != after))
        if count:
            changed[name] = count
    return changed


def with_provenance(proto: onnx.ModelProto, record: dict[str, object]) -> onnx.ModelProto:
    """The repaired model with what was done recorded in metadata_props (no timings: the
    same inputs and seed must give the same bytes)."""
    stamped = onnx.ModelProto()
    stamped.CopyFrom(proto)
    kept = [p for p in stamped.metadata_props if p.key != PROVENANCE_KEY]
    del stamped.metadata_props[:]
    stamped.metadata_props.extend(kept)
    entry = stamped.metadata_props.add()
    entry.key = PROVENANCE_KEY
    entry.value = json.dumps({"tool": f"inner-onnx {__version__}", **record}, sort_keys=True)
    return stamped


def verify(proto: onnx.ModelProto, measured: OnnxModel, x: np.ndarray) -> None:
    """Full ONNX check, then the bytes to be written must score exactly as the model measured."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise RuntimeError(f"repaired model fails the ONNX checker: {exc}") from None
    written = measured.with_proto(onnx.load_from_string(proto.SerializeToString()))
    sample = x[:256]
    if not np.array_equal(
        Runner(written, "cpu").scores(sample), Runner(measured, "cpu").scores(sample)
    ):
        raise RuntimeError("repaired model scores changed when its provenance was attached")
