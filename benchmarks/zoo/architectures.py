"""The zoo's architectures, each built for an input of (channels, size, size).

Narrow on purpose: the whole zoo trains in minutes on 2 cores, and a repair
epoch on any of them stays cheap. `keras_pattern` rebuilds a Sequential model
as the graph Keras writes through tf2onnx: NHWC input transposed to NCHW for the
convolutions, features transposed back before flattening (Keras flattens NHWC),
dense layers as MatMul+Add, and a final Softmax.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from benchmarks.zoo.manifest import Architecture

NUM_CLASSES = 10


def mlp(channels: int, size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(channels * size * size, 256),
        nn.ReLU(),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Linear(128, NUM_CLASSES),
    )


def cnn(channels: int, size: int) -> nn.Sequential:
    """Two conv blocks (Conv, ReLU, MaxPool) and two dense layers, like the bundled samples."""
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (size // 4) ** 2, 64),
        nn.ReLU(),
        nn.Linear(64, NUM_CLASSES),
    )


def vgg_bn(channels: int, size: int) -> nn.Sequential:
    """VGG-style: 5 convs in 3 stages, each Conv, ReLU, BatchNorm.

    BatchNorm after the ReLU stays a BatchNormalization node in the exported graph
    (the exporters fold a BatchNorm that directly follows a Conv)."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(cout)]

    return nn.Sequential(
        *block(channels, 16),
        *block(16, 16),
        nn.MaxPool2d(2),
        *block(16, 32),
        *block(32, 32),
        nn.MaxPool2d(2),
        *block(32, 64),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (size // 8) ** 2, 64),
        nn.ReLU(),
        nn.Linear(64, NUM_CLASSES),
    )


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convs with BatchNorm and an identity (or 1x1 conv) skip."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet(channels: int, size: int) -> nn.Sequential:
    """A ResNet of three basic blocks (16, 32, 64 channels), global average pool, one dense."""
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        BasicBlock(16, 16, 1),
        BasicBlock(16, 32, 2),
        BasicBlock(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, NUM_CLASSES),
    )


def resnet18(channels: int, size: int) -> nn.Sequential:
    """CIFAR-style ResNet-18 (He et al. 2016, as BackdoorBench and the defences' papers train
    it on CIFAR-10): 3x3 stem without max-pool, [2, 2, 2, 2] basic blocks of 64-512
    channels, global average pool, one dense; 11.2 M parameters."""
    layers: list[nn.Module] = [
        nn.Conv2d(channels, 64, 3, 1, 1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
    ]
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, NUM_CLASSES)]
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 block: 1x1 expand, 3x3 depthwise, 1x1 project, skip when shapes match."""

    def __init__(
        self, cin: int, cout: int, expand: int, stride: int, activation: type[nn.Module]
    ) -> None:
        super().__init__()
        hidden = cin * expand
        self.body = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            activation(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            activation(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.skip else out


def mobilenet(channels: int, size: int) -> nn.Sequential:
    """MobileNet-style: ReLU6 (exported as Clip) in the early blocks, HardSwish later."""
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU6(),
        InvertedResidual(16, 16, 2, 1, nn.ReLU6),
        InvertedResidual(16, 24, 3, 2, nn.ReLU6),
        InvertedResidual(24, 24, 3, 1, nn.Hardswish),
        InvertedResidual(24, 40, 3, 2, nn.Hardswish),
        nn.Conv2d(40, 64, 1, bias=False),
        nn.BatchNorm2d(64),
        nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, NUM_CLASSES),
    )


class Attention(nn.Module):
    """Multi-head self-attention written out (MatMul, Softmax), so that every exporter
    and opset writes the same plain ops rather than a fused attention node."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-2, -1) * (dim // self.heads) ** -0.5, dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(batch, tokens, dim))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """ViT: 4x4 patch embedding (a strided Conv), class token, learned positions,
    two pre-norm transformer blocks, LayerNorm and a dense head on the class token."""

    def __init__(self, channels: int, size: int, dim: int = 48, patch: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv2d(channels, dim, patch, patch)
        tokens = (size // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.positions = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(TransformerBlock(dim, 3, 2 * dim) for _ in range(2)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(len(patches), -1, -1)
        tokens = self.blocks(torch.cat([cls, patches], dim=1) + self.positions)
        return self.head(self.norm(tokens[:, 0]))


ARCHITECTURES: dict[Architecture, Callable[[int, int], nn.Module]] = {
    "mlp": mlp,
    "cnn": cnn,
    "vgg_bn": vgg_bn,
    "resnet": resnet,
    "resnet18": resnet18,
    "mobilenet": mobilenet,
    "vit": TinyViT,
}


class Dense(nn.Module):
    """A Keras Dense layer: kernel [in, out], exported as MatMul + Add (not Gemm)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.kernel = nn.Parameter(linear.weight.detach().t().contiguous())
        self.bias = nn.Parameter(linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.kernel + self.bias


class KerasPattern(nn.Module):
    """NHWC in, class probabilities out, in the shape of a tf2onnx graph (module docstring)."""

    def __init__(self, sequential: nn.Sequential) -> None:
        super().__init__()
        layers = list(sequential)
        flatten = next(i for i, layer in enumerate(layers) if isinstance(layer, nn.Flatten))
        self.features = nn.Sequential(*layers[:flatten])
        self.head = nn.Sequential(
            *(
                Dense(layer) if isinstance(layer, nn.Linear) else layer
                for layer in layers[flatten + 1 :]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return torch.softmax(self.head(features.flatten(1)), dim=1)


def build_module(architecture: Architecture, shape: tuple[int, int, int], keras: bool) -> nn.Module:
    """A freshly initialised network for NCHW inputs of `shape`, or its Keras pattern."""
    channels, size, _ = shape
    module = ARCHITECTURES[architecture](channels, size)
    if not keras:
        return module
    if not isinstance(module, nn.Sequential):
        raise ValueError(f"the Keras pattern needs a Sequential with a Flatten, not {architecture}")
    return KerasPattern(module)
