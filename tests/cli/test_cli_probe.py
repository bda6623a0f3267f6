"""`--probe conv` on the command line: localize and repair a bundled sample (a slice of its
data, to stay fast) with conv-head probes; an unknown probe is a one-line usage error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from inner_onnx.io.samples import sample_dir
from inner_onnx.repair.verify import PROVENANCE_KEY
from tests.support.cli import run_cli, save_npz

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def sample(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The PyTorch BadNets sample with 80 of its clean and 40 of its triggered images."""
    folder = sample_dir("torch_badnets")
    clean, bad = np.load(folder / "clean.npz"), np.load(folder / "bad.npz")
    return (
        folder / "model.onnx",
        save_npz(tmp_path / "clean.npz", x=clean["x"][:80], y=clean["y"][:80]),
        save_npz(tmp_path / "bad.npz", x=bad["x"][:40], y=bad["y"][:40]),
    )


def test_localize_and_repair_with_conv_probes(
    sample: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, clean, bad = sample
    backdoor = ["--bad", bad, "--target-label", 0, "--probe", "conv", "--layers", 2]
    status, out, _ = run_cli(
        ["localize", model, "-d", clean, *backdoor, "-o", tmp_path / "f.json", "--json"], capsys
    )
    assert status == 0
    faults = json.loads(out)
    assert faults["settings"]["probe"] == "conv" and faults["neurons"]
    outputs = ["--faults", tmp_path / "f.json", "-o", tmp_path / "r.onnx", "--json"]
    status, out, _ = run_cli(
        [
            "repair",
            model,
            "-d",
            clean,
            "--scenario",
            "backdoor",
            *backdoor,
            "--epochs",
            1,
            *outputs,
        ],
        capsys,
    )
    assert status in (0, 3)  # a written, verified model; one epoch need not meet the targets
    assert json.loads(out)["output"]
    props = {p.key: p.value for p in onnx.load(tmp_path / "r.onnx").metadata_props}
    assert json.loads(props[PROVENANCE_KEY])["settings"]["localize"]["probe"] == "conv"


def test_unknown_probe_is_a_usage_error(
    sample: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, clean, bad = sample
    status, _, err = run_cli(
        ["localize", model, "-d", clean, "--bad", bad, "--probe", "tree", "-o", tmp_path / "f"],
        capsys,
    )
    assert status == 2
    assert err.strip().splitlines() == ["error: --probe must be one of linear, conv, got 'tree'"]
