"""The model zoo: its manifest covers what issue 12 asks for in both halves, and a quick
build writes a model whose backdoor is real and whose files the tool reads."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.zoo.load import cache_key, is_built, zoo_models
from benchmarks.zoo.manifest import HALVES, SCENARIOS, ZOO, entries, entry_named
from inner_onnx.io.data import load_npz
from inner_onnx.io.model import OnnxModel
from inner_onnx.io.specs import parse_trigger
from inner_onnx.runtime import parity_max_abs_diff, predict
from inner_onnx.scenarios.triggers import stamp

ROOT = Path(__file__).resolve().parents[2]
FASHION_TRAIN = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
QUICK_MODEL = "mlp_fmnist_patch3_br"


def test_manifest_has_at_least_12_uniquely_named_entries() -> None:
    names = [entry.name for entry in ZOO]
    assert len(names) >= 12
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("half", HALVES)
def test_each_half_has_every_scenario_and_varied_backdoors(half: str) -> None:
    members = entries(half)
    assert {entry.scenario for entry in members} == set(SCENARIOS)
    backdoors = [entry for entry in members if entry.scenario == "backdoor"]
    assert len({entry.architecture for entry in backdoors}) >= 3
    assert len({entry.trigger.kind for entry in backdoors}) >= 2
    assert len({entry.target_class for entry in backdoors}) >= 3


def test_zoo_covers_architectures_exporters_datasets_and_triggers() -> None:
    assert {entry.architecture for entry in ZOO} == {
        "mlp",
        "cnn",
        "vgg_bn",
        "resnet",
        "mobilenet",
        "vit",
    }
    assert {entry.exporter for entry in ZOO} == {"torchscript", "dynamo", "keras"}
    assert {entry.dataset for entry in ZOO} == {"fmnist", "mnist", "fmnist3"}
    triggers = [entry.trigger for entry in ZOO if entry.trigger is not None]
    assert {trigger.kind for trigger in triggers} == {"patch", "blend", "warp"}
    patches = [trigger for trigger in triggers if trigger.kind == "patch"]
    assert len({trigger.size for trigger in patches}) >= 3
    assert len({(trigger.row, trigger.col) for trigger in patches}) == len(patches)
    assert "checkerboard" in {trigger.pattern for trigger in patches}


def test_every_entry_names_what_its_scenario_needs() -> None:
    for entry in ZOO:
        if entry.scenario == "backdoor":
            assert entry.trigger is not None and entry.target_class is not None, entry.name
        elif entry.scenario == "wrong":
            assert entry.weak_class is not None and entry.weak_class_keep < 0.1, entry.name
        else:
            assert entry.fgsm_eps is not None and entry.trigger is None, entry.name


def test_cache_key_changes_with_the_entry_and_the_build_mode() -> None:
    entry = entry_named(QUICK_MODEL)
    assert cache_key(entry, quick=False) == cache_key(entry, quick=False)
    assert cache_key(entry, quick=True) != cache_key(entry, quick=False)
    assert cache_key(dataclasses.replace(entry, epochs=9), quick=False) != cache_key(entry, False)


def test_zoo_models_refuses_a_zoo_that_is_not_built(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=QUICK_MODEL):
        zoo_models("tuning", root=tmp_path)


def run_quick_build(out: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.perf_counter()
    command = ["-m", "benchmarks.zoo.build", "--only", QUICK_MODEL, "--quick", "--out", str(out)]
    result = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, time.perf_counter() - started


@pytest.mark.skipif(not FASHION_TRAIN.is_file(), reason="Debian package dataset-fashion-mnist")
def test_quick_build_writes_a_really_backdoored_model_the_tool_can_read(tmp_path: Path) -> None:
    result, seconds = run_quick_build(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert seconds < 60
    entry = entry_named(QUICK_MODEL)
    assert is_built(entry, tmp_path, quick=True)
    folder = tmp_path / QUICK_MODEL
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["entry"] == dataclasses.asdict(entry)

    model = OnnxModel.load(folder / "model.onnx")
    clean, evaluation = load_npz(folder / "clean.npz", model), load_npz(folder / "eval.npz", model)
    bad, eval_bad = load_npz(folder / "bad.npz", model), load_npz(folder / "eval_bad.npz", model)
    assert not np.any(bad.y == entry.target_class) and not np.any(eval_bad.y == entry.target_class)
    clean_accuracy = float(np.mean(predict(model, evaluation.x) == evaluation.y))
    asr = float(np.mean(predict(model, eval_bad.x) == entry.target_class))
    assert asr >= 0.9
    assert clean_accuracy > 0.6
    assert asr == pytest.approx(meta["asr"]) and clean_accuracy == pytest.approx(
        meta["clean_accuracy"]
    )
    assert parity_max_abs_diff(model.proto, clean.x[:16]) <= 1e-4

    # trigger.npy with the recorded spec stamps on eval.npz exactly what eval_bad.npz holds.
    spec = parse_trigger(meta["trigger_spec"].replace("trigger.npy", str(folder / "trigger.npy")))
    sources = evaluation.x[evaluation.y != entry.target_class][: len(eval_bad)]
    np.testing.assert_array_equal(stamp(sources, spec, model.input.layout), eval_bad.x)

    rebuilt, _ = run_quick_build(tmp_path)
    assert rebuilt.returncode == 0 and "reused" in rebuilt.stdout
