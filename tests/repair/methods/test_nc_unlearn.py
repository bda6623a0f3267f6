"""Neural Cleanse with unlearning: the shared trigger scan's reversed trigger for the
attacker's class sits on the planted patch, and unlearning it lowers the ASR."""

from __future__ import annotations

import onnx
import pytest

from inner_onnx.context import RunContext
from inner_onnx.io.data import Dataset
from inner_onnx.io.model import OnnxModel
from inner_onnx.repair.methods import METHODS
from inner_onnx.repair.methods.nc_unlearn import NC_UNLEARNING_RATIO, flagged_trigger
from inner_onnx.repair.pipeline import settings_for
from inner_onnx.repair.problem import RepairProblem
from inner_onnx.scan.neural_cleanse import anomaly_indices
from inner_onnx.scenarios import BadSource
from tests.support.scan_models import (
    PATCH_COL,
    PATCH_ROW,
    TARGET,
    bar_images,
    scan_model_bytes,
    stamp,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_mad_flags_an_outlier_below_the_median_only() -> None:
    index = anomaly_indices([2.0, 20.0, 21.0, 19.0, 22.0, 20.5])
    assert index is not None and index[0] > 2 and all(i <= 2 for i in index[1:])


def test_reversed_trigger_sits_on_the_planted_patch() -> None:
    """On the 8-class patch model of the scan tests (3 classes are too few for the MAD
    rule to flag anything)."""
    model = OnnxModel(onnx.load_from_string(scan_model_bytes("patch")))
    x, y = bar_images(240, seed=3)
    others = y != TARGET
    bad = Dataset(stamp(x[others], "patch"), y[others], "patched bars")
    clean = Dataset(x, y, "bars")
    source = BadSource("backdoor", target_label=TARGET, bad_data=bad)
    settings = settings_for("backdoor", method="nc_unlearn")
    problem = RepairProblem.prepare(model, clean, source, settings, RunContext(seed=0))
    trigger = flagged_trigger(problem)
    assert trigger is not None, "the planted target class is not flagged"
    mask = trigger.mask[0]
    patch = mask[PATCH_ROW : PATCH_ROW + 2, PATCH_COL : PATCH_COL + 2]
    assert patch.sum() > 0.3 * mask.sum()
    assert 0 < NC_UNLEARNING_RATIO < 1
    assert METHODS["nc_unlearn"].clean_only
