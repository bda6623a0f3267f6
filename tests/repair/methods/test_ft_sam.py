"""FT-SAM: its step is not plain SGD's (it takes the gradient at the adaptive worst case
within ρ), with ρ = 0 it is exactly plain SGD's, and only its first pass moves the running
BatchNorm statistics, as the reference's disable_running_stats has it."""

from __future__ import annotations

import onnx
import pytest
import torch

from inner_onnx.context import RunContext
from inner_onnx.io.model import OnnxModel
from inner_onnx.repair.methods.clean_training import (
    BACKDOORBENCH_FT,
    descent_step,
    make_optimizer,
    torch_parameters,
)
from inner_onnx.repair.methods.ft_sam import sam_step, smooth_cross_entropy
from inner_onnx.repair.pipeline import settings_for
from inner_onnx.repair.problem import RepairProblem
from tests.support.backdoor import backdoor_problem_inputs
from tests.support.torchview_models import export_torchscript, trained_looking_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _after_one_step(rho: float | None) -> list[torch.Tensor]:
    model, clean, source, _ = backdoor_problem_inputs()
    settings = settings_for("backdoor", method="ft_sam")
    problem = RepairProblem.prepare(model, clean, source, settings, RunContext(seed=0))
    view = problem.fresh_view()
    parameters = torch_parameters(model, view)
    loss = smooth_cross_entropy(view)
    step = descent_step(loss) if rho is None else sam_step(view, loss, parameters, rho=rho)
    x = torch.from_numpy(problem.train.x[:64])
    y = torch.from_numpy(problem.train.y[:64]).long()
    step(make_optimizer(parameters, BACKDOORBENCH_FT), x, y)
    return [p.detach().clone() for p in parameters]


def test_sam_step_differs_from_sgd_and_reduces_to_it_without_radius() -> None:
    sgd = _after_one_step(None)
    sam = _after_one_step(2.0)
    flat = _after_one_step(0.0)
    assert any(not torch.allclose(a, b) for a, b in zip(sgd, sam))
    assert all(torch.allclose(a, b) for a, b in zip(sgd, flat))


def test_only_the_first_pass_moves_the_running_statistics() -> None:
    model = OnnxModel(export_torchscript(trained_looking_cnn(), torch.randn(2, 1, 16, 16)))
    x, y = torch.randn(16, 1, 16, 16), torch.arange(16) % 10
    sam_view, forward_view = model.torch_view(), model.torch_view()
    sam_view.batch_statistics = forward_view.batch_statistics = True
    parameters = torch_parameters(model, sam_view)
    step = sam_step(sam_view, smooth_cross_entropy(sam_view), parameters)
    step(make_optimizer(parameters, BACKDOORBENCH_FT), x, y)
    with torch.no_grad():
        forward_view(x)
    norm = next(n for n in model.proto.graph.node if n.op_type == "BatchNormalization")
    for name in norm.input[3:5]:
        original = torch.from_numpy(onnx.numpy_helper.to_array(model.initializers[name]))
        assert not torch.allclose(forward_view.parameter(name), original)
        assert torch.allclose(sam_view.parameter(name), forward_view.parameter(name))
