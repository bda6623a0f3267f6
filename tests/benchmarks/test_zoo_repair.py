"""The zoo benchmark judges each run by issue 12's targets on the evaluation data, and gives
backdoor repairs their bad samples or, clean-only, none."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.zoo.load import ZooModel
from benchmarks.zoo.manifest import ZOO
from benchmarks.zoo_repair import eval_missed, source_for
from inner_onnx.measure.metrics import Metrics


def metrics(
    accuracy: float,
    per_class: list[float | None],
    asr: float | None = None,
    robust: float | None = None,
) -> Metrics:
    present = [a for a in per_class if a is not None]
    gap = sum(present) / len(present) - min(present)
    return Metrics(accuracy, per_class, gap, asr=asr, robust_accuracy=robust)


BEFORE = metrics(0.90, [0.8, 1.0], asr=0.95, robust=0.10)


def test_a_backdoor_repair_within_every_tolerance_meets_the_targets() -> None:
    # exactly 1 pt lower and the gap exactly 1 pt wider still count as met
    after = metrics(0.89, [0.78, 1.0], asr=0.02)
    assert eval_missed("backdoor", BEFORE, after) == []


@pytest.mark.parametrize(
    ("after", "missed"),
    [
        (metrics(0.90, [0.8, 1.0], asr=0.021), "ASR"),
        (metrics(0.885, [0.8, 1.0], asr=0.0), "accuracy"),
        (metrics(0.90, [0.7, 1.0], asr=0.0), "fairness gap"),
    ],
)
def test_a_backdoor_repair_misses_each_target_on_its_own(after: Metrics, missed: str) -> None:
    result = eval_missed("backdoor", BEFORE, after)
    assert len(result) == 1 and result[0].startswith(missed)


def test_adversarial_targets_need_30_points_of_robust_accuracy_and_at_most_2_lost() -> None:
    assert eval_missed("adversarial", BEFORE, metrics(0.88, [0.8, 1.0], robust=0.40)) == []
    missed = eval_missed("adversarial", BEFORE, metrics(0.87, [0.8, 1.0], robust=0.39))
    assert [m.split()[0] for m in missed] == ["robust", "accuracy"]


def test_wrong_targets_need_the_weakest_class_up_and_no_accuracy_lost() -> None:
    # the weakest class may change: its accuracy, whichever class it is, must rise
    assert eval_missed("wrong", BEFORE, metrics(0.90, [0.9, 0.85])) == []
    missed = eval_missed("wrong", BEFORE, metrics(0.899, [0.8, None]))
    assert [m.split()[0] for m in missed] == ["accuracy", "weakest"]


def test_clean_only_gives_a_backdoor_model_no_bad_samples_but_its_target() -> None:
    entry = next(e for e in ZOO if e.scenario == "backdoor")
    zoo = ZooModel(entry, Path("unused"))
    known = source_for(zoo)
    assert known.bad_path is not None and known.target_label == entry.target_class
    scanned = source_for(zoo, clean_only=True)
    assert scanned.bad_path is None and scanned.trigger is None
    assert scanned.target_label == entry.target_class
