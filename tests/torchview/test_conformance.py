"""The official ONNX node conformance cases, run through the torch view on the CPU.

Every case whose graph only uses supported ops, and every single-op case of a
supported op, runs here (the cases and the refusal list: tests/support/conformance.py).
"""

from __future__ import annotations

import pytest

from inner_onnx.torchview import UnsupportedOpError, supported_ops
from tests.support.conformance import CASES, REFUSED, run_case


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_conformance_case(case) -> None:
    if case.name in REFUSED:
        with pytest.raises(UnsupportedOpError):
            run_case(case)
    else:
        run_case(case)


def test_refusal_list_names_real_cases() -> None:
    stale = sorted(set(REFUSED) - {case.name for case in CASES})
    assert not stale, f"REFUSED lists cases that are not collected: {stale}"


def test_every_required_op_is_covered_by_a_passing_case() -> None:
    passing = {
        node.op_type for case in CASES if case.name not in REFUSED for node in case.model.graph.node
    }
    missing = set(supported_ops()) - passing
    assert not missing, f"supported ops without a passing conformance case: {sorted(missing)}"
