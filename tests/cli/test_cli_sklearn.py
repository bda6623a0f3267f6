"""scikit-learn exports (skl2onnx) through the CLI: pipelines of a scaler and an MLP are
inspected, evaluated and repaired with their ZipMap and label branch kept; a logistic
regression (weights in LinearClassifier attributes) is evaluated and refused for repair."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

pytest.importorskip("skl2onnx")

from tests.support.cli import run_cli
from tests.support.sklearn_models import (
    EVAL,
    SCALERS,
    WEAK,
    digits,
    export,
    fit_pipeline,
    save_digits,
)


def _run_json(args: list, capsys: pytest.CaptureFixture[str], status: int = 0) -> dict:
    code, out, err = run_cli([*args, "--json"], capsys)
    assert code == status, err
    return json.loads(out)


@pytest.mark.parametrize("zipmap", [True, False], ids=["zipmap", "no-zipmap"])
@pytest.mark.parametrize("scaler", sorted(SCALERS))
def test_mlp_pipeline_is_inspected_and_evaluated(
    scaler: str, zipmap: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = fit_pipeline("mlp", scaler)
    path = export(pipeline, tmp_path / "mlp.onnx", zipmap)
    data = save_digits(tmp_path)
    info = _run_json(["inspect", path, "-d", data["eval"]], capsys)
    assert info["problems"] == [] and info["num_classes"] == 10
    # The float probabilities: with a ZipMap, its input inside the graph.
    assert info["class_output"] == ("out_activations_result" if zipmap else "probabilities")
    assert [unit["op"] for unit in info["units"]] == ["MatMul", "MatMul"]
    assert [value["dtype"] for value in info["outputs"]] == [
        "int64",
        "sequence" if zipmap else "float",
    ]
    assert info["parity_max_abs_diff"] <= 1e-4
    evaluated = _run_json(["evaluate", path, "-d", data["eval"]], capsys)
    x, y = digits()
    assert evaluated["accuracy"] == pytest.approx(pipeline.score(x[EVAL], y[EVAL]), abs=1e-9)


def test_zipmap_output_names_the_probabilities_behind_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = export(fit_pipeline("mlp", "standard"), tmp_path / "mlp.onnx", zipmap=True)
    info = _run_json(["inspect", path, "--output", "output_probability"], capsys)
    assert info["class_output"] == "out_activations_result"
    assert info["output_candidates"] == [{"name": "out_activations_result", "classes": 10}]


def _without_values(tensor: onnx.TensorProto) -> onnx.TensorProto:
    bare = onnx.TensorProto()
    bare.CopyFrom(tensor)
    for field in ("raw_data", "float_data", "double_data", "int32_data", "int64_data"):
        bare.ClearField(field)
    return bare


def _labels_and_scores(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The label output and the probabilities (ZipMap's maps read back into an array)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, scores = session.run(None, {"X": x})
    if isinstance(scores, list):
        scores = np.array([[row[c] for c in range(10)] for row in scores])
    return labels, scores


@pytest.mark.parametrize("zipmap", [True, False], ids=["zipmap", "no-zipmap"])
def test_weak_class_of_mlp_pipeline_is_repaired_in_the_original_graph(
    zipmap: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = export(fit_pipeline("mlp", "standard"), tmp_path / "mlp.onnx", zipmap)
    data = save_digits(tmp_path)
    out = tmp_path / "repaired.onnx"
    args = ["repair", path, "-d", data["clean"], "--eval", data["eval"], "--scenario", "wrong"]
    report = _run_json([*args, "-o", out, "--quiet"], capsys)
    assert report["targets_met"] is True
    before, after = report["before"], report["after"]
    assert after["accuracy"] > before["accuracy"]
    assert after["per_class_accuracy"][WEAK] > before["per_class_accuracy"][WEAK]

    original, repaired = onnx.load(path), onnx.load(out)
    for field in ("node", "input", "output", "value_info"):
        assert getattr(original.graph, field) == getattr(repaired.graph, field), field
    assert original.opset_import == repaired.opset_import
    pairs = list(zip(original.graph.initializer, repaired.graph.initializer, strict=True))
    assert all(_without_values(a) == _without_values(b) for a, b in pairs)
    changed = {a.name for a, b in pairs if a != b}
    assert changed and changed <= {"coefficient", "intercepts", "coefficient1", "intercepts1"}

    x, y = digits()
    labels, scores = _labels_and_scores(out, x[EVAL])
    assert np.array_equal(labels, scores.argmax(axis=1))
    assert (labels == y[EVAL]).mean() == pytest.approx(after["accuracy"], abs=1e-9)
    assert not np.array_equal(labels, _labels_and_scores(path, x[EVAL])[0])


@pytest.mark.parametrize("zipmap", [True, False], ids=["zipmap", "no-zipmap"])
def test_logistic_regression_is_evaluated_and_refused_for_repair(
    zipmap: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = fit_pipeline("lr", "standard")
    path = export(pipeline, tmp_path / "lr.onnx", zipmap)
    data = save_digits(tmp_path)
    x, y = digits()
    evaluated = _run_json(["evaluate", path, "-d", data["eval"]], capsys)
    assert evaluated["accuracy"] == pytest.approx(pipeline.score(x[EVAL], y[EVAL]), abs=1e-9)
    info = _run_json(["inspect", path], capsys)
    assert "LinearClassifier" in info["problems"][0]
    args = ["repair", path, "-d", data["clean"], "--scenario", "wrong", "-o", tmp_path / "o.onnx"]
    status, _, err = run_cli(args, capsys)
    assert status == 2
    assert "keeps its weights in node attributes" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.onnx").exists()
