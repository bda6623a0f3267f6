"""Backdoor: triggered inputs go to the attacker's class.

Bad samples are triggered inputs with their true labels, from `--bad BAD.npz` or
stamped on the clean data with `--trigger SPEC` and `--target-label`. With
neither, a trigger scan of the clean training split (Neural Cleanse,
inner_onnx/scan) reverse-engineers the trigger of the most anomalous class (or of
`--target-label`), and the reversed trigger stamped on clean samples of the other
classes, true labels kept, becomes the bad samples.
"""

from __future__ import annotations

from dataclasses import replace

from inner_onnx.batching import BatchSizes
from inner_onnx.errors import InputError
from inner_onnx.io.data import Dataset, load_npz
from inner_onnx.io.model import OnnxModel
from inner_onnx.localize.pipeline import LocalizeSettings
from inner_onnx.localize.routing import RoutingSettings
from inner_onnx.measure.metrics import Metrics, accuracy, attack_success_rate
from inner_onnx.progress import QUIET
from inner_onnx.repair.settings import LossWeights, RepairSettings, StoppingRule, TrainingSettings
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
    infer_target_label,
    kept_behaviour_penalty,
    predict_labels,
    register,
)
from inner_onnx.scenarios.triggers import backdoor_bad_samples, placement


@register
class Backdoor(Scenario):
    name = "backdoor"
    summary = "triggered inputs go to the attacker's class (--bad or --trigger)"
    sources = ("--bad", "--trigger")
    bad_metric = "asr"
    bad_metric_higher_is_better = False
    stops_when_met = True

    def default_settings(self) -> RepairSettings:
        # A trigger sits in a few input positions, which whole neurons cannot single out (a
        # Dense neuron reads every position, a Conv channel runs everywhere), so routing works
        # on weight elements. Mixtures of bad samples multiply the few the user has;
        # distillation on mixtures of clean ones and the average of the last 10 epochs keep the
        # class boundaries where the original had them (the single best epoch by a small
        # validation split swings by several points of per-class accuracy). Measured on both
        # bundled samples, 3 seeds each: benchmarks/repair_targets.py and RESULTS.md. Clean
        # rows of the target class in every batch and the output-bias calibration keep the
        # classes' priors where the original had them: 14 of 15 backdoor runs on the zoo's
        # tuning half met every target against 6 without (RESULTS.md, "Output-bias
        # calibration").
        return RepairSettings(
            training=TrainingSettings(
                epochs=30, average_epochs=10, target_fraction=1.0, calibrate_output_bias=True
            ),
            loss=LossWeights(clean_mixup=20.0, bad_mixup=4.0),
            stopping=StoppingRule(),
            localize=LocalizeSettings(routing=RoutingSettings(granularity="weight")),
        )

    def bad_samples(self, source: BadSource, clean: Dataset, sampler: Sampler) -> BadSamples:
        given = self._given(source, sampler.model)
        if given is not None:
            target = source.target_label
            if target is None:
                target = infer_target_label(sampler.predict(given.x), given.y)
            return BadSamples(given, target)
        assert source.trigger is not None and source.target_label is not None
        place = placement(sampler.model, source.trigger)
        x, y = backdoor_bad_samples(clean.x, clean.y, source.trigger, place, source.target_label)
        return BadSamples(Dataset(x, y, f"{clean.source} + {source.trigger}"), source.target_label)

    @staticmethod
    def _given(source: BadSource, model: OnnxModel) -> Dataset | None:
        if source.bad_data is not None:
            return source.bad_data
        return load_npz(source.bad_path, model) if source.bad_path is not None else None

    def split_bad(
        self, source: BadSource, train: Dataset, held: Dataset, fraction: float, sampler: Sampler
    ) -> tuple[BadSamples, BadSamples]:
        given = source.bad_data is not None or source.bad_path is not None
        if not given and source.trigger is None:
            return self._from_scan(source, train, held, sampler)
        if given:
            # the one place the --bad file is read
            every = self.bad_samples(source, train, sampler)
            train_rows, held_rows = checked_split(every.data, fraction, sampler.seed)
            return (
                BadSamples(every.data.subset(train_rows), every.target_label),
                BadSamples(every.data.subset(held_rows), every.target_label),
            )
        return (
            self.bad_samples(source, train, sampler),
            self.bad_samples(source, held, replace(sampler, reporter=QUIET)),
        )

    def check_source(self, given: list[str]) -> None:
        """Either option, or neither (then a trigger scan finds the bad samples)."""
        if given and given[0] not in self.sources:
            raise InputError(f"{given[0]} does not fit --scenario backdoor; use --bad or --trigger")

    @staticmethod
    def _from_scan(
        source: BadSource, train: Dataset, held: Dataset, sampler: Sampler
    ) -> tuple[BadSamples, BadSamples]:
        from inner_onnx.scan import scan

        model = sampler.model
        if model.is_text:
            raise InputError(
                "the trigger scan needs a float input: for a text model give --bad, or "
                "--trigger token:ID@POS with --target-label"
            )
        chosen = [source.target_label] if source.target_label is not None else None
        found = scan(
            sampler.forward,
            train.x,
            train.y,
            model.input.layout,
            model.num_classes,
            classes=chosen,
            seed=sampler.seed,
            reporter=sampler.reporter,
        )
        target = source.target_label if source.target_label is not None else found.target_label
        if target is None:
            raise InputError(
                "the trigger scan finds no suspicious class: no backdoor to repair (give --bad, "
                "--trigger, or --target-label to repair a class anyway)"
            )
        anomaly = next(c.anomaly_index for c in found.classes if c.label == target)
        origin = {
            "synthesized_by": "neural_cleanse scan of the training split",
            "target_label": target,
            "anomaly_index": anomaly,
            "flagged": found.flagged,
        }
        parts = []
        for data in (train, held):
            x, y = found.bad_samples(data.x, data.y, target)
            parts.append(BadSamples(Dataset(x, y, f"{data.source} + scan trigger"), target))
        parts[0].origin = parts[1].origin = origin
        return parts[0], parts[1]

    def measure(
        self,
        forward: Forward,
        clean: Dataset,
        bad: BadSamples,
        num_classes: int,
        seed: int,
        sizes: BatchSizes = BatchSizes(),
    ) -> Measurement:
        bad_pred = predict_labels(forward, bad.data.x, sizes.inference)
        if bad.target_label is not None:
            asr = attack_success_rate(bad_pred, bad.data.y, bad.target_label)
            hits = (bad_pred == bad.target_label)[bad.data.y != bad.target_label]
            return clean_measurement(
                forward, clean, num_classes, asr, "asr", hits.astype(float), sizes.inference
            )
        hits = (bad_pred == bad.data.y).astype(float)
        bad_accuracy = accuracy(bad_pred, bad.data.y)
        return clean_measurement(
            forward, clean, num_classes, bad_accuracy, "bad_accuracy", hits, sizes.inference
        )

    def objective(self, now: Measurement, start: Measurement, rule: StoppingRule) -> float:
        assert now.bad is not None
        # ASR goes down; without a target, bad-sample accuracy goes up
        bad = now.bad if now.bad_kind == "asr" else -now.bad
        return now.accuracy - bad - kept_behaviour_penalty(now, start, rule)

    def missed_targets(
        self, now: Measurement, start: Measurement, rule: StoppingRule
    ) -> list[str] | None:
        if now.bad_kind != "asr" or now.bad is None:
            return ["no attacker class (--target-label): the ASR target cannot be checked"]
        missed = []
        if now.bad > rule.asr_target:
            missed.append(f"ASR {100 * now.bad:.1f}% above the {100 * rule.asr_target:.1f}% target")
        missed += accuracy_kept(now, start, rule.accuracy_tolerance)
        widened = now.gap - start.gap
        if widened > rule.fairness_tolerance:
            missed.append(
                f"fairness gap widened {100 * widened:.1f} pt "
                f"(tolerance {100 * rule.fairness_tolerance:.1f})"
            )
        return missed

    def evaluation_bad(self, held_bad: BadSamples) -> Dataset | None:
        return held_bad.data

    def headline_field(self, before: Metrics) -> str | None:
        return "asr" if before.asr is not None else "bad_accuracy"

    def curve_label(self, has_target: bool) -> str | None:
        return "attack success rate" if has_target else "bad-sample accuracy"
