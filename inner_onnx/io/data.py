"""Data files: `.npz` with one array per model input and `y` (int labels).

Each input's array is named after the input (a single-input model may call it
`x`), already preprocessed in the model's layout: float32 for float inputs,
integers (token ids, masks) for integer inputs.

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


class Inputs:
    """The arrays of a model with several inputs, by input name, indexed together by sample."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, index: slice | np.ndarray) -> Inputs:
        return Inputs({name: array[index] for name, array in self.arrays.items()})


@dataclass
class Dataset:
    # one array for a single-input model, else the arrays by input name
    x: np.ndarray | Inputs
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
            names = _array_names(set(archive.files), model, path)
            arrays = {key: archive[key] for key in [*names, "y"]}
            # np.load hands back raw bytes for a member that is not in .npy format.
            for key, value in arrays.items():
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
    y = arrays.pop("y")
    x = Inputs(arrays) if len(arrays) > 1 else next(iter(arrays.values()))
    dataset = Dataset(x, y, str(path))
    validate(dataset, model)
    return dataset


def _array_names(keys: set[str], model: OnnxModel | None, path: Path) -> list[str]:
    """The archive members holding the inputs: one per model input, by name (one input: `x`
    or its name)."""
    specs = model.inputs if model is not None else []
    if len(specs) > 1:
        wanted = [spec.name for spec in specs]
    elif specs and specs[0].name in keys and "x" not in keys:
        wanted = [specs[0].name]
    else:
        wanted = ["x"]
    missing = [key for key in [*wanted, "y"] if key not in keys]
    if missing:
        example = ", ".join(f"{name}=..." for name in [*wanted, "y"])
        raise InputError(
            f"{path}: no array {' or '.join(map(repr, missing))} "
            f"(found {sorted(keys) or 'none'}); save with np.savez(path, {example})"
        )
    return wanted


def validate(dataset: Dataset, model: OnnxModel | None = None) -> None:
    y, name = dataset.y, dataset.source or "data"
    if y.dtype.kind not in "iu":
        raise InputError(f"{name}: y is {y.dtype}, expected integer class labels")
    if y.ndim != 1:
        raise InputError(f"{name}: y has shape {list(y.shape)}, expected one label per sample [N]")
    if len(y) == 0:
        raise InputError(f"{name}: empty (no samples)")
    if y.min() < 0:
        raise InputError(f"{name}: negative labels (min {int(y.min())})")
    if isinstance(dataset.x, Inputs):
        specs = {spec.name: spec for spec in model.inputs} if model is not None else {}
        for key, array in dataset.x.arrays.items():
            _validate_input(array, len(y), name, key, specs.get(key))
    else:
        spec = model.inputs[0] if model is not None and len(model.inputs) == 1 else None
        _validate_input(dataset.x, len(y), name, "x", spec)
    if model is not None and y.max() >= model.num_classes:
        raise InputError(
            f"{name}: label {int(y.max())} out of range: the model has {model.num_classes} classes "
            f"(labels 0..{model.num_classes - 1})"
        )


def _validate_input(x: np.ndarray, count: int, name: str, key: str, spec: InputSpec | None) -> None:
    """One input's array: its dtype fits the input's type, one row per label, finite floats."""
    integer_input = spec is not None and spec.numpy_dtype.kind != "f"
    if integer_input and x.dtype.kind not in "iub":
        raise InputError(
            f"{name}: {key} is {x.dtype}, but model input {spec.name!r} takes "
            f"{spec.numpy_dtype} (token ids, masks): save integers"
        )
    if not integer_input and x.dtype != np.float32:
        if x.dtype.kind in "fiu":
            raise InputError(
                f"{name}: {key} is {x.dtype}, expected float32 already preprocessed "
                f"(convert with {key}.astype(np.float32) after scaling)"
            )
        raise InputError(f"{name}: {key} has dtype {x.dtype}, expected float32")
    if x.ndim == 0 or len(x) == 0:
        raise InputError(f"{name}: empty (no samples)")
    if len(x) != count:
        raise InputError(f"{name}: {key} has {len(x)} samples but y has {count}")
    if not integer_input and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=tuple(range(1, x.ndim))).sum())
        raise InputError(f"{name}: {key} has NaN or infinite values in {bad} samples")
    if spec is not None:
        check_layout(x.shape, spec, name, key)


def _matches(shape: tuple[int, ...], spec: tuple[int | None, ...]) -> bool:
    """Same rank and sample shape; the batch axis is free (a fixed-batch graph runs in chunks)."""
    return len(shape) == len(spec) and all(s is None or s == d for d, s in zip(shape[1:], spec[1:]))


def check_layout(
    shape: tuple[int, ...], spec: InputSpec, name: str = "data", key: str = "x"
) -> None:
    """Compare the shape of array `key` with the model input, naming the fix for common slips."""
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
                f"{name}: {key} is NHWC [N, {', '.join(map(str, got))}] but the model expects NCHW "
                f"{want}; convert with {key}.transpose(0, 3, 1, 2)"
            )
        if _matches(as_nhwc, expected):
            raise InputError(
                f"{name}: {key} is NCHW [N, {', '.join(map(str, got))}] but the model expects NHWC "
                f"{want}; convert with {key}.transpose(0, 2, 3, 1)"
            )
    if len(shape) + 1 == len(expected) and int(np.prod(shape[1:])) == int(
        np.prod([d or 1 for d in expected[1:]])
    ):
        raise InputError(
            f"{name}: {key} has shape [N, {', '.join(map(str, got))}] but the model expects "
            f"{want}; add the channel axis with {key}.reshape(len({key}), ...) to match"
        )
    raise InputError(
        f"{name}: {key} has shape [N, {', '.join(map(str, got))}] but the model input "
        f"{spec.name!r} expects {want}"
    )
