"""Convolutions, dense layers, pooling and normalization."""

from __future__ import annotations

import itertools
import math
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch._C._functorch import is_batchedtensor

from inner_onnx.torchview.registry import UnsupportedOpError, op

Tensor = torch.Tensor

# Set for the length of a forward pass by a TorchView: (normalize by the batch's statistics,
# move the running statistics toward them).
BATCH_STATISTICS: ContextVar[tuple[bool, bool]] = ContextVar(
    "batch_statistics", default=(False, False)
)

_CONV = (F.conv1d, F.conv2d, F.conv3d)
_CONV_TRANSPOSE = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
_MAX_POOL = (F.max_pool1d, F.max_pool2d, F.max_pool3d)
_AVG_POOL = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)


def _spatial_function(table: tuple, x: Tensor, op_type: str):
    spatial = x.dim() - 2
    if not 1 <= spatial <= 3:
        raise UnsupportedOpError(f"{op_type} over {spatial} spatial axes is not supported")
    return table[spatial - 1]


def _same_pads(
    auto_pad: str, sizes, kernel, strides, dilations, ceil_mode: int = 0
) -> tuple[list[int], list[int]]:
    """(begin, end) pads of SAME_UPPER / SAME_LOWER / VALID: output = ceil(input / stride)."""
    if auto_pad == "VALID":
        return [0] * len(sizes), [0] * len(sizes)
    begin, end = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin, end


def _pads(x: Tensor, auto_pad: str, pads, kernel, strides, dilations):
    spatial = x.dim() - 2
    if auto_pad in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        return _same_pads(auto_pad, x.shape[2:], kernel, strides, dilations)
    if auto_pad != "NOTSET":
        raise UnsupportedOpError(f"auto_pad={auto_pad!r} is not supported")
    pads = pads or [0] * (2 * spatial)
    return list(pads[:spatial]), list(pads[spatial:])


def torch_pad_order(begin, end) -> list[int]:
    """ONNX [b1, b2, ..., e1, e2, ...] to torch's last-axis-first [b_n, e_n, ..., b_1, e_1]."""
    order: list[int] = []
    for b, e in zip(reversed(begin), reversed(end)):
        order += [b, e]
    return order


@op("Conv")
def conv(
    x: Tensor,
    w: Tensor,
    b: Tensor | None = None,
    *,
    auto_pad: str = "NOTSET",
    dilations: list[int] | None = None,
    group: int = 1,
    kernel_shape: list[int] | None = None,
    pads: list[int] | None = None,
    strides: list[int] | None = None,
) -> Tensor:
    function = _spatial_function(_CONV, x, "Conv")
    spatial = x.dim() - 2
    strides = strides or [1] * spatial
    dilations = dilations or [1] * spatial
    begin, end = _pads(x, auto_pad, pads, w.shape[2:], strides, dilations)
    if begin != end:
        x = F.pad(x, torch_pad_order(begin, end))
        begin = [0] * spatial
    return function(x, w, b, strides, begin, dilations, group)


@op("ConvTranspose")
def conv_transpose(
    x: Tensor,
    w: Tensor,
    b: Tensor | None = None,
    *,
    auto_pad: str = "NOTSET",
    dilations: list[int] | None = None,
    group: int = 1,
    kernel_shape: list[int] | None = None,
    output_padding: list[int] | None = None,
    output_shape: list[int] | None = None,
    pads: list[int] | None = None,
    strides: list[int] | None = None,
) -> Tensor:
    function = _spatial_function(_CONV_TRANSPOSE, x, "ConvTranspose")
    spatial = x.dim() - 2
    strides = strides or [1] * spatial
    dilations = dilations or [1] * spatial
    extra = output_padding or [0] * spatial
    sizes = x.shape[2:]
    # Length of the transposed convolution before any padding is removed.
    full = [
        s * (n - 1) + (k - 1) * d + 1 + p
        for n, k, s, d, p in zip(sizes, w.shape[2:], strides, dilations, extra)
    ]
    if output_shape or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        wanted = (
            output_shape[-spatial:] if output_shape else [n * s for n, s in zip(sizes, strides)]
        )
        totals = [f - o for f, o in zip(full, wanted)]
        begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in totals]
        end = [t - bg for t, bg in zip(totals, begin)]
    elif auto_pad == "VALID":
        begin = end = [0] * spatial
    elif auto_pad == "NOTSET":
        pads = pads or [0] * (2 * spatial)
        begin, end = list(pads[:spatial]), list(pads[spatial:])
    else:
        raise UnsupportedOpError(f"auto_pad={auto_pad!r} is not supported")
    torch_can_pad = begin == end and all(
        0 <= p < max(s, d) for p, s, d in zip(extra, strides, dilations)
    )
    if torch_can_pad and min(begin, default=0) >= 0:
        return function(x, w, b, strides, begin, extra, group, dilations)
    y = function(x, w, None, strides, 0, 0, group, dilations)
    # Negative pads crop: remove `begin`, append `extra` then remove `end`.
    y = F.pad(y, torch_pad_order([-p for p in begin], [e - p for e, p in zip(extra, end)]))
    if b is not None:
        y = y + b.reshape(1, -1, *([1] * spatial))
    return y


@op("Gemm")
def gemm(
    a: Tensor,
    b: Tensor,
    c: Tensor | None = None,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    transA: int = 0,
    transB: int = 0,
) -> Tensor:
    if transA:
        a = a.t()
    if transB and alpha == 1.0 and beta == 1.0 and (c is None or c.dim() == 1):
        return F.linear(a, b, c)  # the layout of a PyTorch/Keras dense layer: one fused kernel
    y = a @ (b.t() if transB else b)
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c * beta if beta != 1.0 else c)
    return y


@op("MatMul")
def matmul(a: Tensor, b: Tensor) -> Tensor:
    return torch.matmul(a, b)


def _pool_geometry(x, kernel_shape, strides, dilations, auto_pad, pads):
    spatial = x.dim() - 2
    strides = strides or [1] * spatial
    dilations = dilations or [1] * spatial
    begin, end = _pads(x, auto_pad, pads, kernel_shape, strides, dilations)
    return strides, dilations, begin, end


def _torch_pool_padding(begin, end, kernel_shape, dilations) -> bool:
    """Whether torch's symmetric pool padding (at most half the effective kernel) fits."""
    return begin == end and all(
        2 * p <= (k - 1) * d + 1 for p, k, d in zip(begin, kernel_shape, dilations)
    )


@op("MaxPool")
def max_pool(
    x: Tensor,
    *,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    dilations: list[int] | None = None,
    kernel_shape: list[int],
    pads: list[int] | None = None,
    storage_order: int = 0,
    strides: list[int] | None = None,
    output_count: int = 1,
) -> Tensor | tuple[Tensor, Tensor]:
    function = _spatial_function(_MAX_POOL, x, "MaxPool")
    strides, dilations, begin, end = _pool_geometry(
        x, kernel_shape, strides, dilations, auto_pad, pads
    )
    needs_grad = torch.is_grad_enabled() and x.requires_grad
    plain = output_count == 1 and not ceil_mode and x.dim() in (3, 4)
    if plain and not needs_grad and not is_batchedtensor(x):
        return _window_max(x, kernel_shape, strides, dilations, begin, end)
    if not _torch_pool_padding(begin, end, kernel_shape, dilations):
        if output_count > 1:
            raise UnsupportedOpError("MaxPool indices with asymmetric padding are not supported")
        x = F.pad(x, torch_pad_order(begin, end), value=-math.inf)
        begin = [0] * len(begin)
    if output_count == 1:
        return function(x, kernel_shape, strides, begin, dilations, bool(ceil_mode))
    y, index = function(x, kernel_shape, strides, begin, dilations, bool(ceil_mode), True)
    return y, _flat_pool_indices(x, index, storage_order)


def _window_max(x: Tensor, kernel_shape, strides, dilations, begin, end) -> Tensor:
    """1-D or 2-D MaxPool (floor mode) without autograd, as elementwise maxima of strided
    slices of the input padded with -inf: torch's NCHW CPU max_pool2d forward takes several
    times longer (capture, validation and evaluation run here). Under autograd torch's own
    function keeps the indices its backward needs; a slices version of that was no faster
    in a training step."""
    if any(begin) or any(end):
        lowest = -math.inf if x.is_floating_point() else torch.iinfo(x.dtype).min
        x = F.pad(x, torch_pad_order(begin, end), value=lowest)
    if x.dim() == 3:
        plane = _window_max(
            x.unsqueeze(2), [1, *kernel_shape], [1, *strides], [1, *dilations], [0, 0], [0, 0]
        )
        return plane.squeeze(2)
    y = None
    for window in _windows(x.shape, kernel_shape, strides, dilations):
        y = x[window] if y is None else torch.maximum(y, x[window])
    return y


def _windows(shape, kernel_shape, strides, dilations) -> list[tuple[slice, ...]]:
    """Per offset inside the window: the slice of the input that offset reads at every output
    position."""
    sizes = [
        (size - (k - 1) * d - 1) // s + 1
        for size, k, s, d in zip(shape[2:], kernel_shape, strides, dilations)
    ]
    return [
        (
            slice(None),
            slice(None),
            *(
                slice(o * d, o * d + (n - 1) * s + 1, s)
                for o, n, s, d in zip(offset, sizes, strides, dilations)
            ),
        )
        for offset in itertools.product(*(range(k) for k in kernel_shape))
    ]


def _flat_pool_indices(x: Tensor, index: Tensor, storage_order: int) -> Tensor:
    """Torch indexes within each [H, W] plane; ONNX indexes the whole flattened tensor."""
    plane = math.prod(x.shape[2:])
    planes = torch.arange(x.shape[0] * x.shape[1], dtype=torch.int64, device=x.device).reshape(
        x.shape[0], x.shape[1], *([1] * (x.dim() - 2))
    )
    if storage_order:
        if x.dim() != 4:
            raise UnsupportedOpError("MaxPool storage_order=1 is supported for 2-D pooling only")
        height, width = x.shape[2], x.shape[3]
        index = (index % width) * height + index // width
    return index + planes * plane


@op("AveragePool")
def average_pool(
    x: Tensor,
    *,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    count_include_pad: int = 0,
    dilations: list[int] | None = None,
    kernel_shape: list[int],
    pads: list[int] | None = None,
    strides: list[int] | None = None,
) -> Tensor:
    function = _spatial_function(_AVG_POOL, x, "AveragePool")
    strides, dilations, begin, end = _pool_geometry(
        x, kernel_shape, strides, dilations, auto_pad, pads
    )
    if _torch_pool_padding(begin, end, kernel_shape, dilations) and set(dilations) == {1}:
        return function(x, kernel_shape, strides, begin, bool(ceil_mode), bool(count_include_pad))
    return _general_average_pool(
        x, kernel_shape, strides, dilations, begin, end, bool(ceil_mode), bool(count_include_pad)
    )


def _general_average_pool(x, kernel_shape, strides, dilations, begin, end, ceil_mode, with_pads):
    """Window sums by a depthwise all-ones convolution (any pads, dilations), over cell counts."""
    conv_function = _CONV[x.dim() - 3]
    extra = [0] * len(begin)
    if ceil_mode:
        for i, (size, k, s, d) in enumerate(zip(x.shape[2:], kernel_shape, strides, dilations)):
            span, reach = size + begin[i] + end[i], (k - 1) * d + 1
            count = -(-(span - reach) // s) + 1
            # As torch: the last window must start inside the input or the left padding.
            if (count - 1) * s >= size + begin[i]:
                count -= 1
            extra[i] = max(0, (count - 1) * s + reach - span)
    padded_end = [e + x for e, x in zip(end, extra)]
    channels = x.shape[1]
    ones_kernel = torch.ones((channels, 1, *kernel_shape), dtype=x.dtype, device=x.device)
    sums = conv_function(
        F.pad(x, torch_pad_order(begin, padded_end)),
        ones_kernel,
        None,
        strides,
        0,
        dilations,
        channels,
    )
    cells = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
    if with_pads:
        cells = F.pad(cells, torch_pad_order(begin, end), value=1.0)
        cells = F.pad(cells, torch_pad_order([0] * len(extra), extra))
    else:
        cells = F.pad(cells, torch_pad_order(begin, padded_end))
    counts = conv_function(cells, ones_kernel[:1], None, strides, 0, dilations)
    return sums / counts


@op("GlobalAveragePool")
def global_average_pool(x: Tensor) -> Tensor:
    return torch.mean(x, list(range(2, x.dim())), keepdim=True)


@op("GlobalMaxPool")
def global_max_pool(x: Tensor) -> Tensor:
    return torch.amax(x, list(range(2, x.dim())), keepdim=True)


def _channel_view(t: Tensor, rank: int) -> Tensor:
    return t.reshape(1, -1, *([1] * (rank - 2)))


@op("BatchNormalization")
def batch_normalization(
    x: Tensor,
    scale: Tensor,
    bias: Tensor,
    mean: Tensor,
    var: Tensor,
    *,
    epsilon: float = 1e-5,
    momentum: float = 0.9,
    training_mode: int = 0,
    spatial: int = 1,
    output_count: int = 1,
) -> Tensor:
    if training_mode or output_count > 1:
        raise UnsupportedOpError(
            "BatchNormalization in training mode is not supported (the view runs inference)"
        )
    if not spatial:
        raise UnsupportedOpError("BatchNormalization with spatial=0 is not supported")
    by_batch, update = BATCH_STATISTICS.get()
    if by_batch:
        mean, var = _batch_statistics(x, mean, var, momentum if update else None)
    # Written out (not F.batch_norm) so gradients also reach mean and var: they are
    # initializers too, and the running statistics are constants of the graph.
    factor = scale * torch.rsqrt(var + epsilon)
    shift = bias - mean * factor
    if x.dim() == 1:
        return torch.addcmul(shift, x, factor)
    return torch.addcmul(_channel_view(shift, x.dim()), x, _channel_view(factor, x.dim()))


def _batch_statistics(
    x: Tensor, running_mean: Tensor, running_var: Tensor, momentum: float | None
) -> tuple[Tensor, Tensor]:
    """torch's train-mode BatchNorm: the batch's mean and (biased) variance per channel, and
    unless `momentum` is None the running statistics moved toward them in place, the
    variance unbiased, with the ONNX momentum (running = momentum * running + (1 - momentum)
    * batch; torch's 0.1 is ONNX's 0.9). A batch of one value per channel keeps the running
    statistics."""
    axes = [0, *range(2, x.dim())]
    count = x.numel() // x.shape[1] if x.dim() > 1 else 0
    if count < 2:
        return running_mean, running_var
    mean, var = x.mean(dim=axes), x.var(dim=axes, unbiased=False)
    if momentum is None:
        return mean, var
    with torch.no_grad():
        running_mean.mul_(momentum).add_(mean.detach(), alpha=1 - momentum)
        unbiased = var.detach() * (count / (count - 1))
        running_var.mul_(momentum).add_(unbiased, alpha=1 - momentum)
    return mean, var


@op("InstanceNormalization")
def instance_normalization(
    x: Tensor, scale: Tensor, bias: Tensor, *, epsilon: float = 1e-5
) -> Tensor:
    return F.instance_norm(x, weight=scale, bias=bias, eps=epsilon)


@op("LayerNormalization", since=17)
def layer_normalization(
    x: Tensor,
    scale: Tensor,
    bias: Tensor | None = None,
    *,
    axis: int = -1,
    epsilon: float = 1e-5,
    stash_type: int = 1,
    output_count: int = 1,
) -> Tensor | tuple[Tensor, ...]:
    axis = axis + x.dim() if axis < 0 else axis
    normalized = tuple(x.shape[axis:])
    fits_torch = tuple(scale.shape) == normalized and (bias is None or bias.shape == scale.shape)
    if output_count == 1 and fits_torch and x.dtype == torch.float32:
        return F.layer_norm(x, normalized, scale, bias, epsilon)
    dims = list(range(axis, x.dim()))
    # stash_type=1: statistics in float32 whatever the input type.
    stats = x.float() if stash_type == 1 and x.dtype != torch.float64 else x
    mean = stats.mean(dims, keepdim=True)
    inverse_std = torch.rsqrt(((stats - mean) ** 2).mean(dims, keepdim=True) + epsilon)
    y = ((stats - mean) * inverse_std).to(x.dtype) * scale
    if bias is not None:
        y = y + bias
    return (y, mean, inverse_std)[:output_count] if output_count > 1 else y


@op("GroupNormalization", since=21)
def group_normalization(
    x: Tensor,
    scale: Tensor,
    bias: Tensor,
    *,
    epsilon: float = 1e-5,
    num_groups: int,
    stash_type: int = 1,
) -> Tensor:
    return F.group_norm(x, num_groups, scale, bias, epsilon)


@op("LpNormalization")
def lp_normalization(x: Tensor, *, axis: int = -1, p: int = 2) -> Tensor:
    norm = torch.linalg.vector_norm(x, p, dim=axis, keepdim=True)
    return x / torch.where(norm == 0, torch.ones_like(norm), norm)  # a zero vector stays zero


@op("MeanVarianceNormalization")
def mean_variance_normalization(x: Tensor, *, axes: list[int] | None = None) -> Tensor:
    axes = axes if axes is not None else [0, 2, 3]
    centered = x - x.mean(axes, keepdim=True)
    # The epsilon of the op's function body in the ONNX spec.
    return centered / (torch.sqrt((centered * centered).mean(axes, keepdim=True)) + 1e-9)


@op("LRN")
def lrn(
    x: Tensor, *, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0, size: int
) -> Tensor:
    return F.local_response_norm(x, size, alpha, beta, bias)


@op("Dropout", since=1)
def dropout_1(
    x: Tensor, *, is_test: int = 0, ratio: float = 0.5, seed: int = 0, output_count: int = 1
) -> Tensor | tuple[Tensor, Tensor]:
    return _inference_dropout(x, None, output_count)


@op("Dropout", since=12)
def dropout(
    x: Tensor,
    ratio: Tensor | None = None,
    training_mode: Tensor | None = None,
    *,
    seed: int = 0,
    output_count: int = 1,
) -> Tensor | tuple[Tensor, Tensor]:
    return _inference_dropout(x, training_mode, output_count)


def _inference_dropout(x: Tensor, training_mode: Tensor | None, output_count: int):
    if training_mode is not None and bool(training_mode):
        raise UnsupportedOpError("Dropout in training mode is not supported (random)")
    if output_count == 1:
        return x
    return x, torch.ones(x.shape, dtype=torch.bool, device=x.device)
