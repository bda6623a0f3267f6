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
    named = [part for part in parts if isinstance(part, TensorInputs)]
    if named:
        shapes = {name: t.shape[1:] for part in named for name, t in part.tensors.items()}
        # Only offsets (TorchView.forward) can be missing from a part (clean rows beside
        # adversarial ones): a missing offset is zero.
        return TensorInputs(
            {
                name: torch.cat([_tensor_or_zeros(part, name, shape) for part in named])
                for name, shape in shapes.items()
            }
        )
    return torch.cat(list(parts))


def _tensor_or_zeros(part: TensorInputs, name: str, shape: torch.Size) -> torch.Tensor:
    if name in part.tensors:
        return part.tensors[name]
    like = next(iter(part.tensors.values()))
    return torch.zeros((len(part), *shape), device=like.device)
