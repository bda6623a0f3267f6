"""The official ONNX node conformance cases and how to run one through the torch view.

Shared by tests/torchview (CPU and the pretend device) and benchmarks/gpu_check.py
(CUDA). A case either matches onnx's expected outputs (the tolerances of onnx's
own backend runner, widened to a few ulps for float16 and bfloat16) or is listed
in REFUSED with the reason, and then the view must refuse it with
UnsupportedOpError instead of producing numbers.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from onnx.backend.test.case.node import collect_testcases

from inner_onnx.torchview import TorchView, supported_ops, unsupported_nodes
from inner_onnx.torchview.tensors import to_torch

_REFUSED_BY_REASON = {
    "dtype: torch has no uint16/uint32/uint64 arithmetic": """
    test_add_uint16 test_add_uint32 test_add_uint64 test_div_uint16 test_div_uint32
    test_div_uint64 test_equal_uint16 test_equal_uint32 test_equal_uint64
    test_greater_equal_uint16 test_greater_equal_uint16_expanded test_greater_equal_uint32
    test_greater_equal_uint32_expanded test_greater_equal_uint64
    test_greater_equal_uint64_expanded test_greater_uint16 test_greater_uint32
    test_greater_uint64 test_less_equal_uint16 test_less_equal_uint16_expanded
    test_less_equal_uint32 test_less_equal_uint32_expanded test_less_equal_uint64
    test_less_equal_uint64_expanded test_less_uint16 test_less_uint32 test_less_uint64
    test_max_uint16 test_max_uint32 test_max_uint64 test_min_uint16 test_min_uint32
    test_min_uint64 test_mod_uint16 test_mod_uint32 test_mod_uint64 test_mul_uint16
    test_mul_uint32 test_mul_uint64 test_pow_types_float32_uint32 test_pow_types_float32_uint64
    test_sub_uint16 test_sub_uint32 test_sub_uint64 test_top_k_uint64
    """,
    "dtype: torch has no float8/float4/sub-byte integer/string tensors": """
    test_cast_FLOAT16_to_FLOAT4E2M1 test_cast_FLOAT16_to_FLOAT8E4M3FN
    test_cast_FLOAT16_to_FLOAT8E4M3FNUZ test_cast_FLOAT16_to_FLOAT8E5M2
    test_cast_FLOAT16_to_FLOAT8E5M2FNUZ test_cast_FLOAT16_to_INT2 test_cast_FLOAT16_to_INT4
    test_cast_FLOAT16_to_UINT2 test_cast_FLOAT16_to_UINT4 test_cast_FLOAT4E2M1_to_FLOAT
    test_cast_FLOAT4E2M1_to_FLOAT16 test_cast_FLOAT8E4M3FNUZ_to_FLOAT
    test_cast_FLOAT8E4M3FNUZ_to_FLOAT16 test_cast_FLOAT8E4M3FN_to_FLOAT
    test_cast_FLOAT8E4M3FN_to_FLOAT16 test_cast_FLOAT8E5M2FNUZ_to_FLOAT
    test_cast_FLOAT8E5M2FNUZ_to_FLOAT16 test_cast_FLOAT8E5M2_to_FLOAT
    test_cast_FLOAT8E5M2_to_FLOAT16 test_cast_FLOAT_to_FLOAT4E2M1
    test_cast_FLOAT_to_FLOAT8E4M3FN test_cast_FLOAT_to_FLOAT8E4M3FNUZ
    test_cast_FLOAT_to_FLOAT8E5M2 test_cast_FLOAT_to_FLOAT8E5M2FNUZ test_cast_FLOAT_to_INT2
    test_cast_FLOAT_to_INT4 test_cast_FLOAT_to_UINT2 test_cast_FLOAT_to_UINT4
    test_cast_INT2_to_FLOAT test_cast_INT2_to_FLOAT16 test_cast_INT2_to_INT8
    test_cast_INT4_to_FLOAT test_cast_INT4_to_FLOAT16 test_cast_INT4_to_INT8
    test_cast_UINT2_to_FLOAT test_cast_UINT2_to_FLOAT16 test_cast_UINT2_to_UINT8
    test_cast_UINT4_to_FLOAT test_cast_UINT4_to_FLOAT16 test_cast_UINT4_to_UINT8
    test_cast_e8m0_FLOAT16_to_FLOAT8E8M0 test_cast_e8m0_FLOAT8E8M0_to_FLOAT
    test_cast_e8m0_FLOAT8E8M0_to_FLOAT16 test_cast_e8m0_FLOAT_to_FLOAT8E8M0
    test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FN
    test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2
    test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FN
    test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ test_cast_no_saturate_FLOAT_to_FLOAT8E5M2
    test_cast_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ test_castlike_FLOAT16_to_FLOAT4E2M1
    test_castlike_FLOAT16_to_FLOAT4E2M1_expanded test_castlike_FLOAT16_to_FLOAT8E4M3FN
    test_castlike_FLOAT16_to_FLOAT8E4M3FNUZ test_castlike_FLOAT16_to_FLOAT8E4M3FNUZ_expanded
    test_castlike_FLOAT16_to_FLOAT8E4M3FN_expanded test_castlike_FLOAT16_to_FLOAT8E5M2
    test_castlike_FLOAT16_to_FLOAT8E5M2FNUZ test_castlike_FLOAT16_to_FLOAT8E5M2FNUZ_expanded
    test_castlike_FLOAT16_to_FLOAT8E5M2_expanded test_castlike_FLOAT16_to_INT2
    test_castlike_FLOAT16_to_INT2_expanded test_castlike_FLOAT16_to_INT4
    test_castlike_FLOAT16_to_INT4_expanded test_castlike_FLOAT16_to_UINT2
    test_castlike_FLOAT16_to_UINT2_expanded test_castlike_FLOAT16_to_UINT4
    test_castlike_FLOAT16_to_UINT4_expanded test_castlike_FLOAT4E2M1_to_FLOAT
    test_castlike_FLOAT4E2M1_to_FLOAT16 test_castlike_FLOAT4E2M1_to_FLOAT16_expanded
    test_castlike_FLOAT4E2M1_to_FLOAT_expanded test_castlike_FLOAT8E4M3FNUZ_to_FLOAT
    test_castlike_FLOAT8E4M3FNUZ_to_FLOAT16 test_castlike_FLOAT8E4M3FNUZ_to_FLOAT16_expanded
    test_castlike_FLOAT8E4M3FNUZ_to_FLOAT_expanded test_castlike_FLOAT8E4M3FN_to_FLOAT
    test_castlike_FLOAT8E4M3FN_to_FLOAT16 test_castlike_FLOAT8E4M3FN_to_FLOAT16_expanded
    test_castlike_FLOAT8E4M3FN_to_FLOAT_expanded test_castlike_FLOAT8E5M2FNUZ_to_FLOAT
    test_castlike_FLOAT8E5M2FNUZ_to_FLOAT16 test_castlike_FLOAT8E5M2FNUZ_to_FLOAT16_expanded
    test_castlike_FLOAT8E5M2FNUZ_to_FLOAT_expanded test_castlike_FLOAT8E5M2_to_FLOAT
    test_castlike_FLOAT8E5M2_to_FLOAT16 test_castlike_FLOAT8E5M2_to_FLOAT16_expanded
    test_castlike_FLOAT8E5M2_to_FLOAT_expanded test_castlike_FLOAT_to_FLOAT4E2M1
    test_castlike_FLOAT_to_FLOAT4E2M1_expanded test_castlike_FLOAT_to_FLOAT8E4M3FN
    test_castlike_FLOAT_to_FLOAT8E4M3FNUZ test_castlike_FLOAT_to_FLOAT8E4M3FNUZ_expanded
    test_castlike_FLOAT_to_FLOAT8E4M3FN_expanded test_castlike_FLOAT_to_FLOAT8E5M2
    test_castlike_FLOAT_to_FLOAT8E5M2FNUZ test_castlike_FLOAT_to_FLOAT8E5M2FNUZ_expanded
    test_castlike_FLOAT_to_FLOAT8E5M2_expanded test_castlike_FLOAT_to_INT2
    test_castlike_FLOAT_to_INT2_expanded test_castlike_FLOAT_to_INT4
    test_castlike_FLOAT_to_INT4_expanded test_castlike_FLOAT_to_UINT2
    test_castlike_FLOAT_to_UINT2_expanded test_castlike_FLOAT_to_UINT4
    test_castlike_FLOAT_to_UINT4_expanded test_castlike_INT2_to_FLOAT
    test_castlike_INT2_to_FLOAT16 test_castlike_INT2_to_FLOAT16_expanded
    test_castlike_INT2_to_FLOAT_expanded test_castlike_INT2_to_INT8
    test_castlike_INT2_to_INT8_expanded test_castlike_INT4_to_FLOAT
    test_castlike_INT4_to_FLOAT16 test_castlike_INT4_to_FLOAT16_expanded
    test_castlike_INT4_to_FLOAT_expanded test_castlike_INT4_to_INT8
    test_castlike_INT4_to_INT8_expanded test_castlike_UINT2_to_FLOAT
    test_castlike_UINT2_to_FLOAT16 test_castlike_UINT2_to_FLOAT16_expanded
    test_castlike_UINT2_to_FLOAT_expanded test_castlike_UINT2_to_UINT8
    test_castlike_UINT2_to_UINT8_expanded test_castlike_UINT4_to_FLOAT
    test_castlike_UINT4_to_FLOAT16 test_castlike_UINT4_to_FLOAT16_expanded
    test_castlike_UINT4_to_FLOAT_expanded test_castlike_UINT4_to_UINT8
    test_castlike_UINT4_to_UINT8_expanded test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FN
    test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ
    test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ_expanded
    test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FN_expanded
    test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2
    test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ
    test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ_expanded
    test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2_expanded
    test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FN
    test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ
    test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ_expanded
    test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FN_expanded
    test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2
    test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ
    test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ_expanded
    test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2_expanded test_equal_string
    test_equal_string_broadcast
    """,
    "training mode (random Dropout mask, batch statistics): the view runs inference": """
    test_batchnorm_epsilon_training_mode test_batchnorm_example_training_mode
    test_training_dropout test_training_dropout_default test_training_dropout_default_mask
    test_training_dropout_mask test_training_dropout_zero_ratio
    test_training_dropout_zero_ratio_mask
    """,
    "Resize antialias is not implemented": """
    test_resize_downsample_scales_cubic_antialias test_resize_downsample_scales_linear_antialias
    test_resize_downsample_sizes_cubic_antialias test_resize_downsample_sizes_linear_antialias
    """,
}
REFUSED = {name: reason for reason, names in _REFUSED_BY_REASON.items() for name in names.split()}


def _covered(case, supported: set[str]) -> bool:
    ops = {node.op_type for node in case.model.graph.node}
    if not unsupported_nodes(case.model):
        return True
    # A case of a supported op that drags in an unsupported one: it must be refused.
    return "expanded" not in case.name and bool(ops & supported)


def _collect() -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    supported = set(supported_ops())
    return [case for case in cases if case.kind == "node" and _covered(case, supported)]


CASES = _collect()
# The cases whose outputs the view must reproduce.
MATCHED = [case for case in CASES if case.name not in REFUSED]


def _array(value) -> np.ndarray:
    return (
        numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)
    )


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach()
    return tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()


def _dtype_name(tensor: torch.Tensor) -> str:
    return "bfloat16" if tensor.dtype == torch.bfloat16 else tensor.detach().numpy().dtype.name


def _tolerances(case, dtype: torch.dtype) -> tuple[float, float]:
    if dtype in (torch.float16, torch.bfloat16):
        # onnx's rtol (1e-3) is below one ulp of bfloat16: allow a few ulps.
        ulps = 4 * torch.finfo(dtype).eps
        return max(case.rtol, ulps), max(case.atol, ulps)
    return case.rtol, case.atol


def run_case(case, device: torch.device | str = "cpu") -> None:
    """Run `case` with the view and its inputs on `device`; outputs must stay there and match."""
    device = torch.device(device)
    view = TorchView(case.model).to(device)
    for inputs, expected_outputs in case.data_sets:
        got = view(*[to_torch(_array(value)).to(device) for value in inputs])
        got = got if isinstance(got, tuple) else (got,)
        assert len(got) == len(expected_outputs)
        for tensor, expected in zip(got, expected_outputs):
            assert tensor.device.type == device.type, f"an output is on {tensor.device}"
            tensor = tensor.detach().cpu()
            expected = _array(expected)
            assert _dtype_name(tensor) == expected.dtype.name
            rtol, atol = _tolerances(case, tensor.dtype)
            np.testing.assert_allclose(
                _numpy(tensor),
                expected.astype(np.float32) if expected.dtype.name == "bfloat16" else expected,
                rtol=rtol,
                atol=atol,
                equal_nan=True,
            )
