"""inspect reports what it can: inputs, outputs, units named by activation op, parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.support.cli import run_cli, save_npz
from tests.support.models import tiny_cnn
from tests.support.variants import dynamic_spatial_cnn, token_classifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_dynamic_spatial_dims_without_data_ask_for_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dynamic.onnx"
    onnx.save(dynamic_spatial_cnn(), path)
    status, out, err = run_cli(["inspect", path], capsys)
    assert (status, out) == (2, "")
    assert len(err.strip().splitlines()) == 1
    assert "unknown dims [N, 1, ?, ?]" in err and "give -d DATA.npz" in err
    x = np.random.default_rng(0).random((3, 1, 12, 12)).astype(np.float32)
    data = save_npz(tmp_path / "data.npz", x=x, y=np.zeros(3, np.int64))
    status, out, err = run_cli(["inspect", path, "-d", data, "--json"], capsys)
    assert status == 0, err
    assert json.loads(out)["parity_max_abs_diff"] <= 1e-5


def test_report_of_a_model_repair_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two inputs, one of them int64: described in full, the refusal under `problems`."""
    model = tiny_cnn()
    model.graph.input.append(
        onnx.helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["N", 7])
    )
    path = tmp_path / "two_inputs.onnx"
    onnx.save(model, path)
    status, out, err = run_cli(["inspect", path, "--json"], capsys)
    assert status == 0, err
    info = json.loads(out)
    assert [(i["name"], i["dtype"], i["shape"]) for i in info["inputs"]] == [
        ("x", "float", [None, 1, 8, 8]),
        ("ids", "int64", ["N", 7]),
    ]
    assert [(u["op"], u["activation"]) for u in info["units"]] == [("Conv", "Relu"), ("Gemm", None)]
    assert info["class_output"] == "logits" and info["parity_max_abs_diff"] <= 1e-5
    assert "2 inputs" in info["problems"][0]
    status, out, _ = run_cli(["inspect", path], capsys)
    assert status == 0 and "cannot repair: model has 2 inputs" in out


def test_evaluate_inspect_and_repair_a_two_input_int64_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "text.onnx"
    onnx.save(token_classifier(), path)
    rng = np.random.default_rng(1)
    ids, mask = rng.integers(0, 10, (20, 6)), np.ones((20, 6), np.int64)
    data = save_npz(
        tmp_path / "d.npz", input_ids=ids, attention_mask=mask, y=rng.integers(0, 3, 20)
    )
    status, out, err = run_cli(["evaluate", path, "-d", data, "--json"], capsys)
    assert status == 0, err
    assert 0 <= json.loads(out)["accuracy"] <= 1
    status, out, err = run_cli(["inspect", path, "-d", data, "--json"], capsys)
    assert status == 0, err
    assert json.loads(out)["parity_max_abs_diff"] <= 1e-5
    assert [u["op"] for u in json.loads(out)["units"]] == ["Gather", "Gemm"]
    # a text model (token ids read by an embedding): repaired like any other
    args = ["repair", path, "-d", data, "--scenario", "wrong", "-o", tmp_path / "r.onnx"]
    status, _, err = run_cli(args, capsys)
    assert status in (0, 3), err
