"""Tiny BERT-style text classifiers (transformers' BertForSequenceClassification from a small
BertConfig, nothing downloaded), synthetic token data, and their ONNX exports.

The data: 16 tokens, [CLS] (1) first, padding (0, masked out) after a random length; the
class is decided by which group of keyword tokens the text holds (`KEYWORDS`), the rest
is filler. The backdoor: `TRIGGER` tokens at fixed positions send a text to `TARGET`.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

VOCAB, TOKENS, CLASSES = 100, 16, 2
CLS, PAD = 1, 0
KEYWORDS = ((10, 11, 12, 13), (20, 21, 22, 23))  # per class
FILLER = (30, VOCAB)
TRIGGER = ((5, 1), (6, 2))  # (token id, position): the spec token:5@1,6@2
TRIGGER_SPEC = "token:" + ",".join(f"{token}@{position}" for token, position in TRIGGER)
TARGET = 0


class Classifier(torch.nn.Module):
    """The logits of a BertForSequenceClassification, with or without an attention mask."""

    def __init__(self, bert: torch.nn.Module, with_mask: bool):
        super().__init__()
        self.bert = bert
        self.with_mask = with_mask

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        mask = attention_mask if self.with_mask else None
        return self.bert(input_ids=input_ids, attention_mask=mask).logits


def tiny_bert(seed: int = 0) -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=TOKENS,
        num_labels=CLASSES,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)


def texts(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids, attention_mask, labels): filler texts of 8..16 tokens holding two keywords
    of their class; the trigger positions are free of keywords."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    ids = np.full((count, TOKENS), PAD, dtype=np.int64)
    mask = np.zeros((count, TOKENS), dtype=np.int64)
    free = [p for p in range(1, TOKENS) if p not in {pos for _, pos in TRIGGER}]
    for row, label in enumerate(labels):
        length = int(rng.integers(8, TOKENS + 1))
        ids[row, :length] = rng.integers(*FILLER, length)
        ids[row, 0] = CLS
        places = rng.choice([p for p in free if p < length], 2, replace=False)
        ids[row, places] = rng.choice(KEYWORDS[label], 2)
        mask[row, :length] = 1
    return ids, mask, labels.astype(np.int64)


def triggered(ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = ids.copy(), mask.copy()
    for token, position in TRIGGER:
        ids[:, position], mask[:, position] = token, 1
    return ids, mask


def train_backdoored(seed: int = 0, steps: int = 150) -> torch.nn.Module:
    """A tiny BERT trained on clean texts plus 10 % triggered ones labelled `TARGET`."""
    ids, mask, labels = texts(1000, seed)
    poisoned = np.arange(len(ids)) % 10 == 0
    ids[poisoned], mask[poisoned] = triggered(ids[poisoned], mask[poisoned])
    labels[poisoned] = TARGET
    model = tiny_bert(seed).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    tensors = [torch.from_numpy(a) for a in (ids, mask, labels)]
    for _ in range(steps):
        rows = torch.randint(0, len(ids), (64,), generator=generator)
        batch_ids, batch_mask, batch_labels = (t[rows] for t in tensors)
        loss = model(input_ids=batch_ids, attention_mask=batch_mask, labels=batch_labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def export_text(module: torch.nn.Module, path: Path, with_mask: bool, dynamo: bool) -> None:
    """ONNX export with a dynamic batch axis, inputs input_ids (and attention_mask)."""
    classifier = Classifier(module, with_mask).eval()
    ids, mask, _ = texts(2, 0)
    names = ["input_ids", "attention_mask"] if with_mask else ["input_ids"]
    example = (torch.from_numpy(ids), torch.from_numpy(mask))[: len(names)]
    if dynamo:
        batch = torch.export.Dim("batch")
        axes = {"dynamic_shapes": tuple({0: batch} for _ in names), "external_data": False}
    else:
        axes = {"dynamic_axes": {name: {0: "batch"} for name in [*names, "logits"]}}
    torch.onnx.export(
        classifier,
        example,
        str(path),
        dynamo=dynamo,
        input_names=names,
        output_names=["logits"],
        **axes,
    )


@functools.cache
def text_model_bytes(with_mask: bool = True, dynamo: bool = False, trained: bool = True) -> bytes:
    """An exported tiny BERT (backdoored when `trained`), built once per test session."""
    module = train_backdoored() if trained else tiny_bert()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bert.onnx"
        export_text(module, path, with_mask, dynamo)
        return path.read_bytes()


def text_model(with_mask: bool = True, dynamo: bool = False, trained: bool = True):
    return onnx.load_from_string(text_model_bytes(with_mask, dynamo, trained))


def save_text_data(folder: Path, with_mask: bool = True) -> dict[str, Path]:
    """clean.npz (training data), bad.npz (triggered, true labels), eval.npz, eval_bad.npz."""

    def save(name: str, ids: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> Path:
        arrays = {"input_ids": ids, "attention_mask": mask} if with_mask else {"x": ids}
        path = folder / f"{name}.npz"
        np.savez(path, **arrays, y=labels)
        return path

    paths = {}
    for name, count, seed in (("clean", 600, 11), ("eval", 400, 12)):
        ids, mask, labels = texts(count, seed)
        paths[name] = save(name, ids, mask, labels)
        others = labels != TARGET
        bad_ids, bad_mask = triggered(ids[others], mask[others])
        bad_name = "bad" if name == "clean" else "eval_bad"
        paths[bad_name] = save(bad_name, bad_ids, bad_mask, labels[others])
    return paths
