"""Neural Cleanse with unlearning (Wang, Yao, Shan, Li, Viswanath, Zheng and Zhao, "Neural
Cleanse: Identifying and Mitigating Backdoor Attacks in Neural Networks", S&P 2019), after
its reference code github.com/bolunwang/backdoor (`visualizer.py`,
`gtsrb_visualize_example.py`, `mad_outlier_detection.py`) and BackdoorBench's unlearning
(github.com/SCLBD/BackdoorBench `defense/nc.py`, `config/defense/nc/config.yaml`).

The trigger scan of `inner_onnx/scan/neural_cleanse.py` (the one `inner-onnx scan` runs)
reverse-engineers the smallest trigger per class from the clean training split; the class
whose mask norm is the most anomalous below the median (MAD anomaly index > 2) is the
attacker's. Its reversed trigger is stamped on a share of the clean samples, which keep
their true labels, and the model is fine-tuned on the mixture. No class flagged: the model
is returned unchanged, as BackdoorBench does.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from inner_onnx.io.data import Dataset
from inner_onnx.repair.methods.base import MethodPlan, RepairMethod, register
from inner_onnx.repair.methods.clean_training import (
    BACKDOORBENCH_EPOCHS,
    cross_entropy,
    descent_step,
    fine_tuned_plan,
)
from inner_onnx.repair.problem import RepairProblem
from inner_onnx.scan import NeuralCleanseSettings, ReversedTrigger, scan

# BackdoorBench config/defense/nc/config.yaml: ratio of clean samples stamped for unlearning.
NC_UNLEARNING_RATIO = 0.2
# The reference's anomaly statistic, on raw mask norms (mad_outlier_detection.py), not the
# log norms of inner-onnx's own scan.
NC_REFERENCE_SCAN = NeuralCleanseSettings(log_norms=False)


def flagged_trigger(problem: RepairProblem) -> ReversedTrigger | None:
    """The reversed trigger of the most anomalous flagged class, or None."""
    model, data = problem.model, problem.train
    found = scan(
        problem.fresh_view().requires_grad_(False),
        data.x,
        data.y,
        model.input.layout,
        model.num_classes,
        settings=NC_REFERENCE_SCAN,
        seed=problem.context.seed,
        reporter=problem.reporter,
    )
    return found.triggers[found.target_label] if found.target_label is not None else None


@register
class NcUnlearn(RepairMethod):
    name = "nc_unlearn"
    label = "Neural Cleanse"
    summary = "reverse-engineer the trigger (Neural Cleanse), unlearn it on clean data"
    scenarios = ("backdoor",)
    clean_only: ClassVar[bool] = True
    reference_epochs: ClassVar[int | None] = BACKDOORBENCH_EPOCHS

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
