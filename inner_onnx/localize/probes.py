"""Linear probes: what class each unit's pooled activation already tells apart (INNER step 1).

A probe is multinomial logistic regression on standardized features, fitted in
torch by full-batch L-BFGS from zero weights. The objective is convex and the
start fixed, so the fit has no randomness to seed: the same data (on the same
thread count) gives the same probe. `torch_logits` applies the very same tensors to torch
activations, so routing and repair backpropagate through the probe that was
measured here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from inner_onnx.errors import InputError

# Channels whose spread is below this (dead Relu channels, constants) are only centred.
MIN_STD = 1e-8
# Below this many feature values a fit is a few hundred tiny matmuls, which extra
# intra-op threads only slow down (10x and more on a busy machine).
SMALL_PROBLEM = 1 << 22


@contextmanager
def _one_thread_if(small: bool) -> Iterator[None]:
    threads = torch.get_num_threads()
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class LinearProbe:
    """Softmax regression on standardized features; scikit-learn-like, numpy in and out."""

    def __init__(self, num_classes: int, l2: float = 1e-3, max_iter: int = 200):
        if num_classes < 2:
            raise ValueError(f"a probe needs at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        self.l2 = l2
        self.max_iter = max_iter
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.weight: torch.Tensor | None = None  # [classes, channels]
        self.bias: torch.Tensor | None = None  # [classes]

    def fit(self, features: np.ndarray, labels: np.ndarray) -> LinearProbe:
        """Minimise mean cross-entropy + l2·‖W‖² (bias unpenalized) over all samples at once."""
        x = torch.as_tensor(_check_features(features), dtype=torch.float32)
        y = torch.as_tensor(self._check_labels(labels, len(x)), dtype=torch.long)
        self.mean = x.mean(dim=0)
        std = x.std(dim=0, correction=0)
        self.std = torch.where(std > MIN_STD, std, torch.ones_like(std))
        z = (x - self.mean) / self.std
        weight = torch.zeros(self.num_classes, x.shape[1], requires_grad=True)
        bias = torch.zeros(self.num_classes, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [weight, bias],
            lr=1.0,
            max_iter=self.max_iter,
            history_size=20,
            tolerance_grad=1e-6,
            tolerance_change=1e-9,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(z @ weight.T + bias, y) + self.l2 * weight.square().sum()
            loss.backward()
            return loss

        with _one_thread_if(z.numel() < SMALL_PROBLEM):
            optimizer.step(closure)
        self.weight, self.bias = weight.detach(), bias.detach()
        return self

    def torch_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """[N, classes] logits of [N, C] pooled activations; differentiable in `pooled`."""
        if self.weight is None or self.bias is None or self.mean is None or self.std is None:
            raise RuntimeError("probe is not fitted: call fit() first")
        like = {"dtype": pooled.dtype, "device": pooled.device}
        z = (pooled - self.mean.to(**like)) / self.std.to(**like)
        return z @ self.weight.to(**like).T + self.bias.to(**like)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(_check_features(features), dtype=torch.float32)
        with torch.no_grad():
            return torch.softmax(self.torch_logits(x), dim=1).numpy()

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.predict_proba(features).argmax(axis=1)

    def score(self, features: np.ndarray, labels: np.ndarray) -> float:
        """Accuracy."""
        labels = self._check_labels(labels, len(features))
        return float((self.predict(features) == labels).mean())

    def _check_labels(self, labels: np.ndarray, count: int) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.shape != (count,):
            raise ValueError(f"labels have shape {labels.shape}, expected ({count},)")
        if count and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}")
        return labels


def _check_features(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"features must be a non-empty [N, C] array, got {features.shape}")
    return features


class ProbeSet:
    """One probe per unit, with its accuracy on a held-out split of the clean samples.

    Each probe is fitted on the training part only and kept as is: the accuracy
    reported is the accuracy of the very probe that routing and repair use.
    """

    def __init__(self, l2: float = 1e-3, max_iter: int = 200):
        self.l2 = l2
        self.max_iter = max_iter
        self.probes: dict[str, LinearProbe] = {}
        self.accuracy: dict[str, float] = {}

    def fit(
        self,
        features: dict[str, np.ndarray],
        labels: np.ndarray,
        num_classes: int,
        seed: int = 0,
        holdout: float = 0.2,
        progress: Callable[[int], None] | None = None,
    ) -> ProbeSet:
        """Fit a probe per unit of `features` (unit name -> [N, C]); `progress(1)` after each."""
        labels = np.asarray(labels)
        train, held_out = holdout_split(len(labels), holdout, seed)
        self.probes, self.accuracy = {}, {}
        for name, unit_features in features.items():
            if len(unit_features) != len(labels):
                raise ValueError(
                    f"unit {name!r} has {len(unit_features)} feature rows for {len(labels)} labels"
                )
            probe = LinearProbe(num_classes, self.l2, self.max_iter)
            probe.fit(unit_features[train], labels[train])
            self.probes[name] = probe
            self.accuracy[name] = probe.score(unit_features[held_out], labels[held_out])
            if progress is not None:
                progress(1)
        return self

    def predict_proba(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Probe softmax per unit, for the units of `features`."""
        return {name: self.probes[name].predict_proba(x) for name, x in features.items()}


def holdout_split(count: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random (train, held-out) index arrays, neither empty."""
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout}")
    if count < 2:
        raise InputError(f"probes need at least 2 clean samples to hold some out, got {count}")
    order = np.random.default_rng(seed).permutation(count)
    held = min(max(1, round(holdout * count)), count - 1)
    return np.sort(order[held:]), np.sort(order[:held])
