"""The clean-data defences train what their references' optimizers get, a torch module's
`parameters()`: the units' weights and biases and BatchNorm's scale and bias, never its
running statistics (buffers in torch)."""

from __future__ import annotations

import pytest
import torch

from inner_onnx.io.model import OnnxModel
from inner_onnx.repair.methods.clean_training import (
    BACKDOORBENCH_FT,
    cross_entropy,
    descent_step,
    make_optimizer,
    torch_parameters,
)
from inner_onnx.repair.problem import all_unit_masks
from tests.support.torchview_models import export_torchscript, trained_looking_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_batchnorm_scale_and_bias_train_and_its_running_statistics_do_not() -> None:
    model = OnnxModel(export_torchscript(trained_looking_cnn(), torch.randn(2, 1, 16, 16)))
    view = model.torch_view()
    parameters = torch_parameters(model, view)
    trainable = {name for name, p in view.onnx_parameters() if p.requires_grad}
    norms = [n for n in model.proto.graph.node if n.op_type == "BatchNormalization"]
    assert norms
    affine = {name for n in norms for name in n.input[1:3]}
    running = {name for n in norms for name in n.input[3:5]}
    assert trainable == set(all_unit_masks(model)) | affine
    assert not trainable & running and len(parameters) == len(trainable)

    scale = norms[0].input[1]
    before = view.parameter(scale).detach().clone()
    x, y = torch.randn(16, 1, 16, 16), torch.arange(16) % 10
    view.batch_statistics = True
    descent_step(cross_entropy(view))(make_optimizer(parameters, BACKDOORBENCH_FT), x, y)
    assert not torch.allclose(view.parameter(scale), before)
