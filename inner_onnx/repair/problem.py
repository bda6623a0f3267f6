"""Stage 1 of a repair: the problem every method gets — splits, bad samples, validation.

`RepairProblem.prepare` splits the user's clean data into training and
validation parts (stratified), makes the scenario's bad samples for each without
sharing a source sample, and keeps the localization (INNER's fault set and
probes) for the methods that use it, computed once on first use and timed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import onnx

from inner_onnx.batching import BatchSizes
from inner_onnx.context import RunContext
from inner_onnx.io.data import Dataset
from inner_onnx.io.model import OnnxModel
from inner_onnx.localize.faults import FaultSet
from inner_onnx.localize.pipeline import (
    Localization,
    LocalizeSettings,
    localize,
    probes_for_faults,
)
from inner_onnx.measure.attacks import input_range
from inner_onnx.measure.evaluation import EvaluationSet
from inner_onnx.progress import QUIET, Reporter
from inner_onnx.repair.settings import RepairSettings
from inner_onnx.repair.trainer import ProbeTerm, ValidationSplit, teacher_distributions
from inner_onnx.runtime import Runner
from inner_onnx.scenarios import BadSamples, BadSource, Scenario, scenario_named
from inner_onnx.scenarios.base import Sampler, checked_split
from inner_onnx.torchview import TorchView


@dataclass
class RepairProblem:
    model: OnnxModel
    scenario: Scenario
    source: BadSource
    settings: RepairSettings
    context: RunContext
    runner: Runner
    train: Dataset
    held: Dataset
    train_bad: BadSamples
    held_bad: BadSamples
    reporter: Reporter = QUIET
    # a fault set the user gave (`--faults`); else localized on first use
    given_faults: FaultSet | None = None
    # batch sizes of every pass over the data, from the model's footprint (batching.py)
    sizes: BatchSizes = field(default_factory=BatchSizes)
    localize_seconds: float = 0.0
    _localizations: dict[LocalizeSettings, Localization] = field(default_factory=dict, repr=False)

    @classmethod
    def prepare(
        cls,
        model: OnnxModel,
        clean: Dataset,
        source: BadSource,
        settings: RepairSettings,
        context: RunContext = RunContext(),
        faults: FaultSet | None = None,
        reporter: Reporter = QUIET,
    ) -> RepairProblem:
        source.check(model)
        scenario = scenario_named(source.scenario)
        runner = Runner(model, context.device)
        sizes = runner.batch_sizes(clean.x)
        if source.attack is not None and source.clip is None and not model.is_text:
            # One valid range for every split: the training part alone may not span the rest.
            source = replace(source, clip=input_range(clean.x, None))
        fraction = settings.stopping.validation_fraction
        train_rows, held_rows = checked_split(clean, fraction, context.seed)
        train, held = clean.subset(train_rows), clean.subset(held_rows)
        forward = model.torch_view(device=context.torch_device)
        sampler = Sampler(model, runner.predict, forward, context.seed, reporter, sizes)
        train_bad, held_bad = scenario.split_bad(source, train, held, fraction, sampler)
        return cls(
            model,
            scenario,
            source,
            settings,
            context,
            runner,
            train,
            held,
            train_bad,
            held_bad,
            reporter,
            faults,
            sizes,
        )

    def fresh_view(self) -> TorchView:
        """The original model as a torch view that a method may change, on the run's device."""
        return self.model.torch_view(device=self.context.torch_device)

    @property
    def validation(self) -> ValidationSplit:
        return ValidationSplit(self.held, self.held_bad, self.scenario, self.sizes)

    def localization(self, settings: LocalizeSettings | None = None) -> Localization:
        """INNER's fault set and the probes of its units: the given fault set with probes
        fitted afresh, or localized now with `settings` (default: the problem's), once per
        settings; the first localization's wall time is kept in localize_seconds."""
        settings = settings or self.settings.localize
        if settings not in self._localizations:
            started = time.perf_counter()
            if self.given_faults is not None:
                found = probes_for_faults(
                    self.runner,
                    self.train,
                    self.given_faults,
                    settings,
                    self.context.seed,
                    self.reporter,
                )
            else:
                found = localize(
                    self.runner,
                    self.fresh_view(),
                    self.train,
                    self.train_bad.data,
                    settings,
                    self.context.seed,
                    self.reporter,
                    self.sizes,
                )
            self._localizations[settings] = found
            if settings == self.settings.localize:
                self.localize_seconds = time.perf_counter() - started
        return self._localizations[settings]

    @property
    def faults(self) -> FaultSet:
        return self.localization().faults

    @property
    def found_faults(self) -> FaultSet | None:
        """The fault set, if a method asked for it (None: no localization ran)."""
        found = self._localizations.get(self.settings.localize)
        if found is None and self._localizations:
            found = next(iter(self._localizations.values()))
        return found.faults if found is not None else None

    def probe_terms(self, settings: LocalizeSettings | None = None) -> list[ProbeTerm]:
        """The selected units' probes, each with its per-class teachers."""
        found = self.localization(settings)
        return [
            ProbeTerm(
                name,
                found.probes.probes[name],
                teacher_distributions(
                    found.probes.probes[name],
                    found.clean_features[name],
                    self.train.y,
                    found.clean_correct,
                    self.model.num_classes,
                    self.context.torch_device,
                ),
            )
            for name in found.faults.selected_units
        ]

    def evaluation_set(self, given: EvaluationSet | None = None) -> EvaluationSet:
        """The user's evaluation data (with the attacker's class filled in when it was
        inferred), else the validation split."""
        if given is None:
            return EvaluationSet(
                self.held,
                self.scenario.evaluation_bad(self.held_bad),
                self.held_bad.target_label,
                self.source.attack,
                self.held_bad.clip,
                "validation split",
            )
        if given.bad is not None and given.target_label is None:
            return replace(given, target_label=self.train_bad.target_label)
        return given


def _every_value(model: OnnxModel, names: list[str]) -> dict[str, np.ndarray]:
    return {name: np.ones(tuple(model.initializers[name].dims), dtype=bool) for name in names}


def all_unit_masks(model: OnnxModel) -> dict[str, np.ndarray]:
    """Every weight and bias value of every unit (plain fine-tuning)."""
    names = [n for unit in model.units for n in (unit.weight, unit.bias) if n is not None]
    return _every_value(model, names)


def batch_norm_affine(model: OnnxModel) -> list[tuple[str, str]]:
    """Each BatchNormalization's (scale, bias) initializers, where both are float initializers:
    the values torch holds as a BatchNorm layer's `weight` and `bias` parameters (its running
    mean and variance are buffers)."""
    floats = {
        name
        for name, init in model.initializers.items()
        if init.data_type == onnx.TensorProto.FLOAT
    }
    return [
        (node.input[1], node.input[2])
        for node in model.proto.graph.node
        if node.op_type == "BatchNormalization"
        and node.input[1] in floats
        and node.input[2] in floats
    ]


def torch_parameter_masks(model: OnnxModel) -> dict[str, np.ndarray]:
    """Every value a torch module's `parameters()` would hold: the units' weights and biases
    and the BatchNormalization scales and biases (what reference code fine-tunes)."""
    affine = [name for pair in batch_norm_affine(model) for name in pair]
    return {**all_unit_masks(model), **_every_value(model, affine)}
