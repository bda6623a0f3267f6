"""What a scan leaves for a person and a pipeline: each reversed trigger as .npy (mask and
pattern, in the model's layout) and as a PNG (the pattern where the mask lets it through)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from inner_onnx.io.fileio import write_bytes_atomic
from inner_onnx.scan.neural_cleanse import ReversedTrigger, ScanResult


def _image(trigger: ReversedTrigger, layout: str) -> np.ndarray:
    """[H, W] or [H, W, 3] in [0, 1]: the stamp on black, scaled to the pattern's range."""
    picture = trigger.mask * trigger.pattern
    if layout == "NCHW":
        picture = np.moveaxis(picture, 0, -1)
    elif layout == "NC":
        side = int(np.ceil(np.sqrt(picture.size)))
        flat = np.zeros(side * side, np.float32)
        flat[: picture.size] = picture.ravel()
        picture = flat.reshape(side, side, 1)
    low, high = float(picture.min()), float(picture.max())
    picture = (picture - low) / (high - low) if high > low else np.zeros_like(picture)
    return picture[..., 0] if picture.shape[-1] == 1 else picture[..., :3]


def write_triggers(directory: Path, result: ScanResult) -> list[Path]:
    """trigger_CLASS_mask.npy, trigger_CLASS_pattern.npy and trigger_CLASS.png per scanned
    class; returns the paths written."""
    import io

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for label, trigger in sorted(result.triggers.items()):
        for part, array in (("mask", trigger.mask), ("pattern", trigger.pattern)):
            path = directory / f"trigger_{label}_{part}.npy"
            buffer = io.BytesIO()
            np.save(buffer, array)
            write_bytes_atomic(path, buffer.getvalue())
            written.append(path)
        figure = Figure(figsize=(2, 2), dpi=100)
        axes = figure.add_axes((0, 0, 1, 1))
        axes.imshow(_image(trigger, result.layout), cmap="gray", vmin=0, vmax=1)
        axes.set_axis_off()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        path = directory / f"trigger_{label}.png"
        write_bytes_atomic(path, buffer.getvalue())
        written.append(path)
    return written
