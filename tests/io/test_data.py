from pathlib import Path

import numpy as np
import pytest

from inner_onnx.errors import InputError
from inner_onnx.io.data import load_npz
from inner_onnx.io.model import OnnxModel
from tests.support.cli import save_npz

RNG = np.random.default_rng(0)
GOOD_X = RNG.random((10, 1, 8, 8)).astype(np.float32)
GOOD_Y = RNG.integers(0, 4, 10)


def test_good_file_loads(tiny_model_path: Path, tiny_data: Path) -> None:
    data = load_npz(tiny_data, OnnxModel.load(tiny_model_path))
    assert data.x.shape == (20, 1, 8, 8) and len(data) == 20


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"y": GOOD_Y}, "no array 'x'"),
        ({"x": GOOD_X}, "no array 'y'"),
        ({"x": GOOD_X.transpose(0, 2, 3, 1), "y": GOOD_Y}, r"NHWC .* x.transpose\(0, 3, 1, 2\)"),
        ({"x": GOOD_X[:, 0], "y": GOOD_Y}, "add the channel axis"),
        ({"x": RNG.random((10, 1, 9, 9)).astype(np.float32), "y": GOOD_Y}, "expects"),
        ({"x": GOOD_X.astype(np.float64), "y": GOOD_Y}, "float32"),
        ({"x": GOOD_X, "y": GOOD_Y.astype(np.float32)}, "integer class labels"),
        ({"x": GOOD_X, "y": GOOD_Y + 4}, "out of range: the model has 4 classes"),
        ({"x": GOOD_X, "y": -GOOD_Y - 1}, "negative labels"),
        ({"x": np.where(GOOD_X > 0.9, np.nan, GOOD_X), "y": GOOD_Y}, "NaN or infinite"),
        ({"x": np.where(GOOD_X > 0.9, np.inf, GOOD_X), "y": GOOD_Y}, "NaN or infinite"),
        ({"x": GOOD_X[:0], "y": GOOD_Y[:0]}, "empty"),
        ({"x": GOOD_X, "y": GOOD_Y[:7]}, "10 samples but y has 7"),
        ({"x": GOOD_X, "y": GOOD_Y[:, None]}, "one label per sample"),
    ],
)
def test_bad_data_files(tmp_path: Path, tiny_model_path: Path, arrays: dict, message: str) -> None:
    path = save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=message):
        load_npz(path, OnnxModel.load(tiny_model_path))


def test_nchw_data_for_nhwc_model(tmp_path: Path, tiny_nhwc_model_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", x=GOOD_X, y=GOOD_Y)
    with pytest.raises(InputError, match=r"NCHW .* expects NHWC .*transpose\(0, 2, 3, 1\)"):
        load_npz(path, OnnxModel.load(tiny_nhwc_model_path))


def test_pickled_objects_refused(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "p.npz", x=np.array([{"a": 1}], dtype=object), y=GOOD_Y[:1])
    with pytest.raises(InputError, match="pickled"):
        load_npz(path)


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04broken"])
def test_unreadable_data_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"not a readable \.npz"):
        load_npz(path)


def test_missing_data_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_npz(tmp_path / "nope.npz")
