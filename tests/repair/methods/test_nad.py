"""NAD: attention maps are normalized per sample, and distillation from the clean-fine-tuned
teacher lowers the student's attention loss over training."""

from __future__ import annotations

import pytest
import torch

from inner_onnx.context import RunContext
from inner_onnx.repair.methods.nad import attention_map, attention_names, distil
from inner_onnx.repair.pipeline import settings_for
from inner_onnx.repair.problem import RepairProblem
from tests.support.backdoor import backdoor_problem_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_attention_map_is_unit_norm_over_positions() -> None:
    maps = attention_map(torch.randn(5, 4, 3, 3))
    assert maps.shape == (5, 9)
    assert torch.allclose(maps.norm(dim=1), torch.ones(5), atol=1e-5)


def test_attention_loss_decreases_over_training() -> None:
    model, clean, source, _ = backdoor_problem_inputs()
    settings = settings_for("backdoor", method="nad", epochs=8)
    problem = RepairProblem.prepare(model, clean, source, settings, RunContext(seed=0))
    assert attention_names(model) == [u.activation for u in model.units if u.op == "Conv"]
    _, history = distil(problem, epochs=8)
    assert len(history) == 8
    assert history[0] > 0
    assert history[-1] < history[0]
