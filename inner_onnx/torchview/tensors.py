"""Conversions between ONNX tensors/types and torch tensors/dtypes."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from inner_onnx.torchview.registry import UnsupportedOpError

TORCH_DTYPES: dict[int, torch.dtype] = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.BOOL: torch.bool,
}


_NUMPY_TYPES = frozenset(
    ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64")
)


def torch_dtype(onnx_type: int) -> torch.dtype:
    if onnx_type not in TORCH_DTYPES:
        name = onnx.TensorProto.DataType.Name(onnx_type)
        raise UnsupportedOpError(f"tensor type {name} is not supported by the torch view")
    return TORCH_DTYPES[onnx_type]


def to_torch(array: np.ndarray) -> torch.Tensor:
    """A torch copy of a numpy array (bfloat16 arrives as ml_dtypes, which torch cannot read)."""
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
    if array.dtype.name in ("uint16", "uint32", "uint64"):
        raise UnsupportedOpError(
            f"tensor dtype {array.dtype} is not supported (torch lacks uint16/32/64 arithmetic)"
        )
    if array.dtype.name not in _NUMPY_TYPES:
        raise UnsupportedOpError(f"tensor dtype {array.dtype} is not supported by the torch view")
    return torch.from_numpy(np.array(array, copy=True))


def tensor_from_proto(tensor: onnx.TensorProto) -> torch.Tensor:
    torch_dtype(tensor.data_type)
    return to_torch(numpy_helper.to_array(tensor))
