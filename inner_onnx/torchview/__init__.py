"""A differentiable torch view of an ONNX graph that writes back exactly.

view = TorchView(proto)              # one nn.Parameter per float initializer
logits = view(x)                     # inference semantics
view.parameter("conv1.weight")       # by ONNX name
repaired = view.write_back()         # same graph, new initializer values
"""

from inner_onnx.torchview.registry import UnsupportedOpError
from inner_onnx.torchview.view import (
    TorchView,
    check_supported,
    supported_ops,
    unsupported_nodes,
)

__all__ = [
    "TorchView",
    "UnsupportedOpError",
    "check_supported",
    "supported_ops",
    "unsupported_nodes",
]
