"""Every registered repair method runs end to end through the library's stages and
changes only what its plan allows; the CLI offers each by name."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from inner_onnx.context import RunContext
from inner_onnx.errors import InputError
from inner_onnx.repair.methods import METHODS, method_named
from inner_onnx.repair.pipeline import repair, settings_for
from inner_onnx.repair.problem import RepairProblem
from tests.support.backdoor import backdoor_problem_inputs
from tests.support.cli import run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _values(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}


# ANP at its reference's 2,000 mask iterations takes most of a minute here; 200 prune too.
QUICK_ANP_ITERATIONS = 200


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_repairs_through_the_stages(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(METHODS["anp"], "iterations", QUICK_ANP_ITERATIONS)
    model, clean, source, evaluation = backdoor_problem_inputs()
    settings = settings_for("backdoor", method=name, epochs=2, top_k=4)
    context = RunContext(seed=1)
    problem = RepairProblem.prepare(model, clean, source, settings, context)
    plan = METHODS[name].plan(problem)
    allowed = {key: mask.copy() for key, mask in plan.masks.items()}
    for key, zeroed in (plan.zeroed or {}).items():
        allowed[key] = allowed.get(key, np.zeros_like(zeroed)) | zeroed
    result = repair(model, clean, source, settings, context, evaluation=evaluation)
    assert result.method == name
    before, after = _values(model.proto), _values(result.proto)
    if plan.masks or plan.zeroed:
        assert result.changed_count > 0
    else:  # nothing to change (Neural Cleanse flagged no class): nothing changed
        assert result.changed_count == 0
    for key, values in after.items():
        moved = values != before[key]
        if key not in allowed:
            assert not moved.any(), f"{name} changed {key}, which its plan does not allow"
        else:
            assert not (moved & ~allowed[key]).any(), f"{name} changed masked-out {key} values"
    for key, zeroed in (plan.zeroed or {}).items():
        assert np.all(after[key][zeroed] == 0)


def test_unknown_method_and_scenario_mismatch_are_refused() -> None:
    with pytest.raises(InputError, match="unknown method 'nope'; choose"):
        method_named("nope")
    with pytest.raises(InputError, match="does not apply to --scenario wrong"):
        method_named("anp", "wrong")


def test_repair_help_lists_every_registered_method(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(["repair", "--help"], capsys)
    assert status == 0
    flat = " ".join(out.split())
    for name in METHODS:
        assert f"{name}:" in flat
