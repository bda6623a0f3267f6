"""ai.onnx.ml ops on the score path of scikit-learn exports (skl2onnx): the scalers a
`Pipeline` puts before a network. Both output float32, as the spec and onnxruntime do."""

from __future__ import annotations

import torch

from inner_onnx.torchview.registry import ML_DOMAIN, UnsupportedOpError, op

Tensor = torch.Tensor


@op("Scaler", domain=ML_DOMAIN)
def scaler(
    x: Tensor, *, offset: list[float] | None = None, scale: list[float] | None = None
) -> Tensor:
    # One value broadcasts over every feature, as does a list of one per feature.
    x = x.to(torch.float32)
    shift = torch.tensor(offset if offset else [0.0], dtype=x.dtype, device=x.device)
    factor = torch.tensor(scale if scale else [1.0], dtype=x.dtype, device=x.device)
    return (x - shift) * factor


@op("Normalizer", domain=ML_DOMAIN)
def normalizer(x: Tensor, *, norm: str = "MAX") -> Tensor:
    # As onnxruntime computes it (evaluation runs there), not the reference evaluator: MAX
    # divides by the signed maximum, and a row whose norm is 0 is passed on unchanged.
    x = x.to(torch.float32)
    if norm == "MAX":
        size = x.amax(dim=-1, keepdim=True)
    elif norm == "L1":
        size = x.abs().sum(dim=-1, keepdim=True)
    elif norm == "L2":
        size = x.square().sum(dim=-1, keepdim=True)
    else:
        raise UnsupportedOpError(f"norm {norm!r} is not one of MAX, L1, L2")
    # Dividing by 1 where the norm is 0 (and taking the root after), not choosing x after
    # dividing by 0, keeps the gradient finite.
    size = torch.where(size == 0, torch.ones_like(size), size)
    return x / (size.sqrt() if norm == "L2" else size)
