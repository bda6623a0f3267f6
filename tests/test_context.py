"""RunContext: every core unless pinned, the count recorded; the torch device it names."""

from __future__ import annotations

import pytest
import torch

from inner_onnx.context import RunContext, TorchDeviceFallbackWarning, device_of
from inner_onnx.errors import InputError


def test_unpinned_threads_take_torchs_count_and_a_pinned_count_is_applied() -> None:
    before = torch.get_num_threads()
    assert RunContext().threads == before
    with RunContext(threads=1).pinned():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_threads_below_one_and_unknown_devices_are_refused() -> None:
    with pytest.raises(InputError, match="at least 1"):
        RunContext(threads=0)
    with pytest.raises(InputError, match="unknown device"):
        RunContext(device="gpu")


def test_cpu_and_auto_without_cuda_place_torch_on_the_cpu() -> None:
    assert RunContext(device="cpu").torch_device == torch.device("cpu")
    if not torch.cuda.is_available():
        assert RunContext(device="auto").torch_device == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback needs a machine without CUDA")
def test_cuda_without_a_device_warns_and_falls_back() -> None:
    with pytest.warns(TorchDeviceFallbackWarning):
        assert RunContext(device="cuda").torch_device == torch.device("cpu")


def test_device_of_follows_a_modules_parameters() -> None:
    assert device_of(torch.nn.Linear(2, 2).to("meta")) == torch.device("meta")
    assert device_of(lambda t: t) == torch.device("cpu")
