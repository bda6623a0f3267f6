"""The bundled samples (models and data under the source tree's samples/ folder)."""

from __future__ import annotations

from pathlib import Path

from inner_onnx.errors import InputError

SAMPLES_ROOT = Path(__file__).resolve().parents[2] / "samples"


def sample_dir(name: str) -> Path:
    folder = SAMPLES_ROOT / name
    if not (folder / "model.onnx").is_file():
        raise InputError(
            f"bundled sample {name!r} not found under {SAMPLES_ROOT}; the demo runs from a "
            "source checkout (pip install -e .)"
        )
    return folder
