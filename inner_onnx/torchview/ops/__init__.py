"""The op functions, one small torch function per ONNX op; importing registers them."""

from inner_onnx.torchview.ops import math, ml, nn, resize, tensor

__all__ = ["math", "ml", "nn", "resize", "tensor"]
