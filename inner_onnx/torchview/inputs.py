"""A batch for a graph with several inputs (token ids and an attention mask, say): the
tensors by input name, indexed, moved and concatenated together as one batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class TensorInputs:
    """Named tensors with one row per sample each; the torch twin of `io.data.Inputs`."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, index: slice | torch.Tensor) -> TensorInputs:
        return TensorInputs({name: tensor[index] for name, tensor in self.tensors.items()})

    def to(self, device: torch.device | str) -> TensorInputs:
        return TensorInputs({name: tensor.to(device) for name, tensor in self.tensors.items()})


Batch = torch.Tensor | TensorInputs


def cat_batches(parts: Sequence[Batch]) -> Batch:
    """The parts' rows one after the other, like `torch.cat` on a single input."""
    if isinstance(parts[0], TensorInputs):
        names = parts[0].tensors
        return TensorInputs({name: torch.cat([p.tensors[name] for p in parts]) for name in names})
    return torch.cat(list(parts))
