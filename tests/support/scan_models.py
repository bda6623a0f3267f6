"""Small 8-class CNNs trained here, clean or with a patch or blend backdoor, for the trigger scan.

The images are 1x12x12 noise with one bright bar: classes 0-3 a vertical bar in
column band 2-3, 4-5, 6-7 or 8-9, classes 4-7 a horizontal bar in the same row
bands. The 2x2 corner at rows and columns 10-11 is never covered by a bar, so a
patch there is a trigger no clean image shows. Eight classes give the median
absolute deviation of the mask norms enough values to be meaningful.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from tests.support.torch_models import export_torch

SIZE = 12
CLASSES = 8
TARGET = 0
PATCH_ROW = PATCH_COL = 10
BLEND_ALPHA = 0.2


class ScanCNN(nn.Module):
    """Conv-Relu-MaxPool x2, Flatten, Linear on [N, 1, 12, 12]; NHWC input with `channels_last`."""

    def __init__(self, channels_last: bool = False, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.channels_last = channels_last
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(16 * (SIZE // 4) ** 2, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            # Exported as Transpose(perm=[0, 3, 1, 2]), as Keras graphs start.
            x = x.permute(0, 3, 1, 2)
        return self.classifier(self.features(x))


def bar_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[N, 1, 12, 12] float32 in [0, 1] and labels 0..7."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, count)
    x = rng.random((count, 1, SIZE, SIZE)).astype(np.float32) * 0.3
    for label in range(CLASSES):
        band = slice(2 + 2 * (label % 4), 4 + 2 * (label % 4))
        if label < 4:
            x[y == label, 0, :, band] += 0.7
        else:
            x[y == label, 0, band, :] += 0.7
    return np.minimum(x, 1.0), y


def blend_pattern() -> np.ndarray:
    """The blend trigger: fixed uniform noise [1, 12, 12]."""
    return np.random.default_rng(99).random((1, SIZE, SIZE)).astype(np.float32)


def stamp(x: np.ndarray, kind: str) -> np.ndarray:
    """`x` [N, 1, 12, 12] with the backdoor of `kind` ("patch" or "blend") applied."""
    if kind == "patch":
        out = x.copy()
        out[:, 0, PATCH_ROW:, PATCH_COL:] = 1.0
        return out
    return (1 - BLEND_ALPHA) * x + BLEND_ALPHA * blend_pattern()[None]


def _train(kind: str | None, channels_last: bool) -> nn.Module:
    x, y = bar_images(480, seed=10)
    if kind is not None:
        poisoned = np.arange(len(x)) % 5 == 0
        x[poisoned] = stamp(x[poisoned], kind)
        y[poisoned] = TARGET
    module = ScanCNN(seed=0)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.02)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(120):
        optimizer.zero_grad()
        nn.functional.cross_entropy(module(inputs), labels).backward()
        optimizer.step()
    module.channels_last = channels_last
    return module.eval()


@functools.cache
def scan_model_bytes(kind: str | None, channels_last: bool = False) -> bytes:
    """ONNX bytes of a ScanCNN trained clean (`kind` None) or with a "patch"/"blend" backdoor."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        module = _train(kind, channels_last)
        example = torch.zeros((2, SIZE, SIZE, 1) if channels_last else (2, 1, SIZE, SIZE))
        return export_torch(module, example).SerializeToString()
    finally:
        torch.set_num_threads(threads)
