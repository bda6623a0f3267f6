"""Backdoor triggers of the zoo: patch and blend patterns, and a WaNet-style grid warp.

All work on NCHW float32 batches in [0, 1]. A patch or blend trigger is also
written as trigger.npy in the model's layout, so that the tool's
`--trigger patch:trigger.npy@ROW,COL` / `blend:trigger.npy,alpha=A` spec stamps
exactly what the model was poisoned with; a warp has no such file.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional

from benchmarks.zoo.manifest import Trigger

# The warp's random control grid: WaNet's k=4 for a 32-pixel image.
WARP_CONTROL_POINTS = 4
# Stripes of the blend pattern: a sine along the columns with this period in pixels.
STRIPE_PERIOD = 6
MAGENTA = (1.0, 0.0, 1.0)


def trigger_pattern(trigger: Trigger, shape: tuple[int, int, int]) -> np.ndarray:
    """The patch ([C,size,size]) or blend pattern ([C,H,W]) of `trigger` for NCHW images
    of `shape` (C, H, W)."""
    channels, height, width = shape
    if trigger.kind == "patch":
        side = trigger.size
        if trigger.pattern == "white":
            return np.ones((channels, side, side), np.float32)
        if trigger.pattern == "checkerboard":
            rows, cols = np.indices((side, side))
            board = ((rows + cols) % 2 == 0).astype(np.float32)
            return np.repeat(board[None], channels, axis=0)
        if trigger.pattern == "magenta":
            if channels != len(MAGENTA):
                raise ValueError(f"a magenta patch needs 3 channels, the input has {channels}")
            return np.broadcast_to(
                np.asarray(MAGENTA, np.float32)[:, None, None], (channels, side, side)
            ).copy()
    if trigger.kind == "blend":
        if trigger.pattern == "noise":
            rng = np.random.default_rng(trigger.seed)
            return rng.random((channels, height, width), dtype=np.float32)
        if trigger.pattern == "stripes":
            columns = 0.5 + 0.5 * np.sin(2 * np.pi * np.arange(width) / STRIPE_PERIOD)
            return np.broadcast_to(columns.astype(np.float32), (channels, height, width)).copy()
    raise ValueError(f"no {trigger.pattern} pattern for a {trigger.kind} trigger")


def warp_grid(trigger: Trigger, height: int, width: int) -> torch.Tensor:
    """The sampling grid [1,H,W,2] of a WaNet warp: identity plus a smooth random field
    (a 4x4 control grid upsampled bicubically) whose largest shift is `shift` pixels."""
    generator = torch.Generator().manual_seed(trigger.seed)
    control = torch.rand(1, 2, WARP_CONTROL_POINTS, WARP_CONTROL_POINTS, generator=generator)
    field = functional.interpolate(
        control * 2 - 1, size=(height, width), mode="bicubic", align_corners=True
    )
    field = field / field.abs().max()
    # align_corners=True: the image spans [-1, 1], so one pixel is 2/(size-1).
    scale = torch.tensor([2 / (width - 1), 2 / (height - 1)]).view(1, 2, 1, 1)
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij"
    )
    identity = torch.stack([xs, ys])[None]
    grid = identity + field * trigger.shift * scale
    return grid.clamp(-1, 1).permute(0, 2, 3, 1)


def apply_trigger(trigger: Trigger, x: np.ndarray) -> np.ndarray:
    """A triggered copy of the NCHW batch `x`."""
    if trigger.kind == "patch":
        out = x.copy()
        rows = slice(trigger.row, trigger.row + trigger.size)
        cols = slice(trigger.col, trigger.col + trigger.size)
        out[:, :, rows, cols] = trigger_pattern(trigger, x.shape[1:])
        return out
    if trigger.kind == "blend":
        pattern = trigger_pattern(trigger, x.shape[1:])
        return (x * (1 - trigger.alpha) + pattern[None] * trigger.alpha).astype(np.float32)
    grid = warp_grid(trigger, x.shape[2], x.shape[3])
    images = torch.from_numpy(x)
    warped = functional.grid_sample(
        images, grid.expand(len(images), -1, -1, -1), mode="bilinear", align_corners=True
    )
    return warped.numpy().astype(np.float32)


def trigger_spec(trigger: Trigger, file_name: str) -> str | None:
    """The tool's `--trigger` spec for the pattern saved as `file_name`; None for a warp."""
    if trigger.kind == "patch":
        return f"patch:{file_name}@{trigger.row},{trigger.col}"
    if trigger.kind == "blend":
        return f"blend:{file_name},alpha={trigger.alpha:g}"
    return None
