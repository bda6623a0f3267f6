"""The converters write a model only when onnxruntime agrees with the framework."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

CONVERTERS = Path(__file__).resolve().parents[2] / "converters"


def load_converter(name: str) -> ModuleType:
    # By file, as a user runs them: the converters are scripts, not part of the package.
    spec = importlib.util.spec_from_file_location(name, CONVERTERS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


torch_to_onnx = load_converter("torch_to_onnx")


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 3),
    ).eval()


class BranchOnMean(nn.Module):
    """Data-dependent control flow: tracing freezes the branch of the example input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return flat * 2 if flat.mean() > 0.5 else -flat


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_export_matches_module_on_any_batch_size(tmp_path: Path, dynamo: bool) -> None:
    if dynamo:
        pytest.importorskip("onnxscript")  # the dynamo exporter's dependency, not the project's
    module = small_cnn()
    target = tmp_path / "model.onnx"
    torch_to_onnx.export_torch(module, torch.rand(2, 1, 12, 12), target, dynamo=dynamo)
    x = np.random.default_rng(1).random((7, 1, 12, 12), dtype=np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_onnx(target, x), expected, atol=1e-5)
    batch_axis = onnx.load(target).graph.input[0].type.tensor_type.shape.dim[0]
    assert not batch_axis.HasField("dim_value")
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_mismatch_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    with pytest.raises(torch_to_onnx.ExportMismatchError, match="not written"):
        torch_to_onnx.export_torch(
            BranchOnMean(),
            torch.ones(1, 1, 4, 4),
            target,
            check_inputs=[np.full((3, 1, 4, 4), 0.25, np.float32)],
        )
    assert list(tmp_path.iterdir()) == []


def test_mismatch_leaves_an_existing_file_untouched(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(torch_to_onnx.ExportMismatchError):
        torch_to_onnx.export_torch(
            BranchOnMean(),
            torch.ones(1, 1, 4, 4),
            target,
            check_inputs=[np.zeros((2, 1, 4, 4), np.float32) + 0.1],
        )
    assert target.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [target]


def test_cli_exports_from_module_file_and_weights(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text(
        "from torch import nn\n\n"
        "def make():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))\n"
    )
    torch.manual_seed(0)
    trained = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    torch.save(trained.state_dict(), tmp_path / "net.pt")
    target = tmp_path / "out" / "net.onnx"
    arguments = [f"{tmp_path / 'net.py'}:make", "--weights", str(tmp_path / "net.pt")]
    status = torch_to_onnx.main([*arguments, "--input-shape", "1,1,4,4", "-o", str(target)])
    assert status == 0
    x = np.random.default_rng(2).random((5, 1, 4, 4), dtype=np.float32)
    with torch.no_grad():
        expected = trained.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_onnx(target, x), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("spec", "shape", "message"),
    [
        ("net.py", "1,4", "FILE.py:FUNCTION"),
        ("missing.py:make", "1,4", "module file not found"),
        ("net.py:make", "1,x", "not comma-separated integers"),
        ("net.py:nothing", "1,4", "no function 'nothing'"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str, shape: str, message: str
) -> None:
    (tmp_path / "net.py").write_text(
        "from torch import nn\n\ndef make():\n    return nn.Linear(4, 2)\n"
    )
    status = torch_to_onnx.main(
        [str(tmp_path / spec), "--input-shape", shape, "-o", str(tmp_path / "x.onnx")]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x.onnx").exists()


def test_keras_export_matches_predict(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    keras_to_onnx = load_converter("keras_to_onnx")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    target = tmp_path / "model.onnx"
    keras_to_onnx.export_keras(model, target)
    x = np.random.default_rng(3).random((6, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(run_onnx(target, x), model.predict(x, verbose=0), atol=1e-5)
