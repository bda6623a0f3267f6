"""A pretend second device, so CPU-only CI catches tensors created on the wrong device.

CUDA refuses an op whose operands sit on different devices. Inside
`pretend_device()`, tensors moved to the returned device report `meta` as their
device and get the same refusal when an op mixes them with ordinary CPU tensors,
so an op function that creates a tensor without `device=` fails here the way it
would fail on a GPU. Unlike real meta tensors they keep their values (a CPU
tensor inside): ops that read shapes from tensors (Reshape, Slice, Resize ...)
run, `.item()` and `.tolist()` work, and results can be compared with the CPU.
This is stricter than CUDA, which accepts a 0-d CPU tensor as a scalar operand:
the view should not rely on that either, since each such use is a host copy.

    with pretend_device() as device:
        view.to(device)
        y = view(x.to(device))       # y.device == device; y.cpu() holds the values
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

DEVICE = torch.device("meta")


class PretendDeviceTensor(torch.Tensor):
    """A CPU tensor (`inner`) that reports DEVICE; only pretend_device() can compute with it."""

    inner: torch.Tensor

    @staticmethod
    def __new__(cls, inner: torch.Tensor) -> PretendDeviceTensor:
        return torch.Tensor._make_wrapper_subclass(
            cls,
            inner.shape,
            strides=inner.stride(),
            storage_offset=inner.storage_offset(),
            dtype=inner.dtype,
            device=DEVICE,
            requires_grad=inner.requires_grad,
        )

    def __init__(self, inner: torch.Tensor) -> None:
        self.inner = inner

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func} on a pretend-device tensor outside pretend_device()")

    def tolist(self) -> Any:
        # torch refuses .tolist() on tensor subclasses; on a CUDA tensor it copies to the host.
        return self.inner.tolist()

    def numpy(self, *, force: bool = False) -> Any:
        raise TypeError(f"can't convert a {DEVICE} tensor to numpy: copy it with .cpu() first")

    def __repr__(self) -> str:
        return f"PretendDeviceTensor({self.inner!r})"


def _is_pretend_device(device: Any) -> bool:
    return device is not None and torch.device(device) == DEVICE


class _PretendDeviceMode(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        moved = [t for t in tensors if isinstance(t, PretendDeviceTensor)]
        stray = next((t for t in tensors if not isinstance(t, PretendDeviceTensor)), None)
        if stray is not None and stray.device == DEVICE:
            raise RuntimeError(
                f"{func}: a real {DEVICE} tensor (no values) was made by a path that "
                "pretend_device() does not intercept"
            )
        if moved and stray is not None:
            raise RuntimeError(
                f"Expected all tensors to be on the same device, but {func} got a "
                f"{stray.device} tensor of shape {list(stray.shape)} next to {DEVICE} ones"
            )
        target = kwargs.get("device")
        lands_there = _is_pretend_device(target) or (bool(moved) and target is None)
        if _is_pretend_device(target):
            kwargs["device"] = torch.device("cpu")
        inners = {id(t.inner): t for t in moved}
        args, kwargs = pytree.tree_map_only(PretendDeviceTensor, lambda t: t.inner, (args, kwargs))
        out = func(*args, **kwargs)
        if not lands_there:
            return out

        # In-place ops return their operand: hand back its wrapper, not a second one.
        def wrap(t: torch.Tensor) -> torch.Tensor:
            return inners[id(t)] if id(t) in inners else PretendDeviceTensor(t)

        return pytree.tree_map_only(torch.Tensor, wrap, out)


def _from_data(original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """torch.tensor / torch.as_tensor that honour the pretend device.

    Both copy their data below the dispatcher, where the mode cannot see it: a
    real meta tensor would come out, without the values.
    """

    def create(data: Any, *args: Any, device: Any = None, **kwargs: Any) -> torch.Tensor:
        if not _is_pretend_device(device):
            return original(data, *args, device=device, **kwargs)
        if isinstance(data, torch.Tensor):
            return data.to(DEVICE, kwargs.get("dtype"))
        return PretendDeviceTensor(original(data, *args, **kwargs))

    return create


@contextlib.contextmanager
def pretend_device() -> Iterator[torch.device]:
    """Within the block, tensors `.to(device)` (and factories given `device=`) are on it."""
    originals = {name: getattr(torch, name) for name in ("tensor", "as_tensor")}
    try:
        for name, original in originals.items():
            setattr(torch, name, _from_data(original))
        with _PretendDeviceMode():
            yield DEVICE
    finally:
        for name, original in originals.items():
            setattr(torch, name, original)
