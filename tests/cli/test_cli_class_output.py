"""--output NAME picks the class scores on every command; -o/--out stays the file to write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.support.cli import run_cli, save_npz
from tests.support.variants import two_output_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def ambiguous(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "two.onnx"
    proto = two_output_cnn("out")
    onnx.save(proto, model)
    x = (3 * np.random.default_rng(3).normal(size=(48, 1, 8, 8))).astype(np.float32)
    # Labels the model mostly gets right, so every class has correct and wrong samples.
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(["out"], {"x": x})[0].argmax(axis=1)
    y[::4] = (y[::4] + 1) % 4
    return model, save_npz(tmp_path / "data.npz", x=x, y=y)


def _commands(model: Path, data: Path, folder: Path) -> dict[str, list[object]]:
    return {
        "inspect": ["inspect", model, "--json"],
        "evaluate": ["evaluate", model, "-d", data, "--json"],
        "localize": ["localize", model, "-d", data, "--scenario", "wrong", "--out", folder / "f"],
        "repair": [
            *["repair", model, "-d", data, "--scenario", "wrong", "--epochs", 1],
            *["-o", folder / "r.onnx", "--json", "-q"],
        ],
    }


@pytest.mark.parametrize("command", ["inspect", "evaluate", "localize", "repair"])
def test_ambiguous_outputs_refused_then_named(
    command: str, ambiguous: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, data = ambiguous
    args = _commands(model, data, tmp_path)[command]
    status, out, err = run_cli(args, capsys)
    if command == "inspect":
        # inspect describes the model and says why the rest of the tool refuses it
        assert status == 0, err
        (problem,) = json.loads(out)["problems"]
        err = problem
    else:
        assert status == 2
    assert "flat [N, 6], out [N, 4]" in err and "--output NAME" in err
    status, out, err = run_cli([*args, "--output", "out"], capsys)
    assert status in (0, 3), err
    if command == "inspect":
        info = json.loads(out)
        assert info["class_output"] == "out"
        assert [c["name"] for c in info["output_candidates"]] == ["flat", "out"]
    if command == "evaluate":
        assert len(json.loads(out)["per_class_accuracy"]) == 4
