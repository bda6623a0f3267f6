"""Neural Cleanse on small CNNs trained here (clean, patch and blend backdoors), through the
ONNX torch view."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from inner_onnx.errors import InputError
from inner_onnx.io.model import OnnxModel
from inner_onnx.scan import NeuralCleanseSettings, ScanResult, scan
from inner_onnx.scan.neural_cleanse import anomaly_indices
from inner_onnx.torchview import TorchView
from tests.support.scan_models import TARGET, bar_images, scan_model_bytes

# Short schedule so a scan of 8 classes takes a few seconds; the gap between a
# backdoor target and the clean classes is already wide after it.
FAST = NeuralCleanseSettings(batches_per_epoch=4, max_epochs=20)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(kind: str | None, channels_last: bool = False) -> tuple[OnnxModel, TorchView]:
    model = OnnxModel(onnx.load_from_string(scan_model_bytes(kind, channels_last)))
    return model, TorchView(model.proto, outputs=[model.logits_name]).eval()


def _data(layout: str = "NCHW") -> tuple[np.ndarray, np.ndarray]:
    x, y = bar_images(240, seed=3)
    return (x.transpose(0, 2, 3, 1).copy() if layout == "NHWC" else x), y


def _scan(kind: str | None, channels_last: bool = False, **kw: object) -> ScanResult:
    model, view = _model(kind, channels_last)
    x, y = _data(model.input.layout)
    return scan(view, x, y, model.input.layout, model.num_classes, settings=FAST, **kw)


def _onnx_asr(kind: str | None, x: np.ndarray, y: np.ndarray, channels_last: bool) -> float:
    session = ort.InferenceSession(scan_model_bytes(kind, channels_last))
    pred = session.run(None, {session.get_inputs()[0].name: x})[0].argmax(1)
    return float(np.mean(pred[y != TARGET] == TARGET))


@pytest.mark.parametrize("kind", ["patch", "blend"])
def test_backdoored_model_is_flagged_with_its_target(kind: str) -> None:
    result = _scan(kind)
    assert result.target_label == TARGET
    assert result.flagged[0] == TARGET
    norms = {c.label: c.mask_l1 for c in result.classes}
    assert norms[TARGET] == min(norms.values())


def test_clean_model_flags_nothing() -> None:
    result = _scan(None)
    assert result.flagged == []
    assert result.target_label is None
    assert len(result.classes) == 8


def test_nhwc_model_is_scanned_in_its_own_layout() -> None:
    model, _ = _model("patch", channels_last=True)
    assert model.input.layout == "NHWC"
    result = _scan("patch", channels_last=True)
    assert result.target_label == TARGET
    trigger = result.triggers[TARGET]
    assert trigger.mask.shape == (12, 12, 1)
    assert trigger.pattern.shape == (12, 12, 1)
    # The reversed mask sits on the true trigger, the 2x2 corner at rows/columns 10-11.
    corner = trigger.mask[10:, 10:, 0].sum()
    assert corner > 0.5 * trigger.mask.sum()


@pytest.mark.parametrize("channels_last", [False, True])
def test_stamped_clean_samples_give_high_asr_in_onnxruntime(channels_last: bool) -> None:
    result = _scan("patch", channels_last, classes=[TARGET, 3, 5])
    layout = "NHWC" if channels_last else "NCHW"
    x, y = bar_images(200, seed=7)  # samples the scan never saw
    x = x.transpose(0, 2, 3, 1).copy() if channels_last else x
    stamped = result.stamp(x, TARGET)
    assert stamped.shape == x.shape and stamped.dtype == np.float32
    assert _onnx_asr("patch", stamped, y, channels_last) >= 0.9
    assert _onnx_asr("patch", x, y, channels_last) < 0.1
    assert result.layout == layout
    bad_x, bad_y = result.bad_samples(x, y, TARGET)
    assert TARGET not in bad_y and len(bad_y) == np.sum(y != TARGET)
    assert _onnx_asr("patch", bad_x, bad_y, channels_last) >= 0.9


def test_reversed_trigger_stays_in_the_data_range() -> None:
    result = _scan("blend", classes=[TARGET, 1, 2])
    lo, hi = result.input_range
    for trigger in result.triggers.values():
        assert trigger.mask.min() >= 0 and trigger.mask.max() <= 1
        assert trigger.pattern.min() >= lo and trigger.pattern.max() <= hi


def test_attack_success_is_measured_on_held_samples() -> None:
    result = _scan("patch", classes=[TARGET, 4, 6])
    success = {c.label: c.attack_success for c in result.classes}
    assert success[TARGET] >= 0.9
    assert all(0.0 <= value <= 1.0 for value in success.values())
    # A class whose samples are all of the target has no eligible sample: 0, not NaN.
    model, view = _model("patch")
    x, y = _data()
    only_target = scan(
        view, x[y == 1], y[y == 1], "NCHW", model.num_classes, classes=[1], settings=FAST
    )
    assert only_target.classes[0].attack_success == 0.0


def test_time_budget_stops_before_the_next_class() -> None:
    result = _scan("patch", time_budget=0.0)
    # The budget is checked before each class: the first one runs, the rest are skipped.
    assert result.scanned == [0]
    assert result.skipped == list(range(1, 8))
    assert result.budget_exhausted
    # One class gives no anomaly statistic, so nothing is flagged.
    assert result.classes[0].anomaly_index is None
    assert result.flagged == []


def test_same_seed_same_result_other_seed_other_start() -> None:
    first = _scan("patch", classes=[TARGET, 1, 2], seed=5)
    again = _scan("patch", classes=[TARGET, 1, 2], seed=5)
    other = _scan("patch", classes=[TARGET, 1, 2], seed=6)
    for label in (TARGET, 1, 2):
        np.testing.assert_array_equal(first.triggers[label].mask, again.triggers[label].mask)
        np.testing.assert_array_equal(first.triggers[label].pattern, again.triggers[label].pattern)
    assert not np.array_equal(first.triggers[1].pattern, other.triggers[1].pattern)


def test_to_dict_is_json() -> None:
    result = _scan("patch", classes=[TARGET, 1, 2])
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["scanned"] == [TARGET, 1, 2]
    assert payload["target_label"] == result.target_label
    assert {"label", "mask_l1", "attack_success", "anomaly_index"} <= set(payload["classes"][0])
    assert payload["settings"]["learning_rate"] == 0.1


def test_view_parameters_collect_no_gradient() -> None:
    model, view = _model("patch")
    x, y = _data()
    scan(view, x, y, model.input.layout, model.num_classes, classes=[TARGET], settings=FAST)
    assert all(p.grad is None for p in view.parameters())


def test_flat_inputs_get_a_mask_over_features() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(6, 3)
    x = np.random.default_rng(0).random((40, 6)).astype(np.float32)
    y = np.zeros(40, dtype=np.int64)
    result = scan(linear, x, y, "NC", 3, settings=NeuralCleanseSettings(max_epochs=2))
    assert result.triggers[0].mask.shape == (6,)
    assert result.triggers[0].pattern.shape == (6,)
    assert result.stamp(x, 1).shape == x.shape


def test_anomaly_index_follows_the_reference_formula() -> None:
    norms = [10.0, 30.0, 32.0, 28.0, 31.0]
    # Deviations from the median 30 are 20, 0, 2, 2, 1: their median is 2.
    median, mad = 30.0, 1.4826 * 2.0
    assert anomaly_indices(norms) == pytest.approx([(median - n) / mad for n in norms])
    assert anomaly_indices([1.0, 2.0]) is None
    logs = np.log(norms)
    log_mad = 1.4826 * np.median(np.abs(logs - np.median(logs)))
    expected = (np.median(logs) - logs) / log_mad
    assert anomaly_indices(norms, log_norms=True) == pytest.approx(expected.tolist())


@pytest.mark.parametrize(
    ("layout", "shape", "classes"),
    [("other", (4, 2, 3), None), ("NCHW", (4, 6), None), ("NC", (4, 6), [3]), ("NC", (4, 6), [])],
)
def test_bad_input_is_refused(
    layout: str, shape: tuple[int, ...], classes: list[int] | None
) -> None:
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    with pytest.raises(InputError):
        scan(torch.nn.Flatten(), x, np.zeros(4, dtype=np.int64), layout, 3, classes=classes)
