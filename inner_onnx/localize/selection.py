"""Layer selection (INNER step 2): the units where the bad behaviour is decided.

Per unit, the probe's softmax is averaged over clean samples the model gets
right (p) and over bad samples (q); the unit's score is the cross-entropy

    H(p, q) = -Σ_k p_k · log(q_k + ε),   ε = 1e-7

i.e. how surprising the clean behaviour is under the bad samples' behaviour. A
unit whose probe still reads bad samples like clean ones scores about the
entropy of p; a unit where bad samples have already moved to other classes
scores up to -log ε.

With labels for both sets, p and q are taken per true class and the scores
averaged over the classes present in both, weighted by their bad samples. This
is what the reference code does (it compares one class at a time), and it
matters: averaged over balanced classes, p is near uniform and the score can no
longer see adversarial or misclassified samples, whose wrong predictions are
spread over the classes too. (The reference code computes -Σ q·log p, one
class at a time, where both directions grow as bad samples leave their class;
without labels, -Σ q·log p against a near-uniform p stays near log K
everywhere, while H(p, q) still flags units that send bad samples to one
target class.)

Like the reference code, pass as bad samples those the model gets wrong
(triggered inputs that reach the target, successful adversarial examples).
"""

from __future__ import annotations

import numpy as np

from inner_onnx.errors import InputError
from inner_onnx.localize.probes import ProbeSet

EPSILON = 1e-7


def cross_entropy(p: np.ndarray, q: np.ndarray) -> float:
    """H(p, q) = -Σ p·log(q + ε) between two class distributions."""
    return float(-(p * np.log(q + EPSILON)).sum())


def _unit_score(
    clean_proba: np.ndarray,
    bad_proba: np.ndarray,
    clean_labels: np.ndarray | None,
    bad_labels: np.ndarray | None,
) -> float:
    if clean_labels is None or bad_labels is None:
        return cross_entropy(clean_proba.mean(axis=0), bad_proba.mean(axis=0))
    classes = np.intersect1d(clean_labels, bad_labels)
    if not len(classes):
        raise InputError(
            "layer selection: no class has both correctly classified clean samples and bad samples"
        )
    scores = [
        cross_entropy(
            clean_proba[clean_labels == c].mean(axis=0), bad_proba[bad_labels == c].mean(axis=0)
        )
        for c in classes
    ]
    weights = [(bad_labels == c).sum() for c in classes]
    return float(np.average(scores, weights=weights))


def layer_scores(
    probes: ProbeSet,
    clean_features: dict[str, np.ndarray],
    clean_correct: np.ndarray,
    bad_features: dict[str, np.ndarray],
    clean_labels: np.ndarray | None = None,
    bad_labels: np.ndarray | None = None,
) -> dict[str, float]:
    """Score every unit of `bad_features` (see the module doc); higher = more implicated.

    The features are what each unit's probe reads: [N, C] pooled activations, or the
    [N, C, H, W] maps of a conv probe. `clean_correct` masks the clean samples the model
    classifies right. Pass `clean_labels` and `bad_labels` (true classes) for the per-class
    comparison.
    """
    clean_correct = np.asarray(clean_correct, dtype=bool)
    if not clean_correct.any():
        raise InputError("layer selection: the model gets no clean sample right")
    if (clean_labels is None) != (bad_labels is None):
        raise ValueError("pass both clean_labels and bad_labels, or neither")
    kept_labels = None if clean_labels is None else np.asarray(clean_labels)[clean_correct]
    scores = {}
    for name, bad in bad_features.items():
        if len(bad) == 0:
            raise InputError("layer selection: no bad samples")
        probe = probes.probes[name]
        clean_proba = probe.predict_proba(clean_features[name][clean_correct])
        bad_proba = probe.predict_proba(bad)
        scores[name] = _unit_score(clean_proba, bad_proba, kept_labels, bad_labels)
    return scores


def select_layers(scores: dict[str, float], top: int = 3) -> list[str]:
    """The `top` highest-scoring units, highest first; equal scores in name order."""
    if top < 1:
        raise InputError(f"number of layers to select must be at least 1, got {top}")
    return sorted(scores, key=lambda name: (-scores[name], name))[:top]
