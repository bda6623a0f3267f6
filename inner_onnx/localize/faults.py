"""The fault set: which units decide the bad behaviour and which of their neurons carry it.

It is a product of its own (`inner-onnx localize -o FAULTS.json`): repair
reads it back with `--faults`, and other repair methods can be restricted to
it. `masks()` turns it into one boolean array per initializer: True where
repair may change a value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from inner_onnx.errors import InputError
from inner_onnx.io.model import OnnxModel
from inner_onnx.io.units import Unit

FORMAT = "inner-onnx/faults@1"


@dataclass(frozen=True)
class FaultNeuron:
    unit: str
    index: int
    votes: int


@dataclass
class UnitScore:
    name: str
    score: float
    probe_accuracy: float
    selected: bool


@dataclass
class FaultSet:
    model_sha256: str
    granularity: str  # "neuron" or "weight"
    units: list[UnitScore]
    neurons: list[FaultNeuron]
    # weight granularity only: unit name -> flat indices into its weight tensor
    weight_indices: dict[str, list[int]] = field(default_factory=dict)
    # selected unit name -> votes of every one of its neurons (the kept ones and the rest)
    unit_votes: dict[str, list[int]] = field(default_factory=dict)
    settings: dict[str, object] = field(default_factory=dict)

    @property
    def selected_units(self) -> list[str]:
        return [u.name for u in self.units if u.selected]

    def masks(self, model: OnnxModel) -> dict[str, np.ndarray]:
        """Initializer name -> bool mask of the values repair may change."""
        masks: dict[str, np.ndarray] = {}
        for unit_name, indices in self._neurons_by_unit().items():
            unit = model.unit(unit_name)
            shape = tuple(model.initializers[unit.weight].dims)
            weight_mask = np.zeros(shape, dtype=bool)
            if self.granularity == "weight":
                weight_mask.reshape(-1)[self.weight_indices.get(unit_name, [])] = True
            else:
                slicer = [slice(None)] * len(shape)
                slicer[unit.neuron_axis] = indices
                weight_mask[tuple(slicer)] = True
            masks[unit.weight] = masks.get(unit.weight, False) | weight_mask
            if unit.bias is not None:
                bias_mask = np.zeros(unit.neurons, dtype=bool)
                bias_mask[indices] = True
                bias_shape = tuple(model.initializers[unit.bias].dims)
                masks[unit.bias] = masks.get(unit.bias, False) | bias_mask.reshape(bias_shape)
        return masks

    def _neurons_by_unit(self) -> dict[str, list[int]]:
        # at weight granularity a unit may keep weights whose neurons got no vote
        grouped: dict[str, list[int]] = {name: [] for name in self.weight_indices}
        for neuron in self.neurons:
            grouped.setdefault(neuron.unit, []).append(neuron.index)
        return grouped

    def within_budget(self, model: OnnxModel, fraction: float) -> FaultSet:
        """Drop the least-voted neurons until the set covers at most `fraction` of all unit
        weights (neuron granularity; at least one neuron stays)."""
        total = sum(u.parameters for u in model.units)
        kept = list(self.neurons)
        per_neuron = {u.name: u.parameters // u.neurons for u in model.units}
        covered = sum(per_neuron[n.unit] for n in kept)
        while len(kept) > 1 and covered > fraction * total:
            dropped = kept.pop()  # neurons are sorted by votes, most first
            covered -= per_neuron[dropped.unit]
        return replace(self, neurons=kept)

    def weights_covered(self, model: OnnxModel) -> int:
        return int(sum(mask.sum() for mask in self.masks(model).values()))

    def to_dict(self, model: OnnxModel) -> dict[str, object]:
        covered = self.weights_covered(model)
        total = sum(u.parameters for u in model.units)
        payload: dict[str, object] = {
            "format": FORMAT,
            "model_sha256": self.model_sha256,
            "granularity": self.granularity,
            "settings": self.settings,
            "units": [vars(u) for u in self.units],
            "neurons": [vars(n) for n in self.neurons],
            "weights_covered": covered,
            "weights_total": total,
            "weights_covered_fraction": covered / total if total else 0.0,
        }
        payload["unit_votes"] = self.unit_votes
        if self.granularity == "weight":
            payload["weight_indices"] = self.weight_indices
        return payload

    @classmethod
    def from_dict(cls, payload: dict, model: OnnxModel, source: str = "faults") -> FaultSet:
        if payload.get("format") != FORMAT:
            raise InputError(f"{source}: not an inner-onnx fault set (format {FORMAT} expected)")
        if payload.get("model_sha256") != model.sha256:
            raise InputError(
                f"{source}: made for another model (sha256 "
                f"{str(payload.get('model_sha256'))[:12]}…, this model {model.sha256[:12]}…); "
                "run localize on this model"
            )
        if payload.get("granularity") not in ("neuron", "weight"):
            raise InputError(f"{source}: granularity must be 'neuron' or 'weight'")
        try:
            units = [UnitScore(**u) for u in payload["units"]]
            neurons = [FaultNeuron(**n) for n in payload["neurons"]]
            faults = cls(
                payload["model_sha256"],
                payload["granularity"],
                units,
                neurons,
                {k: list(v) for k, v in payload.get("weight_indices", {}).items()},
                {k: list(v) for k, v in payload.get("unit_votes", {}).items()},
                dict(payload.get("settings", {})),
            )
            faults.validate(model, source)
            faults.masks(model)  # a dry run: every index usable on its tensor
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise InputError(
                f"{source}: malformed fault set ({type(exc).__name__}: {exc})"
            ) from None
        return faults

    def validate(self, model: OnnxModel, source: str = "faults") -> None:
        units = {u.name: u for u in model.units}
        for neuron in self.neurons:
            unit: Unit | None = units.get(neuron.unit)
            if isinstance(neuron.index, bool) or not isinstance(neuron.index, int):
                raise InputError(f"{source}: neuron index {neuron.index!r} is not a whole number")
            if unit is None or not 0 <= neuron.index < unit.neurons:
                raise InputError(f"{source}: neuron {neuron.unit}[{neuron.index}] not in the model")
        for name, indices in self.weight_indices.items():
            unit = units.get(name)
            size = int(np.prod(model.initializers[unit.weight].dims)) if unit is not None else 0
            if unit is None or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < size for i in indices
            ):
                raise InputError(f"{source}: weight indices of {name!r} are not in the model")

    def save(self, path: str | Path, model: OnnxModel) -> None:
        from inner_onnx.io.fileio import write_json_atomic

        write_json_atomic(path, self.to_dict(model))


def load_faults(path: str | Path, model: OnnxModel) -> FaultSet:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"fault set not found: {path}")
    try:
        payload = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a JSON fault set ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict):
        raise InputError(f"{path}: not a JSON fault set")
    return FaultSet.from_dict(payload, model, str(path))
