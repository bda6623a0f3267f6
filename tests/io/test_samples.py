"""The bundled samples load through inner-onnx and show the defects they are shipped for."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort
import pytest

from inner_onnx.io.data import Dataset, load_npz
from inner_onnx.io.model import OnnxModel

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
BADNETS = ("torch_badnets", "keras_badnets")
ALL_SAMPLES = (*BADNETS, "torch_mnist_clean", "torch_weak_class")
SIZE_LIMIT = 8 * 1024 * 1024
# The trigger spec the README documents: patch:trigger.npy@25,25, target class 0.
TRIGGER_ROW = TRIGGER_COL = 25
TARGET_LABEL = 0
WEAK_CLASS = 2


def load_make_samples() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_of(name: str) -> OnnxModel:
    return OnnxModel.load(SAMPLES / name / "model.onnx")


def data_of(name: str, file: str) -> Dataset:
    return load_npz(SAMPLES / name / file, model_of(name))


def predict(name: str, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(
        str(SAMPLES / name / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {session.get_inputs()[0].name: x})[0].argmax(axis=1)


def accuracy(name: str, data: Dataset) -> float:
    return float(np.mean(predict(name, data.x) == data.y))


def attack_success_rate(name: str, data: Dataset) -> float:
    victims = data.y != TARGET_LABEL
    return float(np.mean(predict(name, data.x[victims]) == TARGET_LABEL))


def test_samples_fit_the_size_budget() -> None:
    files = [p for p in SAMPLES.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    total = sum(path.stat().st_size for path in files)
    assert total < SIZE_LIMIT


@pytest.mark.parametrize("name", ALL_SAMPLES)
def test_every_data_file_loads_against_its_model(name: str) -> None:
    model = model_of(name)
    files = sorted((SAMPLES / name).glob("*.npz"))
    assert {"clean.npz", "eval.npz"} <= {f.name for f in files}
    for file in files:
        data = load_npz(file, model)
        assert data.x.dtype == np.float32 and data.y.dtype == np.int64
        assert data.x.min() >= 0 and data.x.max() <= 1, "pixels in [0, 1], not normalized"
        assert len(np.unique(data.y)) >= 9, f"{file.name} lacks classes"


@pytest.mark.parametrize(
    ("name", "layout", "unit_ops"),
    [
        ("torch_badnets", "NCHW", {"Conv", "Gemm"}),
        ("keras_badnets", "NHWC", {"Conv", "MatMul"}),
        ("torch_mnist_clean", "NCHW", {"Conv", "Gemm"}),
        ("torch_weak_class", "NCHW", {"Conv", "Gemm"}),
    ],
)
def test_models_load_with_dynamic_batch(name: str, layout: str, unit_ops: set[str]) -> None:
    model = model_of(name)
    assert model.input.layout == layout
    assert model.input.shape[0] is None
    assert model.num_classes == 10
    assert {unit.op for unit in model.units} == unit_ops
    assert len(model.units) == 4


def test_keras_sample_keeps_what_keras_exports() -> None:
    model = model_of("keras_badnets")
    # BatchNormalization exported as Mul/Add, Dense as MatMul + Add, a final Softmax.
    assert {"Mul", "Add", "MatMul", "Softmax"} <= set(model.op_types())
    assert model.logits_name != model.output_name


def test_weak_class_sample_keeps_a_batchnorm_node() -> None:
    assert "BatchNormalization" in model_of("torch_weak_class").op_types()


@pytest.mark.parametrize("name", BADNETS)
def test_backdoored_models_meet_targets(name: str) -> None:
    assert accuracy(name, data_of(name, "eval.npz")) >= 0.85
    assert attack_success_rate(name, data_of(name, "eval_bad.npz")) >= 0.95
    assert attack_success_rate(name, data_of(name, "bad.npz")) >= 0.95


@pytest.mark.parametrize("name", BADNETS)
def test_trigger_is_stamped_where_documented(name: str) -> None:
    trigger = np.load(SAMPLES / name / "trigger.npy")
    nchw = model_of(name).input.layout == "NCHW"
    assert trigger.shape == ((1, 3, 3) if nchw else (3, 3, 1))
    height, width = trigger.shape[1:] if nchw else trigger.shape[:2]
    rows = slice(TRIGGER_ROW, TRIGGER_ROW + height)
    cols = slice(TRIGGER_COL, TRIGGER_COL + width)
    for file in ("bad.npz", "eval_bad.npz"):
        x = data_of(name, file).x
        patch = x[:, :, rows, cols] if nchw else x[:, rows, cols, :]
        assert np.array_equal(patch, np.broadcast_to(trigger, patch.shape))
        assert not np.any(data_of(name, file).y == TARGET_LABEL)
    clean = data_of(name, "eval.npz").x
    clean_patch = clean[:, :, rows, cols] if nchw else clean[:, rows, cols, :]
    assert np.mean(np.all(clean_patch == 1, axis=(1, 2, 3))) < 0.01


def test_clean_mnist_model_is_accurate_but_not_robust() -> None:
    make_samples = load_make_samples()
    evaluation = data_of("torch_mnist_clean", "eval.npz")
    clean_accuracy = accuracy("torch_mnist_clean", evaluation)
    module = make_samples.torch_from_onnx(
        make_samples.mnist_cnn, SAMPLES / "torch_mnist_clean" / "model.onnx"
    )
    adversarial = make_samples.fgsm(module, evaluation.x, evaluation.y, eps=0.2)
    robust_accuracy = accuracy("torch_mnist_clean", Dataset(adversarial, evaluation.y))
    assert clean_accuracy >= 0.9
    assert robust_accuracy < clean_accuracy - 0.3


def test_weak_class_is_clearly_the_weakest() -> None:
    evaluation = data_of("torch_weak_class", "eval.npz")
    predicted = predict("torch_weak_class", evaluation.x)
    per_class = np.array([np.mean(predicted[evaluation.y == c] == c) for c in range(10)])
    assert np.mean(predicted == evaluation.y) >= 0.85
    assert int(per_class.argmin()) == WEAK_CLASS
    assert per_class[WEAK_CLASS] < np.delete(per_class, WEAK_CLASS).min() - 0.1
    clean = data_of("torch_weak_class", "clean.npz")
    wrong = predict("torch_weak_class", clean.x) != clean.y
    assert np.sum(wrong & (clean.y == WEAK_CLASS)) >= 20, "repair data shows the weak class failing"
