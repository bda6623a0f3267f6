"""The scenario registry: each scenario's sources, objective, targets and defaults."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inner_onnx.errors import InputError
from inner_onnx.io.data import Dataset
from inner_onnx.repair.settings import StoppingRule
from inner_onnx.scenarios import (
    SCENARIOS,
    BadSamples,
    BadSource,
    Measurement,
    bad_source,
    scenario_named,
)
from inner_onnx.scenarios.base import Sampler

RULE = StoppingRule()
START = Measurement(0.90, 0.95, 0.10, "asr")


def test_registry_holds_the_three_defects_in_design_order() -> None:
    assert list(SCENARIOS)[:3] == ["backdoor", "adversarial", "wrong"]
    for name, scenario in SCENARIOS.items():
        assert scenario.name == name and scenario.summary
        scenario.default_settings()  # valid typed defaults


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scenario": "adversarial"}, "needs --attack"),
        ({"scenario": "backdoor", "attack": "x"}, "does not fit --scenario backdoor"),
        ({"scenario": "nonsense", "bad_path": Path("b.npz")}, "unknown scenario"),
        ({"scenario": "wrong", "bad_path": Path("b.npz")}, "does not fit"),
        ({"scenario": "adversarial", "bad_path": Path("b.npz")}, "use --attack"),
        ({"scenario": None}, "give --bad"),
        ({"scenario": None, "bad_path": Path("b.npz"), "attack": "x"}, "give one source"),
    ],
)
def test_bad_source_combinations(options: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        bad_source(**options)


def test_scenario_follows_from_the_option_when_not_named() -> None:
    assert bad_source(None, bad_path=Path("b.npz")).scenario == "backdoor"


def test_backdoor_objective_prefers_low_asr_and_punishes_lost_accuracy() -> None:
    backdoor = scenario_named("backdoor")
    fixed = Measurement(0.90, 0.01, 0.10, "asr")
    wrecked = Measurement(0.70, 0.00, 0.10, "asr")
    assert backdoor.objective(fixed, START, RULE) > backdoor.objective(START, START, RULE)
    assert backdoor.objective(fixed, START, RULE) > backdoor.objective(wrecked, START, RULE)
    assert backdoor.targets_met(fixed, START, RULE) is True
    assert backdoor.targets_met(wrecked, START, RULE) is False
    wider_gap = Measurement(0.90, 0.01, 0.15, "asr")
    assert backdoor.targets_met(wider_gap, START, RULE) is False
    # without a target class the bad figure is bad-sample accuracy: higher is better
    low, high = (Measurement(0.9, v, 0.1, "bad_accuracy") for v in (0.2, 0.8))
    assert backdoor.objective(high, low, RULE) > backdoor.objective(low, low, RULE)
    assert backdoor.targets_met(high, low, RULE) is False


def test_adversarial_and_wrong_objectives() -> None:
    adversarial, wrong = scenario_named("adversarial"), scenario_named("wrong")
    start = Measurement(0.9, 0.2, 0.1, "robust_accuracy")
    robust = Measurement(0.9, 0.6, 0.1, "robust_accuracy")
    assert adversarial.objective(robust, start, RULE) > adversarial.objective(start, start, RULE)
    fairer = Measurement(0.9, None, 0.05)
    assert wrong.objective(fairer, Measurement(0.9, None, 0.1), RULE) > wrong.objective(
        Measurement(0.9, None, 0.1), Measurement(0.9, None, 0.1), RULE
    )
    assert adversarial.targets_met(robust, start, RULE) is True  # +40 pt, accuracy kept
    small_gain = Measurement(0.9, 0.3, 0.1, "robust_accuracy")
    assert adversarial.missed_targets(small_gain, start, RULE) == [
        "robust accuracy up 10.0 pt, below the 30 pt target"
    ]


def test_wrong_targets_need_the_weakest_class_up_and_accuracy_kept() -> None:
    wrong = scenario_named("wrong")
    start = Measurement(0.80, None, 0.30, weakest=0.40)
    assert wrong.targets_met(Measurement(0.81, None, 0.2, weakest=0.6), start, RULE) is True
    assert wrong.targets_met(Measurement(0.79, None, 0.2, weakest=0.6), start, RULE) is False
    assert wrong.targets_met(Measurement(0.85, None, 0.3, weakest=0.4), start, RULE) is False


def test_bootstrap_confidence_is_high_when_the_margin_is_wide() -> None:
    from inner_onnx.scenarios.base import bootstrap_confidence

    backdoor = scenario_named("backdoor")
    y = np.repeat(np.arange(3), 40)
    start = Measurement(1.0, 1.0, 0.0, "asr", 1.0, y.copy(), y, np.ones(60))
    clean_now = Measurement(1.0, 0.0, 0.0, "asr", 1.0, y.copy(), y, np.zeros(60))
    assert bootstrap_confidence(backdoor, clean_now, start, RULE) == 1.0
    hits = np.zeros(60)
    hits[:6] = 1  # ASR 10 %: above the 2 % target on nearly every resample
    still = Measurement(1.0, 0.1, 0.0, "asr", 1.0, y.copy(), y, hits)
    assert bootstrap_confidence(backdoor, still, start, RULE) < 0.05


def _sampler(predictions: np.ndarray) -> Sampler:
    return Sampler(model=None, predict=lambda x: predictions[: len(x)], forward=None)  # type: ignore[arg-type]


def test_wrong_bad_samples_are_the_misclassified_ones() -> None:
    data = Dataset(np.arange(8, dtype=np.float32).reshape(8, 1), np.array([0, 1] * 4), "d")
    predictions = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    bad = scenario_named("wrong").bad_samples(bad_source("wrong"), data, _sampler(predictions))
    assert isinstance(bad, BadSamples)
    assert bad.data.x.ravel().tolist() == [1.0, 4.0]
    with pytest.raises(InputError, match="classifies every sample right"):
        scenario_named("wrong").bad_samples(bad_source("wrong"), data, _sampler(data.y))


def test_backdoor_split_never_shares_a_source_sample() -> None:
    y = np.repeat(np.arange(3), 10)
    given = Dataset(np.arange(30, dtype=np.float32).reshape(30, 1), y, "bad")
    source = BadSource("backdoor", target_label=0, bad_data=given)
    held = Dataset(np.zeros((3, 1), np.float32), np.arange(3), "held")
    train_bad, held_bad = scenario_named("backdoor").split_bad(
        source, held, held, 0.2, _sampler(np.zeros(30, int))
    )
    assert not set(train_bad.data.x.ravel()) & set(held_bad.data.x.ravel())
    assert len(train_bad.data) + len(held_bad.data) == 30
    assert train_bad.target_label == held_bad.target_label == 0
