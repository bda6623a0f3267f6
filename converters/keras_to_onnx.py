"""Export a Keras 3 classifier to ONNX with Keras' own exporter, verified in onnxruntime.

    python converters/keras_to_onnx.py model.keras -o model.onnx [--opset 17]

Uses `model.export(path, format="onnx")` (TensorFlow backend: tf2onnx must be
installed), so the graph keeps Keras' NHWC input layout. The exported graph is
run in onnxruntime next to `model.predict` on two batches of different sizes,
and nothing is written (exit status 2) if they differ by more than 1e-4. The
file appears atomically, never half-written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

if not __package__:  # run as a script: make `converters` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from converters import verify

# What export_keras raises when onnxruntime and the model disagree.
ExportMismatchError = verify.ExportMismatchError

DEFAULT_OPSET = 17
CHECK_BATCH = 4


def export_keras(
    model: keras.Model,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    check_inputs: Sequence[np.ndarray] | None = None,
    tolerance: float = verify.DEFAULT_TOLERANCE,
) -> None:
    """Export `model` to `path`; raise `ExportMismatchError` if onnxruntime and
    `model.predict` disagree on `check_inputs` (default: two random batches of
    different sizes), leaving `path` untouched."""
    if check_inputs is None:
        _, *sample_shape = model.inputs[0].shape
        if any(size is None for size in sample_shape):
            raise ValueError(
                f"model input {list(model.inputs[0].shape)} has unknown sizes besides the batch: "
                "pass check_inputs"
            )
        check_inputs = verify.random_batches((CHECK_BATCH, *sample_shape))

    check_inputs = [np.asarray(batch, np.float32) for batch in check_inputs]
    # Keras refuses to export a model that was built but never called.
    model(check_inputs[0][:1])

    def export(temp: Path) -> None:
        model.export(str(temp), format="onnx", opset_version=opset, verbose=False)

    def reference(batch: np.ndarray) -> np.ndarray:
        return model.predict(batch, verbose=0)

    verify.export_verified(path, export, reference, check_inputs, tolerance)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="Keras model file (.keras)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    args = parser.parse_args(argv)

    def convert() -> None:
        if not args.model.is_file():
            raise ValueError(f"model file not found: {args.model}")
        import keras

        export_keras(keras.saving.load_model(args.model), args.output, opset=args.opset)

    return verify.run_command(convert, args.output)


if __name__ == "__main__":
    sys.exit(main())
