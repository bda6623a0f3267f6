"""scikit-learn classifiers on `load_digits` (bundled with scikit-learn, offline) exported
with skl2onnx, as users export them: a `Pipeline` of an optional scaler and the classifier,
ZipMap on (skl2onnx's default) or off.

The MLP has a weak class: the training rows keep only a few samples of `WEAK`, so it
misclassifies many of them; the repair data and the evaluation data are the other rows.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
from skl2onnx import to_onnx
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from tests.support.cli import save_npz

WEAK = 3
SCALERS = {"none": None, "standard": StandardScaler, "normalizer": Normalizer}
TRAIN, EVAL = slice(0, 600), slice(1200, None)  # the rows between are the repair data
WEAK_KEPT = 20  # training samples of the weak class


def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32), y


def _training_rows(y: np.ndarray) -> np.ndarray:
    rows = np.arange(len(y))[TRAIN]
    weak = rows[y[rows] == WEAK]
    return np.setdiff1d(rows, weak[WEAK_KEPT:])


def fit_pipeline(classifier: str, scaler: str) -> Pipeline:
    """An MLP (32 hidden units) or a logistic regression behind the named scaler."""
    x, y = digits()
    model = (
        MLPClassifier((32,), max_iter=200, random_state=0)
        if classifier == "mlp"
        else LogisticRegression(max_iter=200)
    )
    steps = [] if SCALERS[scaler] is None else [("scale", SCALERS[scaler]())]
    pipeline = Pipeline([*steps, ("classify", model)])
    rows = _training_rows(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return pipeline.fit(x[rows], y[rows])


def export(pipeline: Pipeline, path: Path, zipmap: bool) -> Path:
    """`to_onnx` as its documentation shows it; zipmap False through the classifier's options."""
    x, _ = digits()
    options = None if zipmap else {id(pipeline.steps[-1][1]): {"zipmap": False}}
    onnx.save(to_onnx(pipeline, x[:1], options=options), path)
    return path


def save_digits(folder: Path) -> dict[str, Path]:
    """`clean` (repair data) and `eval` files, the input named as skl2onnx names it (X)."""
    x, y = digits()
    repair = slice(TRAIN.stop, EVAL.start)
    return {
        "clean": save_npz(folder / "clean.npz", X=x[repair], y=y[repair]),
        "eval": save_npz(folder / "eval.npz", X=x[EVAL], y=y[EVAL]),
    }
