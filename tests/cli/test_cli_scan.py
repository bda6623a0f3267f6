"""`inner-onnx scan` from the command line: exit 3 and the reversed triggers for a
backdoored model, exit 0 for a clean one, one-line refusals for bad options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inner_onnx.scan.neural_cleanse import anomaly_indices
from tests.support.cli import run_cli, save_npz
from tests.support.scan_models import TARGET, bar_images, scan_model_bytes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _files(tmp_path: Path, kind: str | None) -> tuple[Path, Path]:
    model = tmp_path / f"{kind}.onnx"
    model.write_bytes(scan_model_bytes(kind))
    x, y = bar_images(240, seed=3)
    return model, save_npz(tmp_path / "clean.npz", x=x, y=y)


def test_backdoor_suspected_exits_3_with_triggers_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, data = _files(tmp_path, "patch")
    out = tmp_path / "scan"
    status, stdout, err = run_cli(["scan", model, "-d", data, "-o", out, "--json", "-q"], capsys)
    assert status == 3, err
    payload = json.loads(stdout)
    assert payload["backdoor_suspected"] and payload["target_label"] == TARGET
    assert payload["anomaly_index"] > 2
    assert err.strip() == f"backdoor suspected: class {TARGET} " + (
        f"(anomaly index {payload['anomaly_index']:.2f})"
    )
    mask = np.load(out / f"trigger_{TARGET}_mask.npy")
    assert mask.shape == (1, 12, 12) and (out / f"trigger_{TARGET}.png").stat().st_size > 0


@pytest.mark.parametrize(("flag", "log_norms"), [([], True), (["--raw-norms"], False)])
def test_anomaly_index_is_on_log_norms_unless_raw_norms_asked(
    flag: list[str], log_norms: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, data = _files(tmp_path, "patch")
    options = ["--classes", f"{TARGET},1,2", "--json", "-q", *flag]
    _, stdout, err = run_cli(["scan", model, "-d", data, *options], capsys)
    payload = json.loads(stdout)
    assert payload["settings"]["log_norms"] is log_norms, err
    norms = [c["mask_l1"] for c in payload["classes"]]
    indices = [c["anomaly_index"] for c in payload["classes"]]
    assert indices == pytest.approx(anomaly_indices(norms, log_norms))


def test_clean_model_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, data = _files(tmp_path, None)
    status, stdout, err = run_cli(["scan", model, "-d", data, "-q"], capsys)
    assert status == 0, err
    assert "no backdoor suspected" in stdout


@pytest.mark.parametrize(
    ("options", "message"),
    [(["--classes", "0,99"], "--classes must lie in 0..7"), (["--classes", "a"], "class numbers")],
)
def test_bad_classes_refused(
    options: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, data = _files(tmp_path, None)
    status, _, err = run_cli(["scan", model, "-d", data, *options], capsys)
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1


def test_backdoor_repair_without_bad_samples_scans_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither --bad nor --trigger: the scan's reversed trigger makes the bad samples, and the
    JSON and provenance say so."""
    model, data = _files(tmp_path, "patch")
    output = tmp_path / "repaired.onnx"
    args = ["repair", model, "-d", data, "--scenario", "backdoor", "-o", output, "--json", "-q"]
    status, stdout, err = run_cli([*args, "--epochs", 3], capsys)
    assert status in (0, 3), err
    synthesized = json.loads(stdout)["bad_source"]["synthesized"]
    assert synthesized["target_label"] == TARGET and synthesized["anomaly_index"] > 2
    if output.exists():
        import onnx

        meta = {p.key: p.value for p in onnx.load(output).metadata_props}
        assert '"synthesized_by": "neural_cleanse scan' in meta["inner_onnx.provenance"]
