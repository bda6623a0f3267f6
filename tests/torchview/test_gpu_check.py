"""benchmarks/gpu_check.py without a GPU: it says so, and its pieces keep to their device."""

from __future__ import annotations

import pytest
import torch

from benchmarks import gpu_check
from tests.support.pretend_device import pretend_device
from tests.support.resnet import ResNet18


def test_without_cuda_it_prints_one_line_and_exits_0(monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "no CUDA" in lines[0]


def test_the_resnet_is_the_cifar_resnet18() -> None:
    net = ResNet18()
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(11.17e6, rel=0.01)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_parity_and_timing_run_on_the_device_they_are_given() -> None:
    name, model, x = gpu_check.sample_models()[0]
    with pretend_device() as device:
        assert gpu_check.parity(model, x[:32], device) <= gpu_check.PARITY_BOUND, name
        assert gpu_check.time_forward_backward(model, torch.from_numpy(x[:8]), device, 1) > 0
