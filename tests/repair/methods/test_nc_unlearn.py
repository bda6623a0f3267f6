"""Neural Cleanse: the reversed trigger of the attacker's class is the smallest and sits on
the planted patch; the MAD rule flags a class whose norm is an outlier below the median."""

from __future__ import annotations

import numpy as np
import pytest

from inner_onnx.context import RunContext
from inner_onnx.repair.methods.nc_unlearn import NC_ANOMALY_INDEX, anomaly_indices, reverse_trigger
from inner_onnx.repair.pipeline import settings_for
from inner_onnx.repair.problem import RepairProblem
from tests.support.backdoor import PATCH_COL, PATCH_ROW, TARGET, backdoor_problem_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_reversed_trigger_hits_the_planted_target_and_patch() -> None:
    model, clean, source, _ = backdoor_problem_inputs()
    settings = settings_for("backdoor", method="nc_unlearn")
    problem = RepairProblem.prepare(model, clean, source, settings, RunContext(seed=0))
    view = problem.fresh_view().requires_grad_(False)
    triggers = [reverse_trigger(view, model, problem.train, t, 0) for t in range(3)]
    norms = [t.norm for t in triggers]
    assert int(np.argmin(norms)) == TARGET
    mask = triggers[TARGET].mask[0]
    patch = mask[PATCH_ROW : PATCH_ROW + 2, PATCH_COL : PATCH_COL + 2].sum()
    assert patch > 0.5 * mask.sum()


def test_mad_flags_an_outlier_below_the_median_only() -> None:
    norms = np.array([2.0, 20.0, 21.0, 19.0, 22.0, 20.5])
    index = anomaly_indices(norms)
    assert index[0] > NC_ANOMALY_INDEX
    assert (index[1:] <= NC_ANOMALY_INDEX).all()
