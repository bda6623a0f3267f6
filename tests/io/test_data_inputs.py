"""Data for models with several or integer inputs: one array per input name, plus y."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from inner_onnx.errors import InputError
from inner_onnx.io.data import Inputs, load_npz
from inner_onnx.io.model import OnnxModel
from inner_onnx.runtime import Runner, parity_max_abs_diff
from tests.support.cli import save_npz
from tests.support.models import tiny_cnn
from tests.support.variants import token_classifier

RNG = np.random.default_rng(0)
IDS = RNG.integers(0, 10, (12, 6))
MASK = np.ones((12, 6), np.int64)
MASK[:, 4:] = 0
Y = RNG.integers(0, 3, 12)


def test_one_array_per_input(tmp_path: Path) -> None:
    model = OnnxModel(token_classifier())
    path = save_npz(tmp_path / "d.npz", input_ids=IDS.astype(np.int32), attention_mask=MASK, y=Y)
    data = load_npz(path, model)
    assert isinstance(data.x, Inputs) and len(data.x) == 12
    assert set(data.x.arrays) == {"input_ids", "attention_mask"}
    part = data.subset(np.arange(5))
    assert len(part.x) == 5 and part.x.arrays["input_ids"].shape == (5, 6)
    scores = Runner(model, "cpu").scores(data.x, batch_size=5)
    assert scores.shape == (12, 3)
    assert parity_max_abs_diff(model.proto, data.x) <= 1e-5


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"input_ids": IDS, "y": Y}, r"no array 'attention_mask'.*input_ids=\.\.\., attention"),
        (
            {"input_ids": IDS.astype(np.float32), "attention_mask": MASK, "y": Y},
            "input_ids is float32, but model input 'input_ids' takes int64",
        ),
        (
            {"input_ids": IDS, "attention_mask": MASK[:, :5], "y": Y},
            r"attention_mask has shape \[N, 5\] but the model input 'attention_mask' expects",
        ),
        ({"input_ids": IDS, "attention_mask": MASK[:7], "y": Y}, "attention_mask has 7 samples"),
    ],
)
def test_per_input_messages(tmp_path: Path, arrays: dict, message: str) -> None:
    path = save_npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(InputError, match=message):
        load_npz(path, OnnxModel(token_classifier()))


def test_single_input_may_use_its_name_or_x(tmp_path: Path) -> None:
    proto = tiny_cnn()
    proto.graph.input[0].name = proto.graph.node[0].input[0] = "image"
    model = OnnxModel(proto)
    x = RNG.random((4, 1, 8, 8)).astype(np.float32)
    as_x = save_npz(tmp_path / "x.npz", x=x, y=np.zeros(4, np.int64))
    named = save_npz(tmp_path / "named.npz", image=x, y=np.zeros(4, np.int64))
    assert np.array_equal(load_npz(as_x, model).x, load_npz(named, model).x)


def test_repair_takes_a_text_model_and_refuses_other_several_inputs() -> None:
    model = OnnxModel(token_classifier())
    assert [spec.name for spec in model.inputs] == ["input_ids", "attention_mask"]
    model.check_repairable()  # integer inputs, token ids read by an embedding: a text model
    assert model.token_input.name == "input_ids" and model.mask_input.name == "attention_mask"
    proto = token_classifier()
    proto.graph.input[1].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    with pytest.raises(InputError, match="2 inputs"):
        OnnxModel(proto).check_repairable()
