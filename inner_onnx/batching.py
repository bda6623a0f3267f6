"""Batch sizes chosen from the model's activation size, so that memory stays within a budget.

A pass over N samples keeps one batch of tensors alive at a time: the torch view
holds every tensor its graph computes until it returns (and, with gradients,
what backward needs), onnxruntime holds the marked unit outputs and its working
tensors. What one sample of a given model takes is measured once, by running a
single sample through onnxruntime with every node output marked; each pass then
gets the largest batch whose tensors fit the budget. A CIFAR ResNet-18 computes
5.7 MB of tensors per sample: 512 at once would be 2.9 GB.

Batches never grow past the sizes each pass used before they were chosen here (its
`cap`): a small model keeps its batches, and so its exact float sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Bytes one batch's tensors may take. The rest of a run (the data, [N, C] pooled features,
# weights, onnxruntime sessions, Python and torch themselves) comes on top.
BUDGET = 192 * 2**20
# Backward keeps what the forward computed and makes a gradient of about the same size.
GRADIENT_FACTOR = 3
# The caps: the batch sizes of each pass before they were chosen from the budget.
INFERENCE_CAP = 512
CAPTURE_CAP = 256
GRADIENT_CAP = 256


@dataclass(frozen=True)
class Footprint:
    """Bytes one sample takes: its input, and every tensor the graph computes from it."""

    input: int
    tensors: int

    @classmethod
    def of_arrays(cls, sample: np.ndarray, outputs: list[np.ndarray]) -> Footprint:
        return cls(int(sample.nbytes), int(sum(output.nbytes for output in outputs)))


def fitting(per_sample: int, cap: int, budget: int = BUDGET) -> int:
    """The largest batch, at most `cap`, whose `per_sample` bytes each fit in `budget`."""
    return max(1, min(cap, budget // max(1, per_sample)))


@dataclass(frozen=True)
class BatchSizes:
    """Per pass, how many samples go through at once. The defaults are the caps (no
    footprint known: the sizes every pass used before)."""

    inference: int = INFERENCE_CAP  # the torch view without gradients
    capture: int = CAPTURE_CAP  # onnxruntime, unit outputs marked
    gradient: int = GRADIENT_CAP  # the torch view with backward (attacks)

    @classmethod
    def for_footprint(cls, footprint: Footprint, budget: int = BUDGET) -> BatchSizes:
        forward = footprint.input + footprint.tensors
        return cls(
            fitting(forward, INFERENCE_CAP, budget),
            fitting(forward, CAPTURE_CAP, budget),
            fitting(footprint.input + GRADIENT_FACTOR * footprint.tensors, GRADIENT_CAP, budget),
        )
