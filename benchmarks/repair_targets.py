"""The repair targets of each scenario on the bundled samples, measured through onnxruntime.

    .venv/bin/python benchmarks/repair_targets.py [--seeds 0,1,2] [--only NAME] [--method M]

Every figure is computed by onnxruntime on the repaired model as written, on the held-out
`eval.npz` (and `eval_bad.npz`) of each sample, which repair never sees.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from inner_onnx.context import RunContext
from inner_onnx.io.data import load_npz
from inner_onnx.io.model import OnnxModel
from inner_onnx.io.samples import SAMPLES_ROOT
from inner_onnx.io.specs import parse_attack
from inner_onnx.measure.evaluation import EvaluationSet
from inner_onnx.repair.pipeline import repair, settings_for
from inner_onnx.scenarios import bad_source


@dataclass(frozen=True)
class Case:
    name: str
    sample: str
    scenario: str
    # the sample ships bad.npz and eval_bad.npz (a backdoor with target class 0)
    has_bad_files: bool = False
    attack: str | None = None


CASES = [
    Case("backdoor, PyTorch export", "torch_badnets", "backdoor", has_bad_files=True),
    Case("backdoor, Keras export", "keras_badnets", "backdoor", has_bad_files=True),
    Case("adversarial, FGSM eps=0.2", "torch_mnist_clean", "adversarial", attack="fgsm:eps=0.2"),
    Case("wrong predictions, weak class", "torch_weak_class", "wrong"),
]
CLIP = (0.0, 1.0)
TARGET_LABEL = 0


def run(case: Case, seed: int, method: str | None = None) -> dict[str, object]:
    folder: Path = SAMPLES_ROOT / case.sample
    model = OnnxModel.load(folder / "model.onnx")
    clean = load_npz(folder / "clean.npz", model)
    data = load_npz(folder / "eval.npz", model)
    attack = parse_attack(case.attack) if case.attack else None
    source = bad_source(
        case.scenario,
        bad_path=folder / "bad.npz" if case.has_bad_files else None,
        attack=attack,
        target_label=TARGET_LABEL if case.has_bad_files else None,
        clip=CLIP if attack else None,
    )
    evaluation = EvaluationSet(
        data,
        load_npz(folder / "eval_bad.npz", model) if case.has_bad_files else None,
        source.target_label,
        attack,
        source.clip,
        name="eval",
    )
    started = time.perf_counter()
    settings = settings_for(case.scenario, method=method)
    result = repair(model, clean, source, settings, RunContext(seed=seed), evaluation=evaluation)
    seconds = time.perf_counter() - started
    before, after = result.before, result.after
    return {
        "case": case.name,
        "before": before,
        "after": after,
        "changed": result.changed_count / result.weights_total,
        "seconds": seconds,
    }


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="comma-separated repair seeds")
    parser.add_argument("--only", help="run the cases whose sample folder is this")
    parser.add_argument("--method", help="repair method (default: the scenario's default)")
    args = parser.parse_args()
    print(
        "| case | seed | accuracy | min class acc. | fairness gap | ASR | robust acc. "
        "| weights changed | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    for case, seed in ((case, seed) for case in CASES for seed in seeds):
        if args.only and case.sample != args.only:
            continue
        row = run(case, seed, args.method)
        b, a = row["before"], row["after"]
        present_b = [v for v in b.per_class_accuracy if v is not None]
        present_a = [v for v in a.per_class_accuracy if v is not None]

        def pair(before: float | None, after: float | None) -> str:
            return f"{_cell(before)} → {_cell(after)}"

        print(
            f"| {row['case']} | {seed} | {pair(b.accuracy, a.accuracy)} "
            f"| {pair(min(present_b), min(present_a))} "
            f"| {pair(b.fairness_gap, a.fairness_gap)} | {pair(b.asr, a.asr)} "
            f"| {pair(b.robust_accuracy, a.robust_accuracy)} "
            f"| {100 * row['changed']:.2f}% | {row['seconds']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
