"""Wrong predictions: the samples of the clean data that the model misclassifies.

No option gives the bad samples (a library caller may hand over misclassified
samples of its own as `BadSource.bad_data`); the validation split measures
accuracy and the fairness gap between classes.
"""

from __future__ import annotations

import numpy as np

from inner_onnx.batching import BatchSizes
from inner_onnx.errors import InputError
from inner_onnx.io.data import Dataset
from inner_onnx.measure.metrics import Metrics
from inner_onnx.repair.settings import LossWeights, RepairSettings, StoppingRule
from inner_onnx.scenarios.base import (
    BadSamples,
    BadSource,
    Forward,
    Measurement,
    Sampler,
    Scenario,
    accuracy_kept,
    checked_split,
    clean_measurement,
    kept_behaviour_penalty,
    register,
)


@register
class Wrong(Scenario):
    name = "wrong"
    summary = "the model misclassifies samples of the clean data"
    sources = ()
    bad_metric = "weak_accuracy"
    bad_metric_higher_is_better = True

    def default_settings(self) -> RepairSettings:
        # The original's outputs are what is wrong here: no distillation toward them.
        return RepairSettings(loss=LossWeights(clean_distillation=0.0))

    def bad_samples(self, source: BadSource, clean: Dataset, sampler: Sampler) -> BadSamples:
        wrong = sampler.predict(clean.x) != clean.y
        if not wrong.any():
            raise InputError(
                f"{clean.source}: the model classifies every sample right: nothing to fix"
            )
        return BadSamples(clean.subset(np.flatnonzero(wrong)), None)

    def split_bad(
        self, source: BadSource, train: Dataset, held: Dataset, fraction: float, sampler: Sampler
    ) -> tuple[BadSamples, BadSamples]:
        if source.bad_data is not None:
            train_rows, _ = checked_split(source.bad_data, fraction, sampler.seed)
            train_bad = BadSamples(source.bad_data.subset(train_rows), None)
        else:
            train_bad = self.bad_samples(source, train, sampler)
        return train_bad, BadSamples(held, None)

    def measure(
        self,
        forward: Forward,
        clean: Dataset,
        bad: BadSamples,
        num_classes: int,
        seed: int,
        sizes: BatchSizes = BatchSizes(),
    ) -> Measurement:
        return clean_measurement(forward, clean, num_classes, batch_size=sizes.inference)

    def objective(self, now: Measurement, start: Measurement, rule: StoppingRule) -> float:
        return now.accuracy - now.gap - kept_behaviour_penalty(now, start, rule)

    def missed_targets(
        self, now: Measurement, start: Measurement, rule: StoppingRule
    ) -> list[str] | None:
        missed = accuracy_kept(now, start, 0.0)
        assert now.weakest is not None and start.weakest is not None
        if now.weakest <= start.weakest:
            missed.append(
                f"weakest class not up ({100 * start.weakest:.1f}% -> {100 * now.weakest:.1f}%)"
            )
        return missed

    def headline_field(self, before: Metrics) -> str | None:
        return "fairness_gap"
