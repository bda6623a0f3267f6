"""Export a PyTorch classifier to ONNX with a dynamic batch axis, verified in onnxruntime.

    python converters/torch_to_onnx.py net.py:make_model --weights net.pt \
        --input-shape 1,1,28,28 -o model.onnx [--opset 17] [--dynamo | --no-dynamo]

`net.py:make_model` names a Python file and a function in it that returns the
`torch.nn.Module` (untrained); `--weights` is a `state_dict` saved with
`torch.save`. The exported graph is run in onnxruntime next to the module on
two batches of different sizes, and nothing is written (exit status 2) if they
differ by more than 1e-4. The file appears atomically, never half-written.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

if not __package__:  # run as a script: make `converters` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from converters import verify

# What export_torch raises when onnxruntime and the module disagree.
ExportMismatchError = verify.ExportMismatchError

# Every runtime the project meets handles 17; the dynamo exporter builds a newer
# graph and converts it down to the requested opset.
DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_torch(
    module: torch.nn.Module,
    example_input: torch.Tensor | np.ndarray,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    dynamo: bool = False,
    check_inputs: Sequence[np.ndarray] | None = None,
    tolerance: float = verify.DEFAULT_TOLERANCE,
) -> None:
    """Export `module` (put in eval mode) to `path`; raise `ExportMismatchError` if
    onnxruntime and the module disagree on `check_inputs` (default: the example
    batch and a random batch of another size), leaving `path` untouched."""
    import torch

    module = module.eval()
    example = torch.as_tensor(example_input, dtype=torch.float32)
    if check_inputs is None:
        check_inputs = [example.numpy(), *verify.random_batches(tuple(example.shape))[1:]]

    # The two exporters name the dynamic batch axis differently.
    batch_axis = (
        {"dynamic_shapes": ({0: torch.export.Dim.DYNAMIC},), "external_data": False}
        if dynamo
        else {"dynamic_axes": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}}
    )

    def export(temp: Path) -> None:
        torch.onnx.export(
            module,
            (example,),
            str(temp),
            dynamo=dynamo,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            **batch_axis,
        )

    def reference(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(batch)).numpy()

    verify.export_verified(
        path, export, reference, [np.asarray(b, np.float32) for b in check_inputs], tolerance
    )


def load_factory(spec: str) -> Callable[[], torch.nn.Module]:
    """`file.py:function` -> the function, imported from that file."""
    file_name, _, function_name = spec.rpartition(":")
    if not file_name or not function_name:
        raise ValueError(f"module spec {spec!r} must look like FILE.py:FUNCTION")
    file_path = Path(file_name)
    if not file_path.is_file():
        raise ValueError(f"module file not found: {file_path}")
    import_spec = importlib.util.spec_from_file_location(file_path.stem, file_path)
    source = importlib.util.module_from_spec(import_spec)
    import_spec.loader.exec_module(source)
    factory = getattr(source, function_name, None)
    if not callable(factory):
        raise ValueError(f"{file_path} has no function {function_name!r}")
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", help="FILE.py:FUNCTION returning the torch.nn.Module")
    parser.add_argument("--weights", type=Path, help="state_dict saved with torch.save")
    parser.add_argument("--input-shape", required=True, help="example batch shape, e.g. 1,1,28,28")
    parser.add_argument("-o", "--output", required=True, type=Path, help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument(
        "--dynamo",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="use torch.export (default: the TorchScript exporter)",
    )
    args = parser.parse_args(argv)
    import torch

    def convert() -> None:
        shape = verify.parse_shape(args.input_shape)
        module = load_factory(args.module)()
        if args.weights is not None:
            if not args.weights.is_file():
                raise ValueError(f"weights file not found: {args.weights}")
            module.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
        example = torch.from_numpy(verify.random_batches(shape)[0])
        export_torch(module, example, args.output, opset=args.opset, dynamo=args.dynamo)

    return verify.run_command(convert, args.output)


if __name__ == "__main__":
    sys.exit(main())
