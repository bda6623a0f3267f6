"""MaxPool: strided maxima without autograd, torch's function with it; the same values and
gradients as torch's either way."""

import pytest
import torch
import torch.nn.functional as F

from inner_onnx.torchview.ops.nn import max_pool

GEOMETRIES = [
    # kernel, strides, dilations, onnx pads
    ([2, 2], [2, 2], [1, 1], [0, 0, 0, 0]),
    ([3, 3], [2, 2], [1, 1], [1, 1, 1, 1]),
    ([3, 2], [1, 2], [2, 1], [0, 0, 0, 0]),
    ([2, 2], [1, 1], [1, 1], [0, 1, 1, 0]),
    ([3, 3], [3, 3], [1, 1], [0, 0, 0, 0]),
]


@pytest.mark.parametrize(("kernel", "strides", "dilations", "pads"), GEOMETRIES)
def test_values_and_gradients_match_torch(kernel, strides, dilations, pads) -> None:
    generator = torch.Generator().manual_seed(0)
    # ReLU zeros make ties: the gradient must go to each window's first maximum, as torch's.
    x = F.relu(torch.randn(3, 4, 11, 10, generator=generator, dtype=torch.float64))
    x.requires_grad_(True)
    begin, end = pads[:2], pads[2:]
    padded = F.pad(x, [begin[1], end[1], begin[0], end[0]], value=-torch.inf)
    expected = F.max_pool2d(padded, kernel, strides, 0, dilations)
    got = max_pool(x, kernel_shape=kernel, strides=strides, dilations=dilations, pads=pads)
    assert torch.equal(got, expected)
    upstream = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    (expected_grad,) = torch.autograd.grad(expected, x, upstream)
    (got_grad,) = torch.autograd.grad(got, x, upstream)
    assert torch.equal(got_grad, expected_grad)
    with torch.no_grad():
        assert torch.equal(
            max_pool(x, kernel_shape=kernel, strides=strides, dilations=dilations, pads=pads),
            expected,
        )


def test_one_dimensional_and_double_backward() -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 17, generator=generator, dtype=torch.float64, requires_grad=True)
    got = max_pool(x, kernel_shape=[3], strides=[2])
    assert torch.equal(got, F.max_pool1d(x, 3, 2))
    # I-BAU differentiates through a gradient: the backward must itself be differentiable.
    (grad,) = torch.autograd.grad(got.square().sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(grad.sum(), x)
    (expected_grad,) = torch.autograd.grad(
        F.max_pool1d(x, 3, 2).square().sum(), x, create_graph=True
    )
    assert torch.equal(grad, expected_grad)
    assert torch.equal(second, torch.autograd.grad(expected_grad.sum(), x)[0])
