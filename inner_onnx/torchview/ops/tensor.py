"""Shape manipulation, indexing, type casts, padding and resizing."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from inner_onnx.torchview.ops.nn import torch_pad_order
from inner_onnx.torchview.registry import UnsupportedOpError, op
from inner_onnx.torchview.tensors import torch_dtype

Tensor = torch.Tensor


def _ints(values: Tensor | list[int] | None) -> list[int] | None:
    """Shape-like operands arrive as int64 tensors: torch wants Python ints."""
    if values is None or isinstance(values, list):
        return values
    return [int(v) for v in values.reshape(-1).tolist()]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


@op("Constant")
def constant(
    *,
    value: Tensor | None = None,
    value_float: float | None = None,
    value_floats: list[float] | None = None,
    value_int: int | None = None,
    value_ints: list[int] | None = None,
) -> Tensor:
    if value is not None:
        return value
    if value_float is not None:
        return torch.tensor(value_float, dtype=torch.float32)
    if value_floats is not None:
        return torch.tensor(value_floats, dtype=torch.float32)
    if value_int is not None:
        return torch.tensor(value_int, dtype=torch.int64)
    if value_ints is not None:
        return torch.tensor(value_ints, dtype=torch.int64)
    raise UnsupportedOpError("Constant without a numeric value is not supported")


@op("ConstantOfShape")
def constant_of_shape(shape: Tensor, *, value: Tensor | None = None) -> Tensor:
    if value is None:
        return torch.zeros(_ints(shape), dtype=torch.float32, device=shape.device)
    # `value` is an attribute, a CPU tensor: only its scalar and its type are read.
    return torch.full(
        _ints(shape), value.reshape(-1)[0].item(), dtype=value.dtype, device=shape.device
    )


@op("Shape", since=1)
def shape(x: Tensor, *, start: int = 0, end: int | None = None) -> Tensor:
    return torch.tensor(x.shape[start:end], dtype=torch.int64, device=x.device)


@op("Size")
def size(x: Tensor) -> Tensor:
    return torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


@op("Cast")
def cast(x: Tensor, *, to: int, saturate: int = 1) -> Tensor:
    return x.to(torch_dtype(to))


@op("CastLike")
def cast_like(x: Tensor, like: Tensor, *, saturate: int = 1) -> Tensor:
    return x.to(like.dtype)


@op("Flatten")
def flatten(x: Tensor, *, axis: int = 1) -> Tensor:
    axis = _axis(axis, x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@op("Reshape", since=5)
def reshape(x: Tensor, shape: Tensor, *, allowzero: int = 0) -> Tensor:
    target = _ints(shape)
    if not allowzero:
        # 0 copies the input's dimension at that position.
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return x.reshape(target)


@op("Transpose")
def transpose(x: Tensor, *, perm: list[int] | None = None) -> Tensor:
    return x.permute(perm if perm is not None else list(reversed(range(x.dim()))))


def _squeeze(x: Tensor, axes: list[int] | None) -> Tensor:
    if not axes:
        return x.squeeze()
    return torch.squeeze(x, tuple(_axis(a, x.dim()) for a in axes))


def _unsqueeze(x: Tensor, axes: list[int]) -> Tensor:
    rank = x.dim() + len(axes)
    for axis in sorted(_axis(a, rank) for a in axes):
        x = x.unsqueeze(axis)
    return x


@op("Squeeze", since=1)
def squeeze_1(x: Tensor, *, axes: list[int] | None = None) -> Tensor:
    return _squeeze(x, axes)


@op("Squeeze", since=13)
def squeeze(x: Tensor, axes: Tensor | None = None) -> Tensor:
    return _squeeze(x, _ints(axes))


@op("Unsqueeze", since=1)
def unsqueeze_1(x: Tensor, *, axes: list[int]) -> Tensor:
    return _unsqueeze(x, axes)


@op("Unsqueeze", since=13)
def unsqueeze(x: Tensor, axes: Tensor) -> Tensor:
    return _unsqueeze(x, _ints(axes))


@op("Concat")
def concat(*xs: Tensor, axis: int) -> Tensor:
    return torch.cat(xs, axis)


def _split(x: Tensor, sizes: list[int] | None, axis: int, parts: int) -> tuple[Tensor, ...]:
    if sizes:
        return tuple(torch.split(x, sizes, axis))
    return tuple(torch.split(x, -(-x.shape[axis] // parts), axis))


@op("Split", since=2)
def split_2(
    x: Tensor, *, axis: int = 0, split: list[int] | None = None, output_count: int = 1
) -> tuple[Tensor, ...]:
    return _split(x, split, axis, output_count)


@op("Split", since=13)
def split_13(
    x: Tensor, split: Tensor | None = None, *, axis: int = 0, output_count: int = 1
) -> tuple[Tensor, ...]:
    return _split(x, _ints(split), axis, output_count)


@op("Split", since=18)
def split(
    x: Tensor,
    split: Tensor | None = None,
    *,
    axis: int = 0,
    num_outputs: int | None = None,
    output_count: int = 1,
) -> tuple[Tensor, ...]:
    return _split(x, _ints(split), axis, num_outputs or output_count)


def _slice(x: Tensor, starts, ends, axes, steps) -> Tensor:
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    index: list[slice] = [slice(None)] * x.dim()
    reversed_axes = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(axis, x.dim())
        dim = x.shape[axis]
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            index[axis] = slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
        elif step < 0:
            start = min(max(start, 0), dim - 1)
            end = min(max(end, -1), dim - 1)
            positions = torch.arange(start, end, step, dtype=torch.int64, device=x.device)
            reversed_axes.append((axis, positions))
        else:
            raise UnsupportedOpError("Slice with step 0 is invalid")
    x = x[tuple(index)]
    for axis, positions in reversed_axes:
        x = x.index_select(axis, positions)
    return x


@op("Slice", since=1)
def slice_1(
    x: Tensor, *, axes: list[int] | None = None, ends: list[int], starts: list[int]
) -> Tensor:
    return _slice(x, starts, ends, axes, None)


@op("Slice", since=10)
def slice_(
    x: Tensor,
    starts: Tensor,
    ends: Tensor,
    axes: Tensor | None = None,
    steps: Tensor | None = None,
) -> Tensor:
    return _slice(x, _ints(starts), _ints(ends), _ints(axes), _ints(steps))


def _wrap_negative(indices: Tensor, size: int) -> Tensor:
    return torch.where(indices < 0, indices + size, indices).long()


@op("Gather")
def gather(data: Tensor, indices: Tensor, *, axis: int = 0) -> Tensor:
    axis = _axis(axis, data.dim())
    index = _wrap_negative(indices, data.shape[axis])
    picked = data.index_select(axis, index.reshape(-1))
    return picked.reshape((*data.shape[:axis], *index.shape, *data.shape[axis + 1 :]))


@op("GatherElements")
def gather_elements(data: Tensor, indices: Tensor, *, axis: int = 0) -> Tensor:
    axis = _axis(axis, data.dim())
    return torch.gather(data, axis, _wrap_negative(indices, data.shape[axis]))


@op("GatherND")
def gather_nd(data: Tensor, indices: Tensor, *, batch_dims: int = 0) -> Tensor:
    depth = indices.shape[-1]
    batch = math.prod(data.shape[:batch_dims])
    flat_data = data.reshape(batch, *data.shape[batch_dims:])
    flat_indices = indices.reshape(batch, *indices.shape[batch_dims:])
    batch_index = torch.arange(batch, device=data.device).reshape(
        batch, *([1] * (flat_indices.dim() - 2))
    )
    coordinates = [
        _wrap_negative(flat_indices[..., i], flat_data.shape[1 + i]) for i in range(depth)
    ]
    picked = flat_data[(batch_index, *coordinates)]
    return picked.reshape((*indices.shape[:-1], *data.shape[batch_dims + depth :]))


@op("Expand")
def expand(x: Tensor, shape: Tensor) -> Tensor:
    return x.expand(torch.broadcast_shapes(x.shape, tuple(_ints(shape))))


@op("Tile")
def tile(x: Tensor, repeats: Tensor) -> Tensor:
    return x.repeat(_ints(repeats))


@op("Range")
def range_(start: Tensor, limit: Tensor, delta: Tensor) -> Tensor:
    first, last, step = start.item(), limit.item(), delta.item()
    count = max(math.ceil((last - first) / step), 0)
    return start + torch.arange(count, dtype=start.dtype, device=start.device) * delta


@op("OneHot")
def one_hot(indices: Tensor, depth: Tensor, values: Tensor, *, axis: int = -1) -> Tensor:
    classes = int(depth.item())
    index = _wrap_negative(indices, classes).unsqueeze(_axis(axis, indices.dim() + 1))
    shape = [1] * index.dim()
    shape[_axis(axis, index.dim())] = classes
    hot = torch.arange(classes, device=indices.device).reshape(shape) == index
    return torch.where(hot, values[1], values[0])


@op("Trilu")
def trilu(x: Tensor, k: Tensor | None = None, *, upper: int = 1) -> Tensor:
    diagonal = int(k.item()) if k is not None else 0
    return torch.triu(x, diagonal) if upper else torch.tril(x, diagonal)


@op("TopK", since=11)
def top_k(
    x: Tensor,
    k: Tensor,
    *,
    axis: int = -1,
    largest: int = 1,
    sorted: int = 1,
) -> tuple[Tensor, Tensor]:
    # A stable sort: among equal values the lower index comes first, as ONNX requires.
    values, indices = torch.sort(x, dim=axis, descending=bool(largest), stable=True)
    count = int(k.reshape(-1)[0])
    return values.narrow(axis, 0, count), indices.narrow(axis, 0, count)


@op("NonZero")
def non_zero(x: Tensor) -> Tensor:
    return torch.nonzero(x).t().contiguous()


_SCATTER_REDUCTIONS = {"mul": "prod", "max": "amax", "min": "amin"}


@op("ScatterElements", since=11)
def scatter_elements(
    data: Tensor, indices: Tensor, updates: Tensor, *, axis: int = 0, reduction: str = "none"
) -> Tensor:
    axis = _axis(axis, data.dim())
    index = _wrap_negative(indices, data.shape[axis])
    if reduction == "none":
        return data.scatter(axis, index, updates)
    if reduction == "add":
        return data.scatter_add(axis, index, updates)
    if reduction not in _SCATTER_REDUCTIONS:
        raise UnsupportedOpError(f"ScatterElements reduction={reduction!r} is not supported")
    return data.scatter_reduce(axis, index, updates, _SCATTER_REDUCTIONS[reduction])


@op("ScatterND", since=11)
def scatter_nd(data: Tensor, indices: Tensor, updates: Tensor, *, reduction: str = "none"):
    depth = indices.shape[-1]
    # Address the first `depth` axes by one linear row index, the rest are slices.
    rows = data.reshape(math.prod(data.shape[:depth]), *data.shape[depth:])
    linear = torch.zeros(indices.shape[:-1], dtype=torch.int64, device=indices.device)
    for i in range(depth):
        linear = linear * data.shape[i] + _wrap_negative(indices[..., i], data.shape[i])
    linear = linear.reshape(-1)
    values = updates.reshape(linear.numel(), *data.shape[depth:])
    if reduction == "none":
        result = rows.index_copy(0, linear, values)
    elif reduction == "add":
        result = rows.index_add(0, linear, values)
    elif reduction in _SCATTER_REDUCTIONS:
        index = linear.reshape(-1, *([1] * (values.dim() - 1))).expand_as(values)
        result = rows.scatter_reduce(0, index, values, _SCATTER_REDUCTIONS[reduction])
    else:
        raise UnsupportedOpError(f"ScatterND reduction={reduction!r} is not supported")
    return result.reshape(data.shape)


@op("CumSum")
def cum_sum(x: Tensor, axis: Tensor, *, exclusive: int = 0, reverse: int = 0) -> Tensor:
    dim = _axis(int(axis.item()), x.dim())
    if reverse:
        x = torch.flip(x, (dim,))
    y = torch.cumsum(x, dim).to(x.dtype)  # torch widens small integer types
    if exclusive:
        y = y - x
    return torch.flip(y, (dim,)) if reverse else y


@op("DepthToSpace")
def depth_to_space(x: Tensor, *, blocksize: int, mode: str = "DCR") -> Tensor:
    n, c, h, w = x.shape
    b = blocksize
    if mode == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (b * b), h * b, w * b)


@op("SpaceToDepth")
def space_to_depth(x: Tensor, *, blocksize: int, mode: str = "DCR") -> Tensor:
    n, c, h, w = x.shape
    b = blocksize
    y = x.reshape(n, c, h // b, b, w // b, b)
    y = y.permute(0, 3, 5, 1, 2, 4) if mode == "DCR" else y.permute(0, 1, 3, 5, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


# Pad


def _pad_positions(
    mode: str, size: int, begin: int, end: int, device: torch.device
) -> torch.Tensor:
    """Source position of every output position along one axis, for the non-constant modes."""
    positions = torch.arange(-begin, size + end, device=device)
    if mode == "edge":
        return torch.clamp(positions, 0, size - 1)
    if mode == "wrap":
        return torch.remainder(positions, size)
    if mode == "reflect":
        if size == 1:
            return torch.zeros_like(positions)
        period = 2 * (size - 1)
        folded = torch.remainder(positions, period)
        return torch.where(folded < size, folded, period - folded)
    raise UnsupportedOpError(f"Pad mode {mode!r} is not supported")


def _pad(x: Tensor, pads: list[int], value: float, mode: str, axes: list[int] | None) -> Tensor:
    axes = [_axis(a, x.dim()) for a in axes] if axes is not None else list(range(x.dim()))
    begin, end = [0] * x.dim(), [0] * x.dim()
    for i, axis in enumerate(axes):
        begin[axis], end[axis] = pads[i], pads[i + len(axes)]
    if mode == "constant":
        return F.pad(x, torch_pad_order(begin, end), value=value)
    for axis in range(x.dim()):
        if begin[axis] or end[axis]:
            positions = _pad_positions(mode, x.shape[axis], begin[axis], end[axis], x.device)
            x = x.index_select(axis, positions)
    return x


@op("Pad", since=2)
def pad_2(x: Tensor, *, mode: str = "constant", pads: list[int], value: float = 0.0) -> Tensor:
    return _pad(x, pads, value, mode, None)


@op("Pad", since=11)
def pad(
    x: Tensor,
    pads: Tensor,
    constant_value: Tensor | None = None,
    axes: Tensor | None = None,
    *,
    mode: str = "constant",
) -> Tensor:
    value = constant_value.item() if constant_value is not None else 0
    return _pad(x, _ints(pads), value, mode, _ints(axes))
