"""Neural Cleanse with unlearning (Wang, Yao, Shan, Li, Viswanath, Zheng and Zhao, "Neural
Cleanse: Identifying and Mitigating Backdoor Attacks in Neural Networks", S&P 2019), after
its reference code github.com/bolunwang/backdoor (`visualizer.py`,
`gtsrb_visualize_example.py`, `mad_outlier_detection.py`) and BackdoorBench's unlearning
(github.com/SCLBD/BackdoorBench `defense/nc.py`, `config/defense/nc/config.yaml`).

For every class t, reverse-engineer the smallest trigger (mask m, pattern p) that sends
clean samples to t: x' = (1 − m)·x + m·p, minimizing CE(f(x'), t) + cost·‖m‖₁ with the
reference's cost control. The class whose mask norm is the most anomalous below the median
(MAD anomaly index > 2) is the attacker's; its reversed trigger is stamped on a share of the
clean samples, which keep their true labels, and the model is fine-tuned on the mixture.
No class flagged: the model is returned unchanged, as BackdoorBench does.

A compact reverse-engineering of our own for now, bounded for a CPU (at most NC_STEPS
mini-batches per class, the reference's early stop); switch to the shared trigger scan
(`inner_onnx/scan/neural_cleanse.py`) once it lands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from inner_onnx.io.data import Dataset
from inner_onnx.io.model import OnnxModel
from inner_onnx.measure.attacks import input_range
from inner_onnx.repair.methods.base import MethodPlan, RepairMethod, register
from inner_onnx.repair.methods.clean_training import cross_entropy, descent_step, fine_tuned_plan
from inner_onnx.repair.problem import RepairProblem
from inner_onnx.torchview import TorchView

# gtsrb_visualize_example.py (the reference's settings): LR 0.1 (Adam, betas (0.5, 0.9) in
# visualizer.py), BATCH_SIZE 32, INIT_COST 1e-3, ATTACK_SUCC_THRESHOLD 0.99, PATIENCE 5,
# COST_MULTIPLIER 2 (down by its 1.5th power, visualizer.py), EARLY_STOP_THRESHOLD 1.0 with
# EARLY_STOP_PATIENCE 5·PATIENCE (BackdoorBench's nc config: early_stop_threshold 0.99).
NC_LR = 0.1
NC_BETAS = (0.5, 0.9)
NC_BATCH = 32
NC_INIT_COST = 1e-3
NC_SUCCESS = 0.99
NC_PATIENCE = 5
NC_COST_UP = 2.0
NC_COST_DOWN = 2.0**1.5
NC_EARLY_STOP_THRESHOLD = 0.99
NC_EARLY_STOP_PATIENCE = 5 * NC_PATIENCE
# Ours: the reference runs up to STEPS = 1000 passes of its mini-batches per class.
NC_STEPS = 300
# mad_outlier_detection.py: consistency constant 1.4826, flagged above index 2 (l. 37, 49)
NC_MAD_CONSTANT = 1.4826
NC_ANOMALY_INDEX = 2.0
# BackdoorBench nc config: unlearning_ratio 0.2 of the clean samples carry the trigger
NC_UNLEARNING_RATIO = 0.2


@dataclass
class ReversedTrigger:
    target: int
    mask: np.ndarray  # broadcasts over the input's channel axis
    pattern: np.ndarray

    @property
    def norm(self) -> float:
        return float(np.abs(self.mask).sum())

    def stamp(self, x: np.ndarray) -> np.ndarray:
        return ((1 - self.mask) * x + self.mask * self.pattern).astype(x.dtype)


def mask_shape(model: OnnxModel, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
    """One mask value per position, shared by the channels (as the reference's mask)."""
    channel_axis = {"NCHW": 0, "NHWC": len(sample_shape) - 1}.get(model.input.layout)
    if channel_axis is None:
        return sample_shape
    return tuple(1 if i == channel_axis else d for i, d in enumerate(sample_shape))


def reverse_trigger(
    view: TorchView, model: OnnxModel, data: Dataset, target: int, seed: int
) -> ReversedTrigger:
    """visualizer.py `visualize` for one class, at most NC_STEPS mini-batches."""
    lo, hi = input_range(data.x, None)
    x_all = torch.from_numpy(data.x)
    generator = torch.Generator().manual_seed(seed + target)
    # tanh space, as the reference: mask = tanh(a)/2 + 0.5, pattern likewise over [lo, hi]
    mask_raw = torch.zeros(mask_shape(model, data.x.shape[1:]), requires_grad=True)
    pattern_raw = torch.zeros(data.x.shape[1:], requires_grad=True)
    optimizer = torch.optim.Adam([mask_raw, pattern_raw], lr=NC_LR, betas=NC_BETAS)
    cost, up, down = NC_INIT_COST, 0, 0
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    best_at_check, stale = float("inf"), 0
    labels = torch.full((NC_BATCH,), target, dtype=torch.int64)
    for _ in range(NC_STEPS):
        x = x_all[torch.randint(len(x_all), (NC_BATCH,), generator=generator)]
        mask = torch.tanh(mask_raw) / 2 + 0.5
        pattern = lo + (hi - lo) * (torch.tanh(pattern_raw) / 2 + 0.5)
        logits = view((1 - mask) * x + mask * pattern)
        norm = mask.abs().sum()
        loss = F.cross_entropy(logits, labels) + cost * norm
        norm = norm.detach()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        success = float((logits.argmax(1) == target).float().mean())
        if success >= NC_SUCCESS and (best is None or float(norm) < best[0]):
            best = (float(norm), mask.detach().numpy(), pattern.detach().numpy())
        # cost control: up after PATIENCE successful batches in a row, down after failures
        up, down = (up + 1, 0) if success >= NC_SUCCESS else (0, down + 1)
        if up >= NC_PATIENCE:
            cost, up = cost * NC_COST_UP, 0
        elif down >= NC_PATIENCE:
            cost, down = cost / NC_COST_DOWN, 0
        # early stop: the best norm has not improved by 1% for EARLY_STOP_PATIENCE batches
        if best is not None:
            if best[0] >= NC_EARLY_STOP_THRESHOLD * best_at_check:
                stale += 1
            else:
                best_at_check, stale = best[0], 0
            if stale >= NC_EARLY_STOP_PATIENCE:
                break
    if best is None:  # never reached the success rate: the last mask, as large as it is
        best = (float(norm), mask.detach().numpy(), pattern.detach().numpy())
    return ReversedTrigger(target, best[1], best[2])


def anomaly_indices(norms: np.ndarray) -> np.ndarray:
    """MAD anomaly index of each class's mask norm (mad_outlier_detection.py)."""
    median = np.median(norms)
    mad = NC_MAD_CONSTANT * np.median(np.abs(norms - median))
    return np.abs(norms - median) / max(mad, 1e-12)


def flagged_trigger(problem: RepairProblem) -> ReversedTrigger | None:
    """The most anomalous class below the median with an index above 2, or None."""
    view = problem.fresh_view().requires_grad_(False)
    triggers = [
        reverse_trigger(view, problem.model, problem.train, t, problem.context.seed)
        for t in range(problem.model.num_classes)
    ]
    norms = np.array([t.norm for t in triggers])
    index = anomaly_indices(norms)
    suspects = [t for t in range(len(norms)) if norms[t] < np.median(norms)]
    suspects = [t for t in suspects if index[t] > NC_ANOMALY_INDEX]
    if not suspects:
        return None
    return triggers[max(suspects, key=lambda t: index[t])]


@register
class NcUnlearn(RepairMethod):
    name = "nc_unlearn"
    label = "Neural Cleanse"
    summary = "reverse-engineer the trigger (Neural Cleanse), unlearn it on clean data"
    scenarios = ("backdoor",)
    clean_only: ClassVar[bool] = True

    def plan(self, problem: RepairProblem) -> MethodPlan:
        """Fine-tuning for the run's epoch budget (`--epochs`) on the stamped mixture."""
        trigger = flagged_trigger(problem)
        if trigger is None:
            return MethodPlan({}, fine_tune=False)
        data = problem.train
        rng = np.random.default_rng(problem.context.seed)
        rows = rng.permutation(len(data))[: int(NC_UNLEARNING_RATIO * len(data))]
        x = data.x.copy()
        x[rows] = trigger.stamp(x[rows])
        mixture = Dataset(x, data.y, f"{data.source} with the reversed trigger")
        return fine_tuned_plan(problem, mixture, lambda view, _: descent_step(cross_entropy(view)))
