"""The clean-data track's script: one defence run on the bundled BadNets sample gives the
run and the original's figures in the comparison benchmark's schema, and the tables rank
the methods by the backdoor scenario's objective with the original first."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `benchmarks` is a folder of the checkout, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.defenses import SAMPLE, TARGET, Case, markdown, run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_one_run_gives_its_figures_and_the_originals() -> None:
    made, original = run(Case("sample", SAMPLE, TARGET), "ft_clean", 0, 1, None)
    assert made["method"] == "ft_clean" and original["method"] == "original"
    assert made["budget"] == original["budget"] == 1500
    assert original["asr"] > 0.9 and original["weights_changed"] == 0
    assert made["weights_changed"] > 0 and made["seconds"] > 0
    for figures in (made, original):
        assert 0 <= figures["clean_accuracy"] <= 1 and 0 <= figures["fairness_gap"] <= 1


def test_tables_rank_by_the_backdoor_objective() -> None:
    def figures(method: str, seed: int, accuracy: float, asr: float) -> dict[str, object]:
        return {
            "model": "m",
            "scenario": "backdoor",
            "budget": 100,
            "method": method,
            "seed": seed,
            "clean_accuracy": accuracy,
            "asr": asr,
            "fairness_gap": 0.2,
            "weights_changed": 10,
            "seconds": 1.0,
        }

    runs = [
        figures("kept", 0, 0.90, 0.95),
        figures("original", 0, 0.90, 1.0),
        figures("removed", 0, 0.89, 0.02),
        figures("removed", 1, 0.89, 0.04),
    ]
    text = markdown(runs)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[1].startswith("| original | – | 0.900 | 1.000")
    assert rows[2].startswith("| kept | 2 |")
    assert rows[3].startswith("| removed | 1 | 0.890 ± 0.000 | 0.030 ± 0.014")
    assert "| removed | 1.00 (1) |" in text and "| kept | 2.00 (1) |" in text
