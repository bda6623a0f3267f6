"""i-BAU: the implicit hypergradient gives one finite gradient per trained parameter.

Not shown here: that i-BAU lowers an ASR. On the toy backdoor model the softmax saturates
(clean cross-entropy ~1e-7), the inner maximization's input gradient vanishes, δ stays
where it started and i-BAU leaves the ASR at 1.0; on the bundled BadNets sample it leaves
it at 1.0 too (benchmarks/RESULTS.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inner_onnx.context import RunContext
from inner_onnx.repair.methods.clean_training import torch_parameters
from inner_onnx.repair.methods.ibau import hypergradient, universal_perturbation
from inner_onnx.repair.pipeline import settings_for
from inner_onnx.repair.problem import RepairProblem
from tests.support.backdoor import backdoor_problem_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _problem() -> RepairProblem:
    model, clean, source, _ = backdoor_problem_inputs()
    settings = settings_for("backdoor", method="ibau")
    return RepairProblem.prepare(model, clean, source, settings, RunContext(seed=0))


def test_hypergradient_has_one_finite_gradient_per_parameter() -> None:
    problem = _problem()
    view = problem.fresh_view()
    parameters = torch_parameters(problem.model, view)
    x = torch.from_numpy(problem.train.x[:100])
    y = torch.from_numpy(problem.train.y[:100].astype(np.int64))
    delta = universal_perturbation(view, [(x, y)])
    grads = hypergradient(view, parameters, delta, (x, y), (x, y), torch.Generator())
    assert all(g.shape == p.shape for g, p in zip(grads, parameters))
    assert all(torch.isfinite(g).all() for g in grads)
