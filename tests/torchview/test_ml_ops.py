"""The ai.onnx.ml ops of the torch view (Scaler, Normalizer) against onnxruntime, which
evaluates every model; the official conformance cases hold none of them."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from inner_onnx.torchview import TorchView, UnsupportedOpError
from inner_onnx.torchview.registry import ML_DOMAIN, lookup

# Rows that tell the norms apart: mixed signs, all negative (MAX divides by the signed
# maximum in onnxruntime), a zero maximum with nonzero values, all zero.
ROWS = np.array(
    [[-3.0, 1.0, 2.0], [-1.0, -2.0, -0.5], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.2, 0.3, 0.1]],
    np.float32,
)


def _model(node: onnx.NodeProto, elem_type: int = TensorProto.FLOAT) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node],
        "ml",
        [helper.make_tensor_value_info("x", elem_type, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(ML_DOMAIN, 3)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8  # what this onnxruntime reads
    onnx.checker.check_model(model, full_check=True)
    return model


def _both(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x})
    got = TorchView(model)(torch.from_numpy(x)).detach().numpy()
    return got, expected


@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
def test_normalizer_matches_onnxruntime(norm: str) -> None:
    model = _model(helper.make_node("Normalizer", ["x"], ["y"], domain=ML_DOMAIN, norm=norm))
    got, expected = _both(model, ROWS)
    assert got.dtype == expected.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_normalizer_gradient_is_finite_on_a_zero_row() -> None:
    model = _model(helper.make_node("Normalizer", ["x"], ["y"], domain=ML_DOMAIN, norm="L2"))
    x = torch.from_numpy(ROWS).requires_grad_(True)
    TorchView(model)(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize(
    ("offset", "scale"), [([1.0, -2.0, 0.5], [2.0, 3.0, 0.25]), ([1.5], [-2.0])]
)
@pytest.mark.parametrize("elem_type", [TensorProto.FLOAT, TensorProto.DOUBLE])
def test_scaler_matches_onnxruntime(offset: list, scale: list, elem_type: int) -> None:
    node = helper.make_node("Scaler", ["x"], ["y"], domain=ML_DOMAIN, offset=offset, scale=scale)
    x = ROWS.astype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    got, expected = _both(_model(node, elem_type), x)
    assert got.dtype == expected.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_ml_ops_are_looked_up_in_their_domain_only() -> None:
    assert lookup("Normalizer", 3, ML_DOMAIN) is not None
    assert lookup("Normalizer", 17) is None and lookup("Relu", 3, ML_DOMAIN) is None


def test_view_runs_the_requested_outputs_without_an_unsupported_side_branch() -> None:
    """A ZipMap beside the scores is left out of the view; asked for, it is refused."""
    nodes = [
        helper.make_node("Normalizer", ["x"], ["y"], domain=ML_DOMAIN, norm="L1"),
        helper.make_node("ZipMap", ["y"], ["maps"], domain=ML_DOMAIN, classlabels_int64s=[0, 1, 2]),
    ]
    model = _model(nodes[0])
    model.graph.node.append(nodes[1])
    maps = onnx.TypeProto()
    maps.CopyFrom(
        helper.make_sequence_type_proto(
            helper.make_map_type_proto(7, helper.make_tensor_type_proto(1, []))
        )
    )
    model.graph.output.append(helper.make_value_info("maps", maps))
    onnx.checker.check_model(model, full_check=True)
    view = TorchView(model, outputs=["y"])
    got = view(torch.from_numpy(ROWS)).detach().numpy()
    np.testing.assert_allclose(np.abs(got).sum(axis=1)[ROWS.any(axis=1)], 1.0, rtol=1e-6)
    with pytest.raises(UnsupportedOpError, match="ZipMap"):
        TorchView(model)
