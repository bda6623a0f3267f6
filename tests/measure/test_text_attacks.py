"""Attacks on a text model's token embeddings (tiny BERT exports): they lower accuracy, stay
in their ball, leave padding untouched, and onnxruntime scores the perturbed samples as the
torch view does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inner_onnx.context import as_torch
from inner_onnx.errors import InputError
from inner_onnx.io.data import Inputs
from inner_onnx.io.model import OnnxModel
from inner_onnx.io.specs import FgsmSpec, PgdSpec
from inner_onnx.measure.attacks import EmbeddingSpace, attack_domain, generate
from inner_onnx.runtime import Runner
from inner_onnx.torchview.inputs import TensorInputs, cat_batches
from tests.support.text_models import text_model, texts

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert() -> OnnxModel:
    """The trained (backdoored) tiny BERT with an attention mask: clean accuracy 100 %."""
    return OnnxModel(text_model(with_mask=True, dynamo=False))


def _data(count: int = 120) -> tuple[Inputs, np.ndarray]:
    ids, mask, y = texts(count, 5)
    return Inputs({"input_ids": ids, "attention_mask": mask}), y


def _torch_scores(model: OnnxModel, x: Inputs) -> np.ndarray:
    with torch.no_grad():
        return model.torch_view(frozen=True)(as_torch(x)).numpy()


@pytest.mark.parametrize("spec", [FgsmSpec(4.0), PgdSpec(2.0, steps=5, alpha=0.8)])
def test_embedding_attacks_lower_accuracy_within_their_ball(bert: OnnxModel, spec) -> None:
    x, y = _data()
    runner = Runner(bert, "cpu")
    space = attack_domain(bert, x, None)
    assert isinstance(space, EmbeddingSpace) and space.tensor == bert.token_embedding.output
    adversarial = generate(spec, bert.torch_view(frozen=True), x, y, space, seed=1)
    offsets = adversarial.arrays[space.tensor]
    assert offsets.shape == (len(y), x.arrays["input_ids"].shape[1], len(space.scale))
    # token ids and mask unchanged; the offset within eps std of each dimension
    assert adversarial.arrays["input_ids"] is x.arrays["input_ids"]
    assert (np.abs(offsets) <= spec.eps * space.scale * (1 + 1e-5)).all()
    # padding positions (mask 0) are never perturbed; kept ones are
    padding = x.arrays["attention_mask"] == 0
    assert padding.any() and (offsets[padding] == 0).all()
    assert np.abs(offsets[~padding]).max() > 0
    clean = (runner.predict(x) == y).mean()
    robust = (runner.predict(adversarial) == y).mean()
    assert clean == 1.0 and robust <= clean - 0.2
    # onnxruntime, on the graph with the offset added, scores as the torch view
    assert np.abs(runner.scores(adversarial) - _torch_scores(bert, adversarial)).max() <= 1e-4


def test_pgd_on_embeddings_is_reproducible_by_seed(bert: OnnxModel) -> None:
    x, y = _data(20)
    space = attack_domain(bert, x, None)
    view = bert.torch_view(frozen=True)
    spec = PgdSpec(1.0, steps=2, alpha=0.5)
    one, two = (generate(spec, view, x, y, space, seed=3, batch_size=b) for b in (20, 7))
    np.testing.assert_allclose(one.arrays[space.tensor], two.arrays[space.tensor], atol=1e-6)


def test_a_model_without_mask_is_perturbed_at_every_position() -> None:
    model = OnnxModel(text_model(with_mask=False, dynamo=False, trained=False))
    ids, _, y = texts(6, 2)
    space = attack_domain(model, ids, None)
    assert isinstance(space, EmbeddingSpace) and space.mask is None
    adversarial = generate(FgsmSpec(1.0), model.torch_view(frozen=True), ids, y, space)
    assert set(adversarial.arrays) == {"input_ids", space.tensor}
    assert (np.abs(adversarial.arrays[space.tensor]).min(axis=2) > 0).all()
    runner = Runner(model, "cpu")
    diff = runner.scores(adversarial) - _torch_scores(model, adversarial)
    assert np.abs(diff).max() <= 1e-4


def test_clip_is_refused_for_a_text_model(bert: OnnxModel) -> None:
    x, _ = _data(4)
    with pytest.raises(InputError, match="does not apply to a text model"):
        attack_domain(bert, x, (0.0, 1.0))


def test_an_offset_must_name_a_computed_tensor(bert: OnnxModel) -> None:
    x, _ = _data(2)
    batch = as_torch(x)
    assert isinstance(batch, TensorInputs)
    with pytest.raises(InputError, match="offset 'nowhere'"):
        bert.torch_view(frozen=True)(TensorInputs({**batch.tensors, "nowhere": torch.zeros(2)}))


def test_clean_rows_concatenate_with_zero_offsets() -> None:
    ids = torch.zeros((2, 3), dtype=torch.int64)
    clean = TensorInputs({"input_ids": ids})
    offset = torch.ones((1, 3, 4))
    adversarial = TensorInputs({"input_ids": ids[:1], "emb": offset})
    joined = cat_batches([clean, adversarial])
    assert isinstance(joined, TensorInputs) and joined.tensors["emb"].shape == (3, 3, 4)
    assert (joined.tensors["emb"][:2] == 0).all() and (joined.tensors["emb"][2] == 1).all()
