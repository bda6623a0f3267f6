"""Write tensor values back into ONNX initializers, keeping their storage layout."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

_TYPED_FIELDS = {
    onnx.TensorProto.FLOAT: "float_data",
    onnx.TensorProto.DOUBLE: "double_data",
    # float16 values are stored as their uint16 bit patterns in int32_data.
    onnx.TensorProto.FLOAT16: "int32_data",
}


def store_if_changed(tensor: onnx.TensorProto, value: np.ndarray) -> bool:
    """Put `value` into `tensor` if it differs bitwise; same dtype, dims and storage field."""
    original = numpy_helper.to_array(tensor)
    value = np.ascontiguousarray(value, dtype=original.dtype).reshape(original.shape)
    if value.tobytes() == original.tobytes():
        return False
    if tensor.HasField("raw_data"):
        tensor.raw_data = value.astype(original.dtype.newbyteorder("<")).tobytes()
        return True
    field = _TYPED_FIELDS[tensor.data_type]
    flat = value.reshape(-1)
    if tensor.data_type == onnx.TensorProto.FLOAT16:
        flat = flat.view(np.uint16).astype(np.int32)
    storage = getattr(tensor, field)
    del storage[:]
    storage.extend(flat.tolist())
    return True
