"""A small ViT-style classifier: patch tokens, class token, attention, Gelu MLP (dynamo export)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn


class TinyViT(nn.Module):
    """8x8 one-channel images -> 4 patch tokens of width 16 plus a class token -> 3 classes."""

    def __init__(self, width: int = 16, heads: int = 2, classes: int = 3):
        super().__init__()
        self.patches = nn.Conv2d(1, width, kernel_size=4, stride=4)
        self.class_token = nn.Parameter(torch.randn(1, 1, width) * 0.1)
        self.position = nn.Parameter(torch.randn(1, 5, width) * 0.1)
        self.norm1 = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x).flatten(2).transpose(1, 2)  # [N, 4, width]
        tokens = torch.cat([self.class_token.expand(len(x), -1, -1), tokens], dim=1)
        tokens = tokens + self.position
        normed = self.norm1(tokens)
        tokens = tokens + self.attention(normed, normed, normed, need_weights=False)[0]
        tokens = tokens + self.mlp(self.norm2(tokens))
        return self.head(self.norm(tokens)[:, 0])


@functools.cache
def tiny_vit_bytes(seed: int = 0) -> bytes:
    """The exported TinyViT (dynamo, opset 20: Gelu is one node), built once per test session."""
    from converters.torch_to_onnx import export_torch

    torch.manual_seed(seed)
    module = TinyViT()
    example = torch.from_numpy(np.random.default_rng(seed).random((2, 1, 8, 8), np.float32))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vit.onnx"
        export_torch(module, example, path, opset=20, dynamo=True)
        return path.read_bytes()


def tiny_vit(seed: int = 0) -> onnx.ModelProto:
    return onnx.load_from_string(tiny_vit_bytes(seed))
