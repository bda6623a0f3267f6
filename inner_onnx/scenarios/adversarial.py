"""Adversarial: small perturbations (`--attack SPEC`) flip the model's predictions.

Bad samples are adversarial examples generated against the model in its input
space; repair makes them afresh against the current weights for every batch.
"""

from __future__ import annotations

from inner_onnx.batching import BatchSizes
from inner_onnx.io.data import Dataset
from inner_onnx.localize.pipeline import LocalizeSettings
from inner_onnx.localize.routing import RoutingSettings
from inner_onnx.measure.attacks import attack_domain, generate
from inner_onnx.repair.settings import LossWeights, RepairSettings, StoppingRule, TrainingSettings
from inner_onnx.scenarios.base import (
    BadSamples,
    BadSource,
    Forward,
    Measurement,
    Sampler,
    Scenario,
    accuracy_kept,
    clean_measurement,
    kept_behaviour_penalty,
    predict_labels,
    register,
)


@register
class Adversarial(Scenario):
    name = "adversarial"
    summary = "small input perturbations flip predictions (--attack)"
    sources = ("--attack",)
    bad_metric = "robust_accuracy"
    bad_metric_higher_is_better = True

    def default_settings(self) -> RepairSettings:
        # Robustness has to be learned, not just unlearned: more of the network must move
        # (four units; half of each unit's neurons under --fault-rule top), with a larger step,
        # the adversarial loss at full weight and no distillation toward the original,
        # non-robust outputs. Measured on the bundled MNIST sample:
        # benchmarks/repair_targets.py.
        return RepairSettings(
            training=TrainingSettings(epochs=30, learning_rate=0.02),
            loss=LossWeights(bad=1.0, clean_distillation=0.0),
            stopping=StoppingRule(patience=30),
            localize=LocalizeSettings(
                layers=4, routing=RoutingSettings(top_fraction=0.5), max_weight_fraction=None
            ),
        )

    def bad_samples(self, source: BadSource, clean: Dataset, sampler: Sampler) -> BadSamples:
        assert source.attack is not None
        clip = attack_domain(sampler.model, clean.x, source.clip)
        with sampler.reporter.step(f"attack {source.attack}", len(clean)) as advance:
            x = generate(
                source.attack,
                sampler.forward,
                clean.x,
                clean.y,
                clip,
                seed=sampler.seed,
                batch_size=sampler.sizes.gradient,
                progress=advance,
            )
        return BadSamples(Dataset(x, clean.y.copy(), str(source.attack)), None, source.attack, clip)

    def split_bad(
        self, source: BadSource, train: Dataset, held: Dataset, fraction: float, sampler: Sampler
    ) -> tuple[BadSamples, BadSamples]:
        train_bad = self.bad_samples(source, train, sampler)
        # validation attacks its own clean samples afresh at every measurement
        return train_bad, BadSamples(held, None, train_bad.attack, train_bad.clip)

    def measure(
        self,
        forward: Forward,
        clean: Dataset,
        bad: BadSamples,
        num_classes: int,
        seed: int,
        sizes: BatchSizes = BatchSizes(),
    ) -> Measurement:
        x_adv = bad.regenerate(forward, clean.x, clean.y, seed, sizes.gradient)
        hits = (predict_labels(forward, x_adv, sizes.inference) == clean.y).astype(float)
        robust = float(hits.mean())
        return clean_measurement(
            forward, clean, num_classes, robust, "robust_accuracy", hits, sizes.inference
        )

    def objective(self, now: Measurement, start: Measurement, rule: StoppingRule) -> float:
        assert now.bad is not None
        return now.accuracy + now.bad - kept_behaviour_penalty(now, start, rule)

    def missed_targets(
        self, now: Measurement, start: Measurement, rule: StoppingRule
    ) -> list[str] | None:
        assert now.bad is not None and start.bad is not None
        missed = accuracy_kept(now, start, rule.robust_accuracy_tolerance)
        gain = now.bad - start.bad
        if gain < rule.robust_gain_target:
            missed.append(
                f"robust accuracy up {100 * gain:.1f} pt, below the "
                f"{100 * rule.robust_gain_target:.0f} pt target"
            )
        return missed

    def curve_label(self, has_target: bool) -> str | None:
        return "robust accuracy"
