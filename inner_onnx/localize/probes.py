"""Probes: what class each unit's activation already tells apart (INNER step 1).

The default probe is multinomial logistic regression on the unit's pooled activation
(standardized channel means), fitted in torch by full-batch L-BFGS from zero weights.
The objective is convex and the start fixed, so the fit has no randomness to seed: the
same data (on the same thread count) gives the same probe. `--probe conv` gives 2-D
convolution units the reference code's conv head on the unpooled map instead
(conv_probes.py). Every probe reads its features off a unit's torch activation
(`torch_features`) and `torch_logits` applies the very same tensors to them, so routing
and repair backpropagate through the probe that was measured here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inner_onnx.errors import InputError
from inner_onnx.io.units import Unit
from inner_onnx.runtime import pool_activation_torch

# Channels whose spread is below this (dead Relu channels, constants) are only centred.
MIN_STD = 1e-8
# Below this many feature values a fit is a few hundred tiny matmuls, which extra
# intra-op threads only slow down (10x and more on a busy machine).
SMALL_PROBLEM = 1 << 22

# The conv head's training, as the paper's reference code trains its probes
# (github.com/implicitDeclaration/inner, main.py, train_only_probe and probe_train):
# Adam at lr 0.01 (probe_train: `torch.optim.Adam(param, lr=0.01)`) ...
CONV_PROBE_LEARNING_RATE = 0.01
# ... on shuffled batches of 128 (train_only_probe: `DataLoader(..., batch_size=128, shuffle=True)`)
CONV_PROBE_BATCH = 128
# ... for 50 epochs (train_only_probe's default `epochs=50`).
CONV_PROBE_EPOCHS = 50
# Rows per pass without gradient (selection, teachers): bounds memory only.
CONV_PROBE_INFERENCE_BATCH = 256


@contextmanager
def _one_thread_if(small: bool) -> Iterator[None]:
    threads = torch.get_num_threads()
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Probe(ABC):
    """A unit's probe: fitted on numpy features, then applied to torch ones (differentiably)."""

    def __init__(self, num_classes: int):
        if num_classes < 2:
            raise ValueError(f"a probe needs at least 2 classes, got {num_classes}")
        self.num_classes = num_classes

    @abstractmethod
    def fit(self, features: np.ndarray, labels: np.ndarray) -> Probe:
        """Fit on [N, ...] features (what `torch_features` makes of N activations)."""

    @abstractmethod
    def torch_features(
        self, activation: torch.Tensor, unit: Unit, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What the probe reads of `unit`'s torch activation; differentiable. `mask`: a text
        model's attention mask per sample (token pooling respects it), or None."""

    @abstractmethod
    def torch_logits(self, features: torch.Tensor) -> torch.Tensor:
        """[N, classes] logits; differentiable in `features`."""

    @abstractmethod
    def logits(self, features: np.ndarray) -> torch.Tensor:
        """[N, classes] logits of numpy features, without gradient, on the CPU."""

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return torch.softmax(self.logits(features), dim=1).numpy()

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


class LinearProbe(Probe):
    """Softmax regression on standardized pooled features ([N, C] channel means)."""

    def __init__(self, num_classes: int, l2: float = 1e-3, max_iter: int = 200):
        super().__init__(num_classes)
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

    def torch_features(
        self, activation: torch.Tensor, unit: Unit, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return pool_activation_torch(activation, unit, mask)

    def torch_logits(self, features: torch.Tensor) -> torch.Tensor:
        """[N, classes] logits of [N, C] pooled activations; differentiable in them."""
        if self.weight is None or self.bias is None or self.mean is None or self.std is None:
            raise RuntimeError("probe is not fitted: call fit() first")
        like = {"dtype": features.dtype, "device": features.device}
        z = (features - self.mean.to(**like)) / self.std.to(**like)
        return z @ self.weight.to(**like).T + self.bias.to(**like)

    def logits(self, features: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(_check_features(features), dtype=torch.float32)
        with torch.no_grad():
            return self.torch_logits(x)


def _check_features(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"features must be a non-empty [N, C] array, got {features.shape}")
    return features


def conv_head(channels: int, num_classes: int) -> nn.Sequential:
    """The reference code's probe head for a conv block (model/cifar10_vgg.py, class Probe with
    `layer_num=1`, which it puts on the blocks of its MNIST CNN and on VGG's deeper blocks):
    a 1×1 conv, then two 3×3 convs at the same width, each followed by BatchNorm and ReLU,
    global average pooling and a linear layer. (Its `layer_num=2` variant, for VGG's first two
    blocks, downsamples twice and quadruples the width; it is not offered.)"""
    layers: list[nn.Module] = [
        nn.Conv2d(channels, channels, 1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
    ]
    for _ in range(2):
        layers += [
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        ]
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)
    )


class ConvProbe(Probe):
    """A small conv head on a 2-D conv unit's unpooled [N, C, H, W] activation map.

    Unlike the channel means a linear probe reads, the map keeps where a pattern sits (a
    patch trigger in one corner). Trained as the reference trains its probes (the constants
    above), from a seeded initialization and shuffle; the last epoch with the best training
    accuracy is kept, as the reference keeps its probe checkpoints (utils/utils.py,
    save_model_part with `acc_rec`). Once fitted the head is frozen in eval mode (BatchNorm
    with its running statistics), so its logits are a fixed function of the map that routing
    and repair differentiate through.
    """

    def __init__(self, num_classes: int, seed: int = 0, epochs: int = CONV_PROBE_EPOCHS):
        super().__init__(num_classes)
        self.seed = seed
        self.epochs = epochs
        self.head: nn.Sequential | None = None

    def fit(self, features: np.ndarray, labels: np.ndarray) -> ConvProbe:
        x = torch.as_tensor(_check_maps(features), dtype=torch.float32)
        y = torch.as_tensor(self._check_labels(labels, len(x)), dtype=torch.long)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            head = conv_head(x.shape[1], self.num_classes)
        optimizer = torch.optim.Adam(head.parameters(), lr=CONV_PROBE_LEARNING_RATE)
        shuffle = torch.Generator().manual_seed(self.seed)
        best_correct, best_state = -1, head.state_dict()
        head.train()
        for _ in range(self.epochs):
            correct = 0
            for rows in torch.randperm(len(x), generator=shuffle).split(CONV_PROBE_BATCH):
                if len(rows) < 2:  # BatchNorm in training needs two values per channel
                    continue
                logits = head(x[rows])
                loss = F.cross_entropy(logits, y[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                correct += int((logits.argmax(dim=1) == y[rows]).sum())
            # Ties go to the later epoch, as in the reference: its BatchNorm statistics have
            # seen more batches.
            if correct >= best_correct:
                best_correct = correct
                best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        head.load_state_dict(best_state)
        head.zero_grad(set_to_none=True)
        self.head = head.eval().requires_grad_(False)
        return self

    def torch_features(
        self, activation: torch.Tensor, unit: Unit, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        # conv units have no token axis, so there is no mask to respect
        if activation.dim() != 4:
            raise ValueError(
                f"a conv probe reads [N, C, H, W] maps; unit {unit.name!r} gives "
                f"{list(activation.shape)}"
            )
        return activation.float() if activation.element_size() < 4 else activation

    def torch_logits(self, features: torch.Tensor) -> torch.Tensor:
        """[N, classes] logits of [N, C, H, W] maps; differentiable in them (the head is frozen)."""
        if self.head is None:
            raise RuntimeError("probe is not fitted: call fit() first")
        # The head follows its input's device and dtype (routing and repair may run on CUDA).
        return self.head.to(device=features.device, dtype=features.dtype)(features)

    def logits(self, features: np.ndarray) -> torch.Tensor:
        maps = _check_maps(features)
        with torch.no_grad():
            return torch.cat(
                [
                    self.torch_logits(torch.as_tensor(maps[i : i + CONV_PROBE_INFERENCE_BATCH]))
                    for i in range(0, len(maps), CONV_PROBE_INFERENCE_BATCH)
                ]
            )


def _check_maps(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 4 or len(features) == 0:
        raise ValueError(f"maps must be a non-empty [N, C, H, W] array, got {features.shape}")
    return features


class ProbeSet:
    """One probe per unit, with its accuracy on a held-out split of the clean samples.

    Each probe is fitted on the training part only and kept as is: the accuracy
    reported is the accuracy of the very probe that routing and repair use.
    """

    def __init__(self, l2: float = 1e-3, max_iter: int = 200):
        self.l2 = l2
        self.max_iter = max_iter
        self.probes: dict[str, Probe] = {}
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
        """Fit a probe per unit of `features`, unit name -> [N, C] pooled features (a linear
        probe) or [N, C, H, W] maps (a conv head); `progress(1)` after each."""
        labels = np.asarray(labels)
        train, held_out = holdout_split(len(labels), holdout, seed)
        self.probes, self.accuracy = {}, {}
        for name, unit_features in features.items():
            if len(unit_features) != len(labels):
                raise ValueError(
                    f"unit {name!r} has {len(unit_features)} feature rows for {len(labels)} labels"
                )
            probe: Probe = (
                ConvProbe(num_classes, seed)
                if unit_features.ndim == 4
                else LinearProbe(num_classes, self.l2, self.max_iter)
            )
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
