"""Tiny BERT exports (both PyTorch exporters, with and without attention_mask): the
embedding tables are units, the torch view matches onnxruntime, and the token
activations pool over the tokens the mask keeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inner_onnx.io.data import Inputs
from inner_onnx.io.model import OnnxModel
from inner_onnx.runtime import Runner, parity_max_abs_diff, pool_activation, pool_activation_torch
from tests.support.text_models import text_model, texts

pytest.importorskip("transformers")

EXPORTS = [(mask, dynamo) for mask in (True, False) for dynamo in (False, True)]


def _batch(with_mask: bool) -> np.ndarray | Inputs:
    ids, mask, _ = texts(8, 3)
    return Inputs({"input_ids": ids, "attention_mask": mask}) if with_mask else ids


@pytest.mark.parametrize("with_mask, dynamo", EXPORTS)
def test_bert_exports_are_text_models_with_embedding_units(with_mask: bool, dynamo: bool) -> None:
    model = OnnxModel(text_model(with_mask, dynamo, trained=False))
    model.check_repairable()
    assert model.token_input is not None and model.token_input.name == "input_ids"
    assert (model.mask_input is not None) == with_mask
    word = next(u for u in model.units if u.weight.endswith("word_embeddings.weight"))
    assert (word.op, word.neuron_axis, word.neurons, word.parameters) == ("Gather", 1, 32, 3200)
    assert parity_max_abs_diff(model.proto, _batch(with_mask)) <= 1e-4


@pytest.mark.parametrize("dynamo", [False, True])
def test_gradients_reach_the_embedding_table(dynamo: bool) -> None:
    model = OnnxModel(text_model(True, dynamo, trained=False))
    word = next(u for u in model.units if u.op == "Gather")
    view = model.torch_view()
    ids, mask, labels = texts(4, 5)
    from inner_onnx.context import as_torch

    logits = view(as_torch(Inputs({"input_ids": ids, "attention_mask": mask})))
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels)).backward()
    grad = view.parameter(word.weight).grad
    used = np.unique(ids[mask.astype(bool)])
    unused = np.setdiff1d(np.arange(grad.shape[0]), np.unique(ids))
    assert (grad[used].abs().sum(dim=1) > 0).all() and (grad[unused] == 0).all()


def test_pooling_respects_the_attention_mask() -> None:
    model = OnnxModel(text_model(True, False, trained=False))
    unit = next(u for u in model.units if u.op == "Gather")
    activation = np.arange(2 * 3 * 32, dtype=np.float32).reshape(2, 3, 32)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    expected = np.stack([activation[0, :2].mean(0), activation[1, 0]])
    np.testing.assert_allclose(pool_activation(activation, unit, mask), expected)
    pooled = pool_activation_torch(torch.from_numpy(activation), unit, torch.from_numpy(mask))
    np.testing.assert_allclose(pooled.numpy(), expected)
    # padding is ignored in onnxruntime's capture too: changing it leaves the pooled embedding
    ids, mask, _ = texts(6, 7)
    runner = Runner(model, "cpu")
    first = runner.pooled(Inputs({"input_ids": ids, "attention_mask": mask}), [unit])
    ids[mask == 0] = 99
    second = runner.pooled(Inputs({"input_ids": ids, "attention_mask": mask}), [unit])
    np.testing.assert_array_equal(first[unit.name], second[unit.name])
