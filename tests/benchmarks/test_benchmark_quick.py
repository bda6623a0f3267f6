"""The comparison benchmark: its --quick mode end to end, and its RESULTS.md section handling."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FASHION_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
if str(ROOT) not in sys.path:  # `benchmarks` is a folder of the checkout, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.compare import ALL_METHODS  # noqa: E402
from benchmarks.report import SECTION, replace_section  # noqa: E402

# every method of the known-bad-samples track, and ANP
QUICK_METHODS = set(ALL_METHODS)


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_TEST.is_file(), reason="Debian package dataset-fashion-mnist")
def test_quick_mode_writes_json_markdown_and_plot_with_finite_numbers(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((tmp_path / "results" / "compare_quick.json").read_text())
    runs = payload["runs"]
    assert {run["method"] for run in runs} == QUICK_METHODS | {"original"}
    for run in runs:
        for metric in ("clean_accuracy", "asr", "fairness_gap", "sensitivity", "seconds"):
            assert math.isfinite(run[metric]), (run["method"], metric)
            assert run[metric] >= 0
        for rate in ("clean_accuracy", "asr", "fairness_gap", "sensitivity"):
            assert run[rate] <= 1
        assert run["weights_changed"] >= 0
    original = next(run for run in runs if run["method"] == "original")
    assert original["weights_changed"] == 0
    # The bundled BadNets sample is backdoored: the benchmark must see the backdoor.
    assert original["asr"] > 0.5
    png = (tmp_path / "results" / "compare_quick.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    markdown = (tmp_path / "RESULTS.md").read_text()
    assert markdown.count(SECTION) == 1
    assert "results/compare_quick.png" in markdown
    for label in ("INNER", "Fine-Pruning", "ANP", "fine-tune INNER's fault set"):
        assert label in markdown


def test_section_is_replaced_in_place_and_other_sections_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text(
        f"# Benchmarks\n\n## Speed\n\nfast\n\n{SECTION}\n\nold table\n\n## Later\n\nz\n"
    )
    replace_section(path, f"{SECTION}\n\nnew table\n")
    text = path.read_text()
    assert "old table" not in text
    assert text.count(SECTION) == 1
    assert text.index("## Speed") < text.index("new table") < text.index("## Later")
    assert "fast" in text and "\nz\n" in text


def test_section_is_appended_when_missing(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmarks\n\n## Speed\n\nfast\n")
    replace_section(path, f"{SECTION}\n\ntable\n")
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\n## Speed\n\nfast\n")
    assert text.endswith(f"{SECTION}\n\ntable\n")
