"""The routing-speed benchmark on a bundled sample: a row per linear unit, same votes."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `benchmarks` is a folder of the checkout, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.routing_speed import unit_rows  # noqa: E402


def test_both_routing_paths_give_the_same_votes_on_every_unit_of_a_sample() -> None:
    rows = unit_rows(ROOT / "samples" / "torch_weak_class", samples=20, repeats=1)
    assert [row.split(" | ")[1] for row in rows] == [
        "/0/Conv (Conv)",
        "/3/Conv (Conv)",
        "/7/Gemm (Gemm)",
        "/10/Gemm (Gemm)",
    ]
    assert all(row.endswith("| yes |") for row in rows)
