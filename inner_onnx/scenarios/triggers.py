"""Stamp a backdoor trigger (patch or blend) on clean inputs to make bad samples.

Patterns are given in the model's own layout without batch axis, like the data
(DESIGN.md: NCHW for PyTorch exports, NHWC for Keras), so nothing is transposed
behind the user's back; a [h,w] pattern is applied to every channel.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from inner_onnx.errors import InputError
from inner_onnx.io.specs import BlendSpec, PatchSpec, TriggerSpec

IMAGE_LAYOUTS = ("NCHW", "NHWC")


def _image_shape(x: np.ndarray, layout: str, what: str) -> tuple[int, int, int]:
    """(channels, height, width) of an image batch in `layout`."""
    if layout not in IMAGE_LAYOUTS or x.ndim != 4:
        raise InputError(
            f"{what} needs image inputs [N,C,H,W] or [N,H,W,C]; this input is {layout} with "
            f"shape {list(x.shape)}"
        )
    if layout == "NCHW":
        return x.shape[1], x.shape[2], x.shape[3]
    return x.shape[3], x.shape[1], x.shape[2]


def _pattern_in_layout(spec: TriggerSpec, layout: str, channels: int) -> np.ndarray:
    """The pattern as a 3-axis array in `layout`; a [h,w] pattern gets a channel axis of 1."""
    pattern = spec.pattern
    if pattern.ndim == 2:
        return pattern[None] if layout == "NCHW" else pattern[..., None]
    expected = "[C,h,w]" if layout == "NCHW" else "[h,w,C]"
    if pattern.ndim != 3:
        raise InputError(
            f"trigger {spec.path} has shape {list(pattern.shape)}; a {layout} model needs "
            f"{expected} or [h,w]"
        )
    found = pattern.shape[0] if layout == "NCHW" else pattern.shape[2]
    if found != channels:
        raise InputError(
            f"trigger {spec.path} has {found} channels (read as {expected} for this {layout} "
            f"model, shape {list(pattern.shape)}) but the input has {channels}"
        )
    return pattern


def _spatial(pattern: np.ndarray, layout: str) -> tuple[int, int]:
    return pattern.shape[1:] if layout == "NCHW" else pattern.shape[:2]  # type: ignore[return-value]


def _stamp_patch(x: np.ndarray, spec: PatchSpec, layout: str) -> np.ndarray:
    channels, height, width = _image_shape(
        x, layout, "a patch trigger (for other inputs use blend:FILE.npy,alpha=A)"
    )
    patch = _pattern_in_layout(spec, layout, channels)
    h, w = _spatial(patch, layout)
    if spec.row + h > height or spec.col + w > width:
        raise InputError(
            f"patch {spec.path} ({h}x{w}) at row {spec.row}, col {spec.col} does not fit the "
            f"{height}x{width} input (needs row <= {height - h} and col <= {width - w})"
        )
    out = x.copy()
    rows, cols = slice(spec.row, spec.row + h), slice(spec.col, spec.col + w)
    if layout == "NCHW":
        out[:, :, rows, cols] = patch
    else:
        out[:, rows, cols, :] = patch
    return out


def _stamp_blend(x: np.ndarray, spec: BlendSpec, layout: str) -> np.ndarray:
    pattern = spec.pattern
    if pattern.shape != x.shape[1:]:
        channels, height, width = _image_shape(
            x, layout, f"a blend pattern of shape {list(pattern.shape)} other than the input's"
        )
        pattern = _pattern_in_layout(spec, layout, channels)
        if _spatial(pattern, layout) != (height, width):
            raise InputError(
                f"blend pattern {spec.path} has shape {list(spec.pattern.shape)} but the input "
                f"is {list(x.shape[1:])} (or give [{height},{width}] for every channel)"
            )
    blended = x * (1 - spec.alpha) + pattern[None] * spec.alpha
    return blended.astype(x.dtype, copy=False)


STAMPERS: dict[type, Callable[[np.ndarray, TriggerSpec, str], np.ndarray]] = {
    PatchSpec: _stamp_patch,  # type: ignore[dict-item]
    BlendSpec: _stamp_blend,  # type: ignore[dict-item]
}


def stamp(x: np.ndarray, spec: TriggerSpec, layout: str) -> np.ndarray:
    """A new batch with the trigger applied to every sample; `x` is left untouched."""
    return STAMPERS[type(spec)](x, spec, layout)


def backdoor_bad_samples(
    x: np.ndarray, y: np.ndarray, spec: TriggerSpec, layout: str, target_label: int
) -> tuple[np.ndarray, np.ndarray]:
    """Triggered copies of the samples whose true label is not the target, with their TRUE labels.

    Samples of the target class are left out: a trigger cannot flip them, so they
    would only dilute the attack success rate.
    """
    keep = y != target_label
    if not keep.any():
        raise InputError(
            f"every sample has the target label {target_label}: no clean sample to stamp the "
            "trigger on"
        )
    return stamp(x[keep], spec, layout), y[keep].copy()
