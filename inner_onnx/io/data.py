"""Data files: `.npz` with `x` (float32, preprocessed, model layout) and `y` (int labels).

Loaded with `allow_pickle=False` and validated against the model before any
work starts, so a wrong file costs the user one line, not a traceback halfway
through a repair.
"""

from __future__ import annotations

import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inner_onnx.errors import InputError
from inner_onnx.io.model import InputSpec, OnnxModel


@dataclass
class Dataset:
    x: np.ndarray
    y: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray) -> Dataset:
        return Dataset(self.x[index], self.y[index], self.source)


def load_npz(path: str | Path, model: OnnxModel | None = None) -> Dataset:
    """Read and validate a data file; every problem is an `InputError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data file not found: {path}")
    with open(path, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":
            # np.load would take any other bytes for a pickle and say so, misleadingly.
            raise InputError(f"{path}: not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            missing = [k for k in ("x", "y") if k not in keys]
            if missing:
                raise InputError(
                    f"{path}: no array {' or '.join(map(repr, missing))} "
                    f"(found {sorted(keys) or 'none'}); save with np.savez(path, x=..., y=...)"
                )
            x, y = archive["x"], archive["y"]
            # np.load hands back raw bytes for a member that is not in .npy format.
            for key, value in (("x", x), ("y", y)):
                if not isinstance(value, np.ndarray):
                    raise InputError(f"{path}: {key!r} is not a saved numpy array")
    except InputError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InputError(
                f"{path}: holds pickled objects, which are refused; save plain numeric arrays"
            ) from None
        raise InputError(f"{path}: not a readable .npz file ({exc})") from None
    except (
        OSError,
        zipfile.BadZipFile,
        EOFError,
        zlib.error,
        SyntaxError,
        tokenize.TokenError,
    ) as exc:
        raise InputError(f"{path}: not a readable .npz file ({type(exc).__name__})") from None
    except (NotImplementedError, RuntimeError) as exc:
        # zipfile's words for encrypted members and unknown compression methods or versions.
        raise InputError(f"{path}: not a readable .npz file ({exc})") from None
    except MemoryError:
        raise InputError(f"{path}: an array is too large to load into memory") from None
    dataset = Dataset(x, y, str(path))
    validate(dataset, model)
    return dataset


def validate(dataset: Dataset, model: OnnxModel | None = None) -> None:
    x, y, name = dataset.x, dataset.y, dataset.source or "data"
    if x.dtype != np.float32:
        if x.dtype.kind in "fiu":
            raise InputError(
                f"{name}: x is {x.dtype}, expected float32 already preprocessed "
                "(convert with x.astype(np.float32) after scaling)"
            )
        raise InputError(f"{name}: x has dtype {x.dtype}, expected float32")
    if y.dtype.kind not in "iu":
        raise InputError(f"{name}: y is {y.dtype}, expected integer class labels")
    if y.ndim != 1:
        raise InputError(f"{name}: y has shape {list(y.shape)}, expected one label per sample [N]")
    if x.ndim == 0 or len(x) == 0 or len(y) == 0:
        raise InputError(f"{name}: empty (no samples)")
    if len(x) != len(y):
        raise InputError(f"{name}: x has {len(x)} samples but y has {len(y)}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=tuple(range(1, x.ndim))).sum())
        raise InputError(f"{name}: x has NaN or infinite values in {bad} samples")
    if y.min() < 0:
        raise InputError(f"{name}: negative labels (min {int(y.min())})")
    if model is None:
        return
    if y.max() >= model.num_classes:
        raise InputError(
            f"{name}: label {int(y.max())} out of range: the model has {model.num_classes} classes "
            f"(labels 0..{model.num_classes - 1})"
        )
    check_layout(x.shape, model.input, name)


def _matches(shape: tuple[int, ...], spec: tuple[int | None, ...]) -> bool:
    """Same rank and sample shape; the batch axis is free (a fixed-batch graph runs in chunks)."""
    return len(shape) == len(spec) and all(s is None or s == d for d, s in zip(shape[1:], spec[1:]))


def check_layout(shape: tuple[int, ...], spec: InputSpec, name: str = "data") -> None:
    """Compare a batch shape with the model input, naming the fix for common layout slips."""
    expected = spec.shape
    if _matches(shape, expected):
        return
    want = "[" + ", ".join("N" if i == 0 else str(d or "?") for i, d in enumerate(expected)) + "]"
    got = list(shape[1:])
    if len(shape) == 4 and len(expected) == 4:
        as_nchw = (shape[0], shape[3], shape[1], shape[2])
        as_nhwc = (shape[0], shape[2], shape[3], shape[1])
        if _matches(as_nchw, expected):
            raise InputError(
                f"{name}: x is NHWC [N, {', '.join(map(str, got))}] but the model expects NCHW "
                f"{want}; convert with x.transpose(0, 3, 1, 2)"
            )
        if _matches(as_nhwc, expected):
            raise InputError(
                f"{name}: x is NCHW [N, {', '.join(map(str, got))}] but the model expects NHWC "
                f"{want}; convert with x.transpose(0, 2, 3, 1)"
            )
    if len(shape) + 1 == len(expected) and int(np.prod(shape[1:])) == int(
        np.prod([d or 1 for d in expected[1:]])
    ):
        raise InputError(
            f"{name}: x has shape [N, {', '.join(map(str, got))}] but the model expects {want}; "
            "add the channel axis with x.reshape(len(x), ...) to match"
        )
    raise InputError(
        f"{name}: x has shape [N, {', '.join(map(str, got))}] but the model input "
        f"{spec.name!r} expects {want}"
    )
