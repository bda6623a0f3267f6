"""What the CLI prints where (issue 7): --json is the only thing on stdout, strict JSON;
progress bars go to stderr and --quiet silences them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.support.backdoor import (
    ONE_HIDDEN_NEURON,
    backdoored_model_bytes,
    bar_images,
    trigger_options,
)
from tests.support.cli import run_cli, save_npz
from tests.support.models import tiny_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def case(tmp_path: Path) -> dict[str, Path]:
    model = tmp_path / "model.onnx"
    model.write_bytes(backdoored_model_bytes())
    x, y = bar_images(60, seed=13)
    y[::10] = (y[::10] + 1) % 3
    patch = tmp_path / "patch.npy"
    np.save(patch, np.ones((1, 2, 2), np.float32))
    return {"model": model, "data": save_npz(tmp_path / "data.npz", x=x, y=y), "patch": patch}


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def strict_json(text: str) -> dict:
    """One JSON object and nothing else, as a strict parser (jq, JavaScript) would read it."""
    payload = json.loads(text, parse_constant=_reject_constant)
    assert isinstance(payload, dict)
    return payload


def _commands(case: dict[str, Path], folder: Path) -> dict[str, list[object]]:
    model, data = case["model"], case["data"]
    return {
        "inspect": ["inspect", model, "-d", data],
        "evaluate": ["evaluate", model, "-d", data, "--attack", "pgd:eps=0.1,steps=3"],
        "localize": ["localize", model, "-d", data, "--scenario", "wrong", "-o", folder / "f.json"],
        "repair": [
            *["repair", model, "-d", data, *trigger_options(case["patch"])],
            *["--epochs", 2, *ONE_HIDDEN_NEURON, "-o", folder / "out.onnx"],
        ],
    }


# Steps that take visible time in each command, in the order their bars appear.
STEPS = {
    "evaluate": ["attack pgd"],
    "localize": ["activations", "probes", "activations of bad samples", "neuron routing"],
    "repair": ["probes", "neuron routing", "repair epochs"],
}
# The short repair of these tests misses its targets: exit 3 and one line on stderr.
STATUS = {"repair": 3}
JSON_KEYS = {
    "inspect": {"units", "unsupported_ops", "parity_max_abs_diff"},
    "evaluate": {"accuracy", "robust_accuracy", "per_class_accuracy"},
    "localize": {"output", "neurons"},
    "repair": {"output", "before", "after", "changed_weights", "history"},
}


@pytest.mark.parametrize("command", list(JSON_KEYS))
def test_json_is_all_of_stdout_and_strict(
    command: str, case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli([*_commands(case, tmp_path)[command], "--json"], capsys)
    assert status == STATUS.get(command, 0), err
    payload = strict_json(out)
    assert JSON_KEYS[command] <= set(payload)
    assert not any(step in out for step in STEPS.get(command, []))


@pytest.mark.parametrize("command", list(STEPS))
def test_progress_bars_on_stderr_in_order(
    command: str, case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli(_commands(case, tmp_path)[command], capsys)
    assert status == STATUS.get(command, 0), err
    positions = [err.find(step) for step in STEPS[command]]
    assert -1 not in positions, err
    assert positions == sorted(positions), err
    assert not any(step in out for step in STEPS[command])


@pytest.mark.parametrize("command", list(STEPS))
def test_quiet_silences_stderr(
    command: str, case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli([*_commands(case, tmp_path)[command], "--quiet"], capsys)
    assert status == STATUS.get(command, 0), err
    # a finding (exit 3) still gets its one line: a pipeline must see why
    assert err == "" if status == 0 else err.startswith("targets missed: ") and err.count("\n") == 1
    assert out.strip(), "--quiet silences progress, not the result"


def test_json_implies_no_progress_on_either_stream(
    case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli([*_commands(case, tmp_path)["localize"], "--json"], capsys)
    assert status == 0, err
    assert err == ""
    strict_json(out)


def _subprocess(args: list[object]) -> subprocess.CompletedProcess[str]:
    """The installed entry point in a real process, stdout and stderr piped as in a pipeline."""
    return subprocess.run(
        [sys.executable, "-m", "inner_onnx", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "60"},
        check=False,
    )


def test_real_process_json_and_error(case: dict[str, Path], tmp_path: Path) -> None:
    """In a real process: pure JSON on a pipe; a bad input gives exit 2 and one stderr line."""
    process = _subprocess([*_commands(case, tmp_path)["evaluate"], "--json"])
    assert process.returncode == 0, process.stderr
    assert strict_json(process.stdout)["robust_accuracy"] is not None
    missing = tmp_path / "missing.onnx"
    process = _subprocess(["evaluate", missing, "-d", case["data"], "--json"])
    assert process.returncode == 2
    assert process.stdout == ""
    assert process.stderr.strip().splitlines() == [f"error: model file not found: {missing}"]


def test_long_error_line_is_not_wrapped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A narrow terminal must not break the one error line in two."""
    deep = tmp_path.joinpath(*["a_rather_long_folder_name"] * 8)
    status, _, err = run_cli(["inspect", deep / "model.onnx"], capsys)
    assert status == 2
    assert len(err.strip().splitlines()) == 1


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from inner_onnx import __version__

    status, out, err = run_cli(["--version"], capsys)
    assert (status, err) == (0, "")
    assert out.strip() == f"inner-onnx {__version__}"


def test_json_stays_strict_when_a_number_is_not_finite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model whose scores are NaN (Log of negative logits) makes the parity NaN: null, not NaN."""
    model = tiny_cnn()
    model.graph.node.append(helper.make_node("Log", ["logits"], ["scores"]))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 4]))
    path = tmp_path / "nan_scores.onnx"
    onnx.save(model, path)
    status, out, err = run_cli(["inspect", path, "--json"], capsys)
    assert status == 0, err
    assert strict_json(out)["parity_max_abs_diff"] is None
