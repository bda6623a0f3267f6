"""Fault localization (DESIGN.md steps 1-3): probes, layer selection, neuron routing.

Activations for the probes come from onnxruntime (the model as deployed);
routing backpropagates through the torch view.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from inner_onnx.batching import BatchSizes
from inner_onnx.errors import InputError
from inner_onnx.io.data import Dataset
from inner_onnx.io.model import OnnxModel
from inner_onnx.io.units import CONV_OPS, Unit
from inner_onnx.localize.faults import FaultSet, UnitScore
from inner_onnx.localize.probes import ProbeSet
from inner_onnx.localize.routing import RoutingSettings, choose_route_samples, route
from inner_onnx.localize.selection import layer_scores, select_layers
from inner_onnx.progress import QUIET, Reporter
from inner_onnx.runtime import Runner
from inner_onnx.torchview import TorchView

# linear: logistic regression on every unit's channel means; conv: the reference code's conv
# head on the unpooled map of 2-D convolution units (probes.py, ConvProbe), linear elsewhere
PROBES = ("linear", "conv")


@dataclass(frozen=True)
class LocalizeSettings:
    layers: int = 3
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    probe_holdout: float = 0.2
    # whether the classifier (the last unit) may be selected; the reference never selects it
    select_output_unit: bool = True
    # the top fault rule without --top-k: the fault set covers at most this share of the unit
    # weights (None: no limit)
    max_weight_fraction: float | None = 0.1
    # what the probes read (PROBES)
    probe: str = "linear"

    def __post_init__(self) -> None:
        if self.layers < 1:
            raise InputError(f"--layers must be at least 1, got {self.layers}")
        if self.probe not in PROBES:
            raise InputError(f"--probe must be one of {', '.join(PROBES)}, got {self.probe!r}")


@dataclass
class Localization:
    faults: FaultSet
    probes: ProbeSet
    # what the probes were fitted on: the clean features per unit (pooled, or the map a conv
    # probe reads), and which clean samples the model gets right (repair's distillation
    # teachers come from them)
    clean_features: dict[str, np.ndarray]
    clean_correct: np.ndarray


def map_units(model: OnnxModel, units: list[Unit], probe: str) -> list[str]:
    """The units whose probe reads the unpooled map: with `probe` conv, the 2-D convolutions
    (a 4-D weight, so an [N, C, H, W] activation)."""
    if probe != "conv":
        return []
    return [
        u.name for u in units if u.op in CONV_OPS and len(model.initializers[u.weight].dims) == 4
    ]


def probe_features(
    runner: Runner,
    x: np.ndarray,
    units: list[Unit],
    maps: list[str],
    progress: Callable[[int], None],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """What each unit's probe reads of the samples `x` (the map for the units in `maps`, else
    the pooled activation), in the order of `units`, and the model's scores."""
    capture = runner.capture(x, units, progress=progress, maps=maps)
    return {**capture.pooled, **capture.maps}, capture.scores


def fit_probes(
    runner: Runner,
    clean: Dataset,
    units: list[str] | None,
    seed: int,
    settings: LocalizeSettings,
    reporter: Reporter,
) -> tuple[ProbeSet, dict[str, np.ndarray], np.ndarray]:
    """Probes on clean activations; returns them, their features and the model's scores."""
    model = runner.model
    if units is None:
        chosen = probed_units(runner, clean)
    else:
        chosen = [model.unit(name) for name in units]
        unusable = {u.name for u in chosen} - {
            u.name for u in runner.batch_first_units(clean.x, chosen)
        }
        if unusable:
            raise InputError(
                f"unit {sorted(unusable)[0]} has no activation row per sample (tokens folded "
                "into or placed before the batch axis): it cannot be a selected unit"
            )
    maps = map_units(model, chosen, settings.probe)
    with reporter.step("activations (onnxruntime)", len(clean)) as advance:
        features, scores = probe_features(runner, clean.x, chosen, maps, advance)
    with reporter.step("probes", len(chosen)) as advance:
        probes = ProbeSet().fit(
            features, clean.y, model.num_classes, seed, settings.probe_holdout, advance
        )
    return probes, features, scores


def probed_units(runner: Runner, clean: Dataset) -> list[Unit]:
    """The units probes can read: one activation row per sample (see `batch_first_units`)."""
    units = runner.batch_first_units(clean.x, runner.model.units)
    if not units:
        raise InputError("no unit of the model has an activation row per sample to probe")
    return units


def probes_for_faults(
    runner: Runner,
    clean: Dataset,
    faults: FaultSet,
    settings: LocalizeSettings,
    seed: int = 0,
    reporter: Reporter = QUIET,
) -> Localization:
    """A fault set read from a file, with its selected units' probes fitted afresh."""
    probes, features, scores = fit_probes(
        runner, clean, faults.selected_units, seed, settings, reporter
    )
    return Localization(faults, probes, features, scores.argmax(axis=1) == clean.y)


def localize(
    runner: Runner,
    view: TorchView,
    clean: Dataset,
    bad: Dataset,
    settings: LocalizeSettings,
    seed: int = 0,
    reporter: Reporter = QUIET,
    sizes: BatchSizes = BatchSizes(),
) -> Localization:
    """Probes, layer selection and routing, on the view's device in batches of `sizes`; the
    caller pins torch's threads (RunContext)."""
    model: OnnxModel = runner.model
    probes, clean_features, clean_scores = fit_probes(runner, clean, None, seed, settings, reporter)
    candidates = [model.unit(name) for name in probes.probes]
    maps = map_units(model, candidates, settings.probe)
    with reporter.step("activations of bad samples", len(bad)) as advance:
        bad_features, bad_scores = probe_features(runner, bad.x, candidates, maps, advance)
    clean_correct = clean_scores.argmax(axis=1) == clean.y
    if not clean_correct.any():
        raise InputError(f"{clean.source}: the model gets no clean sample right")
    bad_wrong = bad_scores.argmax(axis=1) != bad.y
    # The samples that show the fault decide the layers (as in the paper's reference code);
    # when the model gets every bad sample right, all of them are used.
    shown = bad_wrong if bad_wrong.any() else np.ones(len(bad), dtype=bool)
    scores = layer_scores(
        probes,
        clean_features,
        clean_correct,
        {name: features[shown] for name, features in bad_features.items()},
        clean_labels=clean.y,
        bad_labels=bad.y[shown],
    )
    selectable = dict(scores)
    if not settings.select_output_unit and len(selectable) > 1:
        selectable.pop(model.units[-1].name, None)
    selected = select_layers(selectable, min(settings.layers, len(selectable)))
    rows = choose_route_samples(bad_wrong, settings.routing.max_samples, seed)
    with reporter.step("neuron routing", len(selected)) as advance:
        neurons, weight_indices, unit_votes = route(
            model, view, probes.probes, selected, bad.x[rows], settings.routing, advance, sizes
        )
    units = [
        UnitScore(u.name, float(scores[u.name]), float(probes.accuracy[u.name]), u.name in selected)
        for u in candidates
    ]
    record = asdict(settings)
    record["seed"] = seed
    record["route_samples"] = len(rows)
    # units left out of probing (no activation row per sample), so a reader sees why
    record["units_not_probed"] = [u.name for u in model.units if u.name not in probes.probes]
    faults = FaultSet(
        model.sha256,
        settings.routing.granularity,
        units,
        neurons,
        weight_indices,
        unit_votes,
        record,
    )
    budgeted = settings.routing.granularity == "neuron" and settings.routing.top_k is None
    budgeted = budgeted and settings.routing.fault_rule == "top"
    if settings.max_weight_fraction is not None and budgeted:
        faults = faults.within_budget(model, settings.max_weight_fraction)
    return Localization(faults, probes, clean_features, clean_correct)
