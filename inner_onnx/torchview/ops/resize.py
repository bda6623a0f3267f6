"""Resize: separable interpolation, one axis at a time, exactly as the ONNX spec writes it.

Every resized axis gets a table of source positions and weights (computed in
float64 with numpy from the coordinate transformation), and the output is a
weighted sum of `index_select`s along that axis. The tables depend on shapes
and attributes only, never on tensor values: they are built on the host and
copied once to the input's device. Slower than F.interpolate for
large upsampling, but it covers every coordinate mode and rounding rule.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from inner_onnx.torchview.registry import UnsupportedOpError, op

Tensor = torch.Tensor


def _source_coordinates(
    transform: str, out: int, size: int, scale: float, roi: tuple[float, float]
) -> np.ndarray:
    i = np.arange(out, dtype=np.float64)
    # The spec's length_resized: size * scale before flooring to the output size.
    resized = size * scale
    if transform == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if transform == "half_pixel_symmetric":
        adjustment = out / (scale * size)
        offset = size / 2 * (1 - adjustment)
        return offset + (i + 0.5) / scale - 0.5
    if transform == "pytorch_half_pixel":
        return (i + 0.5) / scale - 0.5 if out > 1 else np.zeros(out)
    if transform == "align_corners":
        return i * (size - 1) / (resized - 1) if out > 1 else np.zeros(out)
    if transform == "asymmetric":
        return i / scale
    if transform == "tf_half_pixel_for_nn":
        return (i + 0.5) / scale
    if transform == "tf_crop_and_resize":
        start, end = roi
        if out > 1:
            return start * (size - 1) + i * (end - start) * (size - 1) / (resized - 1)
        return np.full(out, 0.5 * (start + end) * (size - 1))
    raise UnsupportedOpError(
        f"Resize coordinate_transformation_mode={transform!r} is not supported"
    )


def _nearest(x: np.ndarray, rule: str) -> np.ndarray:
    if rule == "round_prefer_floor":
        return np.ceil(x - 0.5)
    if rule == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if rule == "floor":
        return np.floor(x)
    if rule == "ceil":
        return np.ceil(x)
    raise UnsupportedOpError(f"Resize nearest_mode={rule!r} is not supported")


def _cubic_weights(t: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution weights of the 4 taps at offsets -1, 0, 1, 2."""
    distances = np.abs(np.stack([t + 1, t, 1 - t, 2 - t], axis=1))
    near = ((a + 2) * distances - (a + 3)) * distances * distances + 1
    far = ((a * distances - 5 * a) * distances + 8 * a) * distances - 4 * a
    return np.where(distances <= 1, near, np.where(distances < 2, far, 0.0))


def _taps(mode: str, coords: np.ndarray, size: int, nearest_mode: str, a: float, exclude: int):
    """(positions [out, taps], weights [out, taps] or None for a plain pick)."""
    if mode == "nearest":
        positions = np.clip(_nearest(coords, nearest_mode), 0, size - 1)
        return positions[:, None].astype(np.int64), None
    if mode == "linear":
        clamped = np.clip(coords, 0, size - 1)
        low = np.floor(clamped)
        t = clamped - low
        positions = np.stack([low, np.minimum(low + 1, size - 1)], axis=1)
        return positions.astype(np.int64), np.stack([1 - t, t], axis=1)
    if mode == "cubic":
        low = np.floor(coords)
        raw = low[:, None] + np.arange(-1, 3)[None, :]
        weights = _cubic_weights(coords - low, a)
        if exclude:
            weights = np.where((raw < 0) | (raw > size - 1), 0.0, weights)
            weights = weights / weights.sum(axis=1, keepdims=True)
        return np.clip(raw, 0, size - 1).astype(np.int64), weights
    raise UnsupportedOpError(f"Resize mode={mode!r} is not supported")


def _on_device_of(x: Tensor, table: np.ndarray, dtype: torch.dtype | None = None) -> Tensor:
    return torch.from_numpy(table).to(device=x.device, dtype=dtype)


def _resize_axis(x: Tensor, axis: int, positions: np.ndarray, weights: np.ndarray | None):
    if weights is None:
        return x.index_select(axis, _on_device_of(x, positions[:, 0]))
    shape = [1] * x.dim()
    shape[axis] = -1
    y = None
    for tap in range(positions.shape[1]):
        picked = x.index_select(axis, _on_device_of(x, positions[:, tap]))
        term = picked * _on_device_of(x, weights[:, tap], x.dtype).reshape(shape)
        y = term if y is None else y + term
    return y


@op("Resize", since=11)
def resize(
    x: Tensor,
    roi: Tensor | None = None,
    scales: Tensor | None = None,
    sizes: Tensor | None = None,
    *,
    antialias: int = 0,
    axes: list[int] | None = None,
    coordinate_transformation_mode: str = "half_pixel",
    cubic_coeff_a: float = -0.75,
    exclude_outside: int = 0,
    extrapolation_value: float = 0.0,
    keep_aspect_ratio_policy: str = "stretch",
    mode: str = "nearest",
    nearest_mode: str = "round_prefer_floor",
) -> Tensor:
    if antialias:
        raise UnsupportedOpError("Resize with antialias is not supported")
    axes = [a + x.dim() if a < 0 else a for a in axes] if axes else list(range(x.dim()))
    sizes_in = [x.shape[a] for a in axes]
    out_sizes, axis_scales = _output_geometry(sizes_in, scales, sizes, keep_aspect_ratio_policy)
    roi_values = roi.tolist() if roi is not None and roi.numel() else None
    crop = coordinate_transformation_mode == "tf_crop_and_resize"
    outside = None
    for k, axis in enumerate(axes):
        size, out, scale = sizes_in[k], out_sizes[k], axis_scales[k]
        if out == size and scale == 1.0 and not crop:
            continue
        window = (roi_values[k], roi_values[k + len(axes)]) if roi_values else (0.0, 1.0)
        coords = _source_coordinates(coordinate_transformation_mode, out, size, scale, window)
        positions, weights = _taps(mode, coords, size, nearest_mode, cubic_coeff_a, exclude_outside)
        x = _resize_axis(x, axis, positions, weights)
        if crop:
            shape = [1] * x.dim()
            shape[axis] = -1
            here = _on_device_of(x, (coords < 0) | (coords > size - 1)).reshape(shape)
            outside = here if outside is None else outside | here
    if outside is not None:
        fill = torch.tensor(extrapolation_value, dtype=x.dtype, device=x.device)
        x = torch.where(outside, fill, x)
    return x


def _output_geometry(sizes_in, scales, sizes, policy: str) -> tuple[list[int], list[float]]:
    if sizes is not None and sizes.numel():
        wanted = [int(s) for s in sizes.tolist()]
        ratios = [o / i for o, i in zip(wanted, sizes_in)]
        if policy == "stretch":
            return wanted, ratios
        if policy not in ("not_larger", "not_smaller"):
            raise UnsupportedOpError(f"Resize keep_aspect_ratio_policy={policy!r} is not supported")
        ratio = min(ratios) if policy == "not_larger" else max(ratios)
        return [math.floor(ratio * i + 0.5) for i in sizes_in], [ratio] * len(sizes_in)
    if scales is None or not scales.numel():
        raise UnsupportedOpError("Resize needs scales or sizes")
    factors = [float(s) for s in scales.tolist()]
    return [math.floor(i * s) for i, s in zip(sizes_in, factors)], factors
