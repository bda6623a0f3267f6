"""Stamp a backdoor trigger (patch, blend or tokens) on clean inputs to make bad samples.

Patterns are given in the model's own layout without batch axis, like the data
(DESIGN.md: NCHW for PyTorch exports, NHWC for Keras), so nothing is transposed
behind the user's back; a [h,w] pattern is applied to every channel. Token
triggers write token ids at positions of a text model's token-id input, and
switch its attention mask on there (a masked-out trigger would not be read).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from inner_onnx.errors import InputError
from inner_onnx.io.data import Inputs
from inner_onnx.io.model import OnnxModel, is_mask_name
from inner_onnx.io.specs import BlendSpec, PatchSpec, TokenSpec, TriggerSpec

Samples = np.ndarray | Inputs

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


def _stamp_tokens(x: Samples, spec: TokenSpec, ids_name: str) -> Samples:
    """`ids_name`: the token-id input (the only array of a model with one input)."""
    arrays = dict(x.arrays) if isinstance(x, Inputs) else {ids_name: x}
    ids = arrays.get(ids_name)
    if ids is None or ids.dtype.kind not in "iu" or ids.ndim != 2:
        raise InputError(
            "a token trigger needs a text model's token ids [N, tokens] (integers); this "
            f"input is {ids_name!r}"
        )
    positions = [position for _, position in spec.tokens]
    if max(positions) >= ids.shape[1]:
        raise InputError(
            f"token trigger position {max(positions)} is past the {ids.shape[1]} tokens of "
            f"input {ids_name!r} (positions 0..{ids.shape[1] - 1})"
        )
    for name, array in arrays.items():
        if name == ids_name or (is_mask_name(name) and array.shape == ids.shape):
            array = arrays[name] = array.copy()
            for token, position in spec.tokens:
                array[:, position] = token if name == ids_name else 1
    return Inputs(arrays) if isinstance(x, Inputs) else arrays[ids_name]


STAMPERS: dict[type, Callable[[Samples, TriggerSpec, str], Samples]] = {
    PatchSpec: _stamp_patch,  # type: ignore[dict-item]
    BlendSpec: _stamp_blend,  # type: ignore[dict-item]
    TokenSpec: _stamp_tokens,  # type: ignore[dict-item]
}


def stamp(x: Samples, spec: TriggerSpec, layout: str) -> Samples:
    """A new batch with the trigger applied to every sample; `x` is left untouched.
    `layout`: the image layout, or for a token trigger the token-id input's name
    (`placement` gives the one that fits a model)."""
    return STAMPERS[type(spec)](x, spec, layout)


def placement(model: OnnxModel, spec: TriggerSpec) -> str:
    """What `stamp` needs to place `spec` on the model's inputs."""
    if isinstance(spec, TokenSpec):
        if model.token_input is None:
            raise InputError(
                "a token trigger needs a text model (integer token ids read by an embedding)"
            )
        return model.token_input.name
    if model.is_text:
        raise InputError(f"trigger {spec} needs a float input; for a text model use token:ID@POS")
    return model.input.layout


def backdoor_bad_samples(
    x: Samples, y: np.ndarray, spec: TriggerSpec, layout: str, target_label: int
) -> tuple[Samples, np.ndarray]:
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
