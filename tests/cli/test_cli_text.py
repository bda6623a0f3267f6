"""Text models end to end: a backdoored tiny BERT (input_ids + attention_mask, token trigger)
repaired from --bad samples through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from inner_onnx.io.data import load_npz
from inner_onnx.io.model import OnnxModel
from inner_onnx.runtime import parity_max_abs_diff
from tests.support.cli import run_cli
from tests.support.text_models import (
    TARGET,
    TRIGGER,
    TRIGGER_SPEC,
    save_text_data,
    text_model_bytes,
)

pytest.importorskip("transformers")


@pytest.fixture
def backdoored_text(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    path = tmp_path / "bert.onnx"
    path.write_bytes(text_model_bytes(with_mask=True, dynamo=False))
    return path, save_text_data(tmp_path)


def test_backdoored_bert_is_repaired_from_bad_samples(
    backdoored_text: tuple[Path, dict[str, Path]], tmp_path: Path, capsys
) -> None:
    path, data = backdoored_text
    out = tmp_path / "repaired.onnx"
    # Fine-tuning every unit weight: INNER's default fault set (3 units, 10 % of their
    # weights) leaves this backdoor in place (README, "Text models").
    args = [
        "repair", path, "-d", data["clean"], "--bad", data["bad"], "--target-label", TARGET,
        "--scenario", "backdoor", "--method", "ft", "--epochs", "30",
        "--eval", data["eval"], "--eval-bad", data["eval_bad"], "-o", out, "--json", "--quiet",
    ]  # fmt: skip
    status, stdout, err = run_cli(args, capsys)
    assert status == 0, err
    result = json.loads(stdout)
    assert result["before"]["asr"] == 1.0
    assert result["after"]["asr"] <= 0.02
    assert result["after"]["accuracy"] >= result["before"]["accuracy"] - 0.01
    _assert_only_values_changed(path, out, data["eval"])


def _assert_only_values_changed(path: Path, out: Path, eval_data: Path) -> None:
    """Same nodes, inputs, outputs and initializer names; the torch view matches onnxruntime."""
    before, after = onnx.load(path), onnx.load(out)
    assert [n.SerializeToString() for n in before.graph.node] == [
        n.SerializeToString() for n in after.graph.node
    ]
    assert [i.name for i in before.graph.initializer] == [i.name for i in after.graph.initializer]
    assert before.graph.input == after.graph.input and before.graph.output == after.graph.output
    model = OnnxModel.load(out)
    sample = load_npz(eval_data, model).x[:32]
    assert parity_max_abs_diff(model.proto, sample) <= 1e-4


def test_token_trigger_stamps_the_bad_samples(
    backdoored_text: tuple[Path, dict[str, Path]], capsys
) -> None:
    path, data = backdoored_text
    args = ["evaluate", path, "-d", data["eval"], "--bad", data["eval_bad"], "--target-label"]
    status, stdout, err = run_cli([*args, TARGET, "--json"], capsys)
    assert status == 0, err
    assert json.loads(stdout)["asr"] == 1.0
    args = [
        "localize", path, "-d", data["clean"], "--trigger", TRIGGER_SPEC, "--target-label",
        TARGET, "-o", data["clean"].parent / "faults.json", "--json", "--quiet",
    ]  # fmt: skip
    status, stdout, err = run_cli(args, capsys)
    assert status == 0, err
    faults = json.loads((data["clean"].parent / "faults.json").read_text())
    assert any(u["name"].endswith("word_embeddings/Gather") for u in faults["units"])
    assert faults["neurons"]


def test_adversarial_repair_of_a_bert_raises_robust_accuracy(
    backdoored_text: tuple[Path, dict[str, Path]], tmp_path: Path, capsys
) -> None:
    """FGSM on the token embeddings (eps: 4 standard deviations of each embedding dimension),
    robust accuracy measured in onnxruntime on the graph with the embedding offset added."""
    path, data = backdoored_text
    out = tmp_path / "robust.onnx"
    args = [
        "repair", path, "-d", data["clean"], "--scenario", "adversarial", "--attack",
        "fgsm:eps=4", "--epochs", "5", "--eval", data["eval"], "-o", out, "--json", "--quiet",
    ]  # fmt: skip
    status, stdout, err = run_cli(args, capsys)
    # 3: a verified model was written, short of the 30-point gain five epochs cannot make
    assert status in (0, 3), err
    result = json.loads(stdout)
    before, after = result["before"], result["after"]
    assert before["robust_accuracy"] < before["accuracy"] - 0.1
    assert after["robust_accuracy"] >= before["robust_accuracy"] + 0.05
    assert after["accuracy"] >= before["accuracy"] - 0.01
    _assert_only_values_changed(path, out, data["eval"])


def test_evaluate_attacks_a_bert_in_embedding_space(
    backdoored_text: tuple[Path, dict[str, Path]], capsys
) -> None:
    path, data = backdoored_text
    args = ["evaluate", path, "-d", data["eval"], "--attack", "pgd:eps=2,steps=5,alpha=0.8"]
    status, stdout, err = run_cli([*args, "--json", "--quiet"], capsys)
    assert status == 0, err
    result = json.loads(stdout)
    assert result["robust_accuracy"] < result["accuracy"] - 0.2
    assert result["attack_space"] == "token embeddings"


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--scenario", "adversarial", "--attack", "fgsm:eps=1", "--clip", "0,1"],
            "does not apply to a text model",
        ),
        (["--scenario", "backdoor", "--trigger", "token:5@99", "--target-label", "0"], "past"),
        (["--scenario", "backdoor"], "trigger scan needs a float input"),
    ],
)
def test_text_model_refusals_are_one_line(
    backdoored_text: tuple[Path, dict[str, Path]], tmp_path: Path, capsys, args, message
) -> None:
    path, data = backdoored_text
    base = ["repair", path, "-d", data["clean"], "-o", tmp_path / "r.onnx", "--quiet"]
    status, _, err = run_cli([*base, *args], capsys)
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1


def test_eval_data_has_the_trigger(backdoored_text: tuple[Path, dict[str, Path]]) -> None:
    """The saved bad samples are the eval texts with the trigger tokens, unmasked."""
    _, data = backdoored_text
    bad = np.load(data["eval_bad"])
    assert (bad["input_ids"][:, 1] == 5).all() and (bad["attention_mask"][:, 1:3] == 1).all()


def test_embedding_routes_run_through_the_rows_the_bad_samples_read(
    backdoored_text: tuple[Path, dict[str, Path]], capsys
) -> None:
    """Weight gates on rows no bad sample reads get no gradient and only decay with the L1
    pull; they must not vote (they used to fill the embedding's fault set)."""
    path, data = backdoored_text
    out = data["clean"].parent / "faults.json"
    args = [
        "localize", path, "-d", data["clean"], "--bad", data["bad"], "--target-label", TARGET,
        "--layers", "5", "-o", out, "--json", "--quiet",
    ]  # fmt: skip
    status, _, err = run_cli(args, capsys)
    assert status == 0, err
    faults = json.loads(out.read_text())
    name = next(u for u in faults["weight_indices"] if u.endswith("word_embeddings/Gather"))
    width = 32  # the tiny BERT's hidden size
    rows = {index // width for index in faults["weight_indices"][name]}
    bad = np.load(data["bad"])
    read = set(bad["input_ids"][bad["attention_mask"] == 1].tolist())
    assert rows <= read
    assert {token for token, _ in TRIGGER} <= rows
