"""Fault localization on the bundled backdoored samples (PyTorch and Keras exports)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from inner_onnx.io.data import Dataset, load_npz
from inner_onnx.io.model import OnnxModel
from inner_onnx.io.samples import SAMPLES_ROOT
from inner_onnx.localize.pipeline import Localization, LocalizeSettings, localize
from inner_onnx.localize.routing import RoutingSettings
from inner_onnx.measure.metrics import attack_success_rate
from inner_onnx.runtime import Runner
from inner_onnx.torchview import TorchView

SAMPLES = [
    name
    for name in ("torch_badnets", "keras_badnets")
    if (SAMPLES_ROOT / name / "model.onnx").is_file()
]
TARGET = 0


class Localized:
    def __init__(self, name: str):
        folder = SAMPLES_ROOT / name
        self.model = OnnxModel.load(folder / "model.onnx")
        self.clean = load_npz(folder / "clean.npz", self.model)
        self.bad = load_npz(folder / "bad.npz", self.model)
        self.eval_bad = load_npz(folder / "eval_bad.npz", self.model)
        self.runner = Runner(self.model, "cpu")
        self.result = self.run()

    def run(self) -> Localization:
        view = TorchView(self.model.proto, outputs=[self.model.logits_name]).eval()
        # The top rule: whether the most-voted neurons carry the backdoor, against as many
        # random ones (the default union rule keeps 16 of 16, 11 of 32 and 6 of 10 neurons of
        # the PyTorch sample's selected units, so as many random ones do about as much).
        settings = LocalizeSettings(routing=RoutingSettings(fault_rule="top"))
        return localize(self.runner, view, self.clean, self.bad, settings, seed=3)

    def asr_with_neurons_off(self, neurons: list[tuple[str, int]]) -> float:
        """ASR on held-out triggered data with these neurons' weights and biases zeroed."""
        proto = onnx.ModelProto()
        proto.CopyFrom(self.model.proto)
        arrays = {init.name: numpy_helper.to_array(init).copy() for init in proto.graph.initializer}
        for unit_name, index in neurons:
            unit = self.model.unit(unit_name)
            weight = arrays[unit.weight]
            slicer = [slice(None)] * weight.ndim
            slicer[unit.neuron_axis] = index
            weight[tuple(slicer)] = 0
            if unit.bias is not None:
                arrays[unit.bias].reshape(-1)[index] = 0
        for init in proto.graph.initializer:
            init.CopyFrom(numpy_helper.from_array(arrays[init.name], init.name))
        pred = Runner(OnnxModel(proto), "cpu").predict(self.eval_bad.x)
        return attack_success_rate(pred, self.eval_bad.y, TARGET)


@pytest.fixture(scope="module", params=SAMPLES)
def localized(request: pytest.FixtureRequest) -> Localized:
    return Localized(request.param)


def test_samples_present() -> None:
    assert SAMPLES, f"no bundled backdoored samples under {SAMPLES_ROOT}"


def test_fault_neurons_carry_the_backdoor(localized: Localized) -> None:
    faults = localized.result.faults
    chosen = [(n.unit, n.index) for n in faults.neurons]
    assert chosen, "routing found no fault neuron"
    base = localized.asr_with_neurons_off([])
    fault_drop = base - localized.asr_with_neurons_off(chosen)
    rng = np.random.default_rng(0)
    random_drops = []
    for _ in range(5):
        draw = []
        for unit_name in faults.selected_units:
            count = sum(1 for u, _ in chosen if u == unit_name)
            size = localized.model.unit(unit_name).neurons
            draw += [(unit_name, int(i)) for i in rng.choice(size, count, replace=False)]
        random_drops.append(base - localized.asr_with_neurons_off(draw))
    mean_random = float(np.mean(random_drops))
    print(
        f"\nASR {base:.3f}; drop with fault neurons off {fault_drop:.3f}, "
        f"with random neurons off (mean of 5) {mean_random:.3f}"
    )
    assert fault_drop >= 2 * max(mean_random, 0.0) and fault_drop > 0.2


def test_probe_accuracy_rises_with_depth(localized: Localized) -> None:
    accuracy = [u.probe_accuracy for u in localized.result.faults.units]
    assert accuracy[0] < accuracy[-2], accuracy
    assert accuracy[-1] > 0.8


def test_same_inputs_and_seed_give_the_same_fault_set(localized: Localized) -> None:
    again = localized.run()
    model = localized.model
    assert again.faults.to_dict(model) == localized.result.faults.to_dict(model)


def test_fault_set_round_trips_through_json(localized: Localized, tmp_path) -> None:
    from inner_onnx.localize.faults import load_faults

    path = tmp_path / "faults.json"
    localized.result.faults.save(path, localized.model)
    loaded = load_faults(path, localized.model)
    assert loaded.to_dict(localized.model) == localized.result.faults.to_dict(localized.model)
    masks = loaded.masks(localized.model)
    assert sum(int(m.sum()) for m in masks.values()) == loaded.weights_covered(localized.model)


def test_subset_keeps_labels_aligned() -> None:
    data = Dataset(np.arange(10, dtype=np.float32).reshape(10, 1), np.arange(10))
    part = data.subset(np.array([3, 7]))
    assert part.x[:, 0].tolist() == [3.0, 7.0] and part.y.tolist() == [3, 7]
