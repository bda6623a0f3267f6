"""Never lose or corrupt a file (issue 7): inputs untouched, outputs atomic, --force to overwrite.

The refusals (output equal to an input, missing folder, existing file without
--force) are in test_cli_errors.py; these tests cover the runs that do write.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from inner_onnx.io.model import OnnxModel
from tests.support.backdoor import (
    ONE_HIDDEN_NEURON,
    TARGET,
    backdoored_model_bytes,
    bar_images,
    stamp_patch,
    trigger_options,
)
from tests.support.cli import folder_state, run_cli, save_npz

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """A small backdoored CNN, data with a tenth of the labels wrong, the trigger, bad samples.

    Every file is made read-only, as a deployed artefact might be.
    """
    model = tmp_path / "model.onnx"
    model.write_bytes(backdoored_model_bytes())
    x, y = bar_images(60, seed=12)
    y[::10] = (y[::10] + 1) % 3
    data = save_npz(tmp_path / "data.npz", x=x, y=y)
    patch = tmp_path / "patch.npy"
    np.save(patch, np.ones((1, 2, 2), np.float32))
    bad = save_npz(tmp_path / "bad.npz", x=stamp_patch(x), y=y)
    files = {"model": model, "data": data, "patch": patch, "bad": bad}
    for path in files.values():
        path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return files


def _repair_args(
    inputs: dict[str, Path], output: Path, *extra: object, scenario: str = "backdoor"
) -> list[object]:
    """A short repair that changes weights but misses its targets (exit 3, model written);
    `scenario="wrong"`: one that changes nothing (exit 3, nothing written)."""
    source = trigger_options(inputs["patch"]) if scenario == "backdoor" else ["--scenario", "wrong"]
    return [
        "repair",
        inputs["model"],
        "-d",
        inputs["data"],
        *source,
        "--epochs",
        2,
        *ONE_HIDDEN_NEURON,
        "-q",
        "-o",
        output,
        *extra,
    ]


def _commands(inputs: dict[str, Path], folder: Path) -> dict[str, list[object]]:
    model, data = inputs["model"], inputs["data"]
    return {
        "inspect": ["inspect", model, "-d", data],
        "evaluate": [
            "evaluate",
            model,
            "-d",
            data,
            "--bad",
            inputs["bad"],
            "--target-label",
            TARGET,
        ],
        "evaluate attack": ["evaluate", model, "-d", data, "--attack", "pgd:eps=0.1,steps=2"],
        "localize": ["localize", model, "-d", data, "--scenario", "wrong", "-o", folder / "f.json"],
        "repair wrong": _repair_args(inputs, folder / "wrong.onnx", scenario="wrong"),
        "repair trigger": _repair_args(inputs, folder / "trigger.onnx"),
        "repair bad file": [
            *_repair_args(inputs, folder / "bad.onnx", scenario="wrong"),
            "--scenario",
            "backdoor",
            "--bad",
            inputs["bad"],
            "--target-label",
            TARGET,
        ],
    }


# The short backdoor repair's status: a verified model written, targets missed.
WRITTEN = 3
# (exit status, files written): the short repairs miss their targets (3) and still write
# the verified model; the wrong-prediction repair finds nothing better and writes nothing.
EXPECTED_OUTPUTS = {
    "inspect": (0, []),
    "evaluate": (0, []),
    "evaluate attack": (0, []),
    "localize": (0, ["f.json"]),
    "repair wrong": (3, []),
    "repair trigger": (3, ["trigger.onnx"]),
    "repair bad file": (3, ["bad.onnx"]),
}


@pytest.mark.parametrize("command", list(EXPECTED_OUTPUTS))
def test_inputs_unchanged_and_only_the_output_written(
    command: str, inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = folder_state(tmp_path)
    expected_status, expected_files = EXPECTED_OUTPUTS[command]
    status, _, err = run_cli(_commands(inputs, tmp_path)[command], capsys)
    assert status == expected_status, err
    after = folder_state(tmp_path)
    new = sorted(set(after) - set(before))
    assert new == expected_files, "unexpected files (a temporary file left behind?)"
    assert {name: after[name] for name in before} == before, "an input file changed"


def test_repaired_model_loads_and_carries_provenance(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out.onnx"
    status, _, err = run_cli(_repair_args(inputs, output, "--seed", 4), capsys)
    assert status == WRITTEN, err
    repaired = OnnxModel.load(output)
    original = OnnxModel.load(inputs["model"])
    assert [u.name for u in repaired.units] == [u.name for u in original.units]
    provenance = {p.key: p.value for p in repaired.proto.metadata_props}
    assert '"seed": 4' in provenance["inner_onnx.provenance"]


@pytest.fixture
def previous_output(tmp_path: Path) -> Path:
    output = tmp_path / "out.onnx"
    output.write_bytes(b"the previous model")
    return output


def test_output_written_through_a_temporary_file_in_the_target_folder(
    inputs: dict[str, Path],
    previous_output: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    output, folder = previous_output, previous_output.parent
    renames: list[tuple[Path, Path, bytes]] = []
    real_replace = os.replace

    def watching_replace(source, target) -> None:
        # At the moment of the rename the target still holds the old bytes, whole.
        renames.append((Path(source), Path(target), Path(target).read_bytes()))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", watching_replace)
    status, _, err = run_cli(_repair_args(inputs, output, "--force"), capsys)
    assert status == WRITTEN, err
    assert len(renames) == 1
    source, target, old_bytes = renames[0]
    assert target.resolve() == output.resolve() and old_bytes == b"the previous model"
    assert source.parent.resolve() == folder.resolve() and source.name.startswith(".")
    assert not source.exists()
    onnx.checker.check_model(onnx.load(output), full_check=True)


DISK_FULL = OSError(errno.ENOSPC, "No space left on device")
# Where the write fails, how, and the exit status and stderr line the user gets.
WRITE_FAILURES = {
    "disk full at fsync": ("fsync", DISK_FULL, 1, "No space left on device"),
    "disk full at rename": ("replace", DISK_FULL, 1, "No space left on device"),
    "Ctrl-C at fsync": ("fsync", KeyboardInterrupt(), 130, "^interrupted$"),
}


@pytest.mark.parametrize("failure", list(WRITE_FAILURES))
def test_failed_write_keeps_the_old_output_and_leaves_no_temporary_file(
    failure: str,
    inputs: dict[str, Path],
    previous_output: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    function, exception, expected_status, expected_line = WRITE_FAILURES[failure]
    before = folder_state(previous_output.parent)

    def failing(*_args: object) -> None:
        raise exception

    monkeypatch.setattr(os, function, failing)
    status, _, err = run_cli(_repair_args(inputs, previous_output, "--force"), capsys)
    assert status == expected_status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.search(expected_line, lines[0]), err
    assert folder_state(previous_output.parent) == before


@pytest.mark.parametrize("command", ["repair", "localize"])
def test_existing_output_replaced_only_with_force(
    command: str, inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "existing.out"
    output.write_bytes(b"keep me")
    args = _repair_args(inputs, output)
    if command == "localize":
        args = [a for a in args if a not in ("--epochs", 2, "--method", "inner_noout")]
        args[0] = "localize"
    status, _, err = run_cli(args, capsys)
    assert status == 2 and "--force" in err
    assert output.read_bytes() == b"keep me"
    status, _, err = run_cli([*args, "--force"], capsys)
    assert status == (WRITTEN if command == "repair" else 0), err
    assert output.read_bytes() != b"keep me"


def _hard_link(inputs: dict[str, Path], output: Path) -> None:
    os.link(inputs["model"], output)


def _symlink_elsewhere(inputs: dict[str, Path], output: Path) -> None:
    output.symlink_to(output.parent / "elsewhere.bin")


@pytest.mark.parametrize("link", [_hard_link, _symlink_elsewhere], ids=["hard link", "symlink"])
def test_forced_output_through_a_link_replaces_the_link_not_its_target(
    link: Callable[[dict[str, Path], Path], None],
    inputs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A hard link to the input model, or a symlink to another file: neither is written through."""
    elsewhere = tmp_path / "elsewhere.bin"
    elsewhere.write_bytes(b"someone else's file")
    model_bytes = inputs["model"].read_bytes()
    output = tmp_path / "out.onnx"
    link(inputs, output)
    status, _, err = run_cli(_repair_args(inputs, output, "--force"), capsys)
    assert status == WRITTEN, err
    assert inputs["model"].read_bytes() == model_bytes
    assert elsewhere.read_bytes() == b"someone else's file"
    assert not output.is_symlink() and output.read_bytes() != model_bytes


def test_new_output_has_the_permissions_a_plain_write_would_give(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """mkstemp makes 0600 files; a model others must deploy should get 0666 minus the umask."""
    output = tmp_path / "out.onnx"
    previous = os.umask(0o022)
    try:
        status, _, err = run_cli(_repair_args(inputs, output), capsys)
    finally:
        os.umask(previous)
    assert status == WRITTEN, err
    assert stat.S_IMODE(output.stat().st_mode) == 0o644


def test_external_data_model_gives_a_standalone_output_elsewhere(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Weights in a side file: the repaired model written to another folder must not point
    back at (or need) that file, and the side file stays as it was."""
    source = tmp_path / "external"
    source.mkdir()
    model = source / "model.onnx"
    onnx.save(
        onnx.load(inputs["model"]),
        model,
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    weights_before = folder_state(source)
    (tmp_path / "out").mkdir()
    output = tmp_path / "out" / "repaired.onnx"
    args = _repair_args(inputs, output)
    args[1] = model
    status, _, err = run_cli(args, capsys)
    assert status == WRITTEN, err
    assert folder_state(source) == weights_before
    written = onnx.load(output, load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in written.graph.initializer)
    assert OnnxModel.load(output).units
