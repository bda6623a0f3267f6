"""Fixtures of the torch view tests and the conformance summary line."""

from __future__ import annotations

import onnx
import pytest

from tests.support.torchview_models import ALL_MODELS, model_named


@pytest.fixture(params=ALL_MODELS)
def any_model(request) -> onnx.ModelProto:
    return model_named(request.param)


def pytest_terminal_summary(terminalreporter) -> None:
    """One line on the ONNX conformance cases: matched, refused by reason, failed."""
    # Imported here: collecting the cases takes seconds that other test runs need not pay.
    from tests.support.conformance import REFUSED

    reports = [
        report
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if report.when == "call" and "test_conformance_case[" in report.nodeid
    ]
    if not reports:
        return
    refused: dict[str, int] = {}
    matched = failed = 0
    for report in reports:
        case = report.nodeid.rsplit("[", 1)[1].rstrip("]")
        if report.failed:
            failed += 1
        elif case in REFUSED:
            reason = REFUSED[case]
            refused[reason] = refused.get(reason, 0) + 1
        else:
            matched += 1
    by_reason = "; ".join(f"{count} {reason}" for reason, count in refused.items())
    terminalreporter.write_line(
        f"ONNX conformance (torch view): {matched} of {len(reports)} cases match onnx's outputs, "
        f"{sum(refused.values())} refused cleanly ({by_reason}), {failed} failed"
    )
