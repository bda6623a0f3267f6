"""Shared by the converters: export to a temporary file, compare onnxruntime with the
framework on sample batches, and only then move the file into place.

Needs only numpy, onnx and onnxruntime, so it works in any framework's venv.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

# Float32 exports of small classifiers agree with their framework far below this.
DEFAULT_TOLERANCE = 1e-4


class ExportMismatchError(RuntimeError):
    """The exported graph does not compute what the framework model computes."""


def onnx_predict(path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    return session.run(None, {model_input.name: batch})[0]


def export_verified(
    path: str | Path,
    export: Callable[[Path], None],
    reference: Callable[[np.ndarray], np.ndarray],
    batches: Sequence[np.ndarray],
    tolerance: float = DEFAULT_TOLERANCE,
) -> float:
    """Run `export(temp_path)`, check it, and replace `path` only if every batch agrees.

    Returns the largest absolute difference seen. On a mismatch (or any failure)
    the temporary file is removed and `path` is left as it was.
    """
    import onnx

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target, so os.replace is an atomic rename.
    handle, temp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    os.close(handle)
    temp = Path(temp_name)
    try:
        export(temp)
        # mkstemp creates the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        temp.chmod(0o666 & ~umask)
        onnx.checker.check_model(str(temp), full_check=True)
        worst = 0.0
        for batch in batches:
            expected = np.asarray(reference(batch))
            got = onnx_predict(temp, batch)
            if got.shape != expected.shape:
                raise ExportMismatchError(
                    f"onnxruntime output shape {list(got.shape)} differs from the framework's "
                    f"{list(expected.shape)} on a batch of {len(batch)}: not written"
                )
            worst = max(worst, float(np.abs(got - expected).max()))
        if not worst <= tolerance:
            raise ExportMismatchError(
                f"onnxruntime and the framework differ by up to {worst:.3g} "
                f"(tolerance {tolerance:g}): {target} not written"
            )
        os.replace(temp, target)
        return worst
    finally:
        temp.unlink(missing_ok=True)


def run_command(action: Callable[[], None], output: Path) -> int:
    """A converter's exit status: 0 written, 2 refused or bad input (one line on stderr)."""
    try:
        action()
    except (ValueError, ExportMismatchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {output}")
    return 0


def random_batches(shape: Sequence[int], seed: int = 0) -> list[np.ndarray]:
    """Two uniform [0, 1) batches of different sizes: the second checks the dynamic batch axis."""
    rng = np.random.default_rng(seed)
    batch, *rest = shape
    return [
        rng.random((batch, *rest), dtype=np.float32),
        rng.random((batch + 3, *rest), dtype=np.float32),
    ]


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(
            f"input shape {text!r} is not comma-separated integers, e.g. 1,1,28,28"
        ) from None
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(
            f"input shape {text!r} needs a batch axis and positive sizes, e.g. 1,1,28,28"
        )
    return shape
