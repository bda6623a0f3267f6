"""A ViT-style encoder (patch tokens, attention, LayerNorm, Gelu MLP) through every command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.support.cli import run_cli, save_npz
from tests.support.vit import tiny_vit_bytes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_inspect_localize_repair_on_a_vit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "vit.onnx"
    model.write_bytes(tiny_vit_bytes())
    x = (3 * np.random.default_rng(3).normal(size=(60, 1, 8, 8))).astype(np.float32)
    session = ort.InferenceSession(model.read_bytes(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"input": x})[0].argmax(axis=1)
    y[::5] = (y[::5] + 1) % 3  # some samples the model gets wrong
    data = save_npz(tmp_path / "data.npz", x=x, y=y)
    capsys.readouterr()  # the exporter's progress lines, if it ran just now

    status, out, err = run_cli(["inspect", model, "--json"], capsys)
    assert status == 0, err
    info = json.loads(out)
    assert "Gelu" in [u["activation"] for u in info["units"]]
    assert info["parity_max_abs_diff"] <= 1e-4

    faults = tmp_path / "faults.json"
    args = ["localize", model, "-d", data, "--scenario", "wrong", "-o", faults, "--json"]
    status, out, err = run_cli(args, capsys)
    assert status == 0, err
    record = json.loads(faults.read_text())
    assert len(record["settings"]["units_not_probed"]) == 2

    repaired = tmp_path / "repaired.onnx"
    args = ["repair", model, "-d", data, "--scenario", "wrong", "--epochs", 1, "-o", repaired]
    status, out, err = run_cli([*args, "--json"], capsys)
    assert status in (0, 3), err
    summary = json.loads(out)
    assert summary["epochs_run"] == 1
    # one epoch may find nothing better: then nothing is written (exit 3)
    assert repaired.is_file() == (summary["output"] is not None)
