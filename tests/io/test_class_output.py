"""Which output holds the class scores: named, the only candidate, or named like scores."""

from __future__ import annotations

import pytest

from inner_onnx.errors import InputError
from inner_onnx.io.model import OnnxModel
from inner_onnx.io.outputs import output_candidates
from tests.support.variants import two_output_cnn


def test_candidates_listed_in_graph_order() -> None:
    assert output_candidates(two_output_cnn().graph) == [("flat", 6), ("logits", 4)]


@pytest.mark.parametrize("name", ["logits", "scores", "output_probabilities", "head/logits:0"])
def test_score_named_candidate_chosen_among_several(name: str) -> None:
    model = OnnxModel(two_output_cnn(name))
    assert (model.output_name, model.num_classes) == (name, 4)


def test_ambiguous_outputs_refused_with_candidates() -> None:
    with pytest.raises(InputError, match=r"flat \[N, 6\], out \[N, 4\].*--output NAME"):
        OnnxModel(two_output_cnn("out"))


def test_named_output_used() -> None:
    model = OnnxModel(two_output_cnn("out"), output="flat")
    assert (model.output_name, model.num_classes, model.logits_name) == ("flat", 6, "flat")


def test_unknown_output_name_refused() -> None:
    with pytest.raises(InputError, match=r"'nope': the model has no such output; candidates"):
        OnnxModel(two_output_cnn(), output="nope")


def test_named_output_that_is_not_scores_refused() -> None:
    model = two_output_cnn()
    model.graph.output[0].type.tensor_type.elem_type = 7  # INT64
    with pytest.raises(InputError, match=r"'flat' is not class scores.*candidates: logits"):
        OnnxModel(model, output="flat")


def test_load_takes_output(tmp_path) -> None:
    path = tmp_path / "two.onnx"
    path.write_bytes(two_output_cnn("out").SerializeToString())
    assert OnnxModel.load(path, output="out").num_classes == 4
