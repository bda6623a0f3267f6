"""The clean-data defences on a backdoored model: the bundled BadNets sample
(samples/torch_badnets, target 0) unless `--folder` names another with its target.

    .venv/bin/python -m benchmarks.defenses [--methods ft_clean,nad] [--anp-iterations N]
        [--folder benchmarks/.cache/zoo/NAME --target-label T] [--seeds 0,1,2]

A folder holds model.onnx, clean.npz, bad.npz, eval.npz and eval_bad.npz, as the bundled
samples and the zoo's models (benchmarks/zoo) do.

Runs every registered method that uses clean data only (`clean_only`) through
`inner_onnx.repair.pipeline.repair` with the backdoor scenario's settings, and prints clean
accuracy and attack success rate before and after (onnxruntime, on eval.npz and
eval_bad.npz, which no repair sees) and the wall time of each; `--json` writes them too.
The bad samples (bad.npz) are passed as the scenario requires, and these methods never
read them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from inner_onnx.context import RunContext
from inner_onnx.io.data import load_npz
from inner_onnx.io.model import OnnxModel
from inner_onnx.measure.evaluation import EvaluationSet
from inner_onnx.repair.methods import METHODS
from inner_onnx.repair.pipeline import repair, settings_for
from inner_onnx.scenarios import BadSource

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "torch_badnets"
TARGET = 0
CLEAN_ONLY = tuple(name for name, method in METHODS.items() if method.clean_only)


def run(
    name: str, seed: int, anp_iterations: int | None, folder: Path = SAMPLE, target: int = TARGET
) -> dict[str, object]:
    model = OnnxModel.load(folder / "model.onnx")
    clean = load_npz(folder / "clean.npz", model)
    source = BadSource("backdoor", bad_path=folder / "bad.npz", target_label=target)
    evaluation = EvaluationSet(
        load_npz(folder / "eval.npz", model),
        load_npz(folder / "eval_bad.npz", model),
        target,
        name="eval",
    )
    if name == "anp" and anp_iterations is not None:
        METHODS["anp"].iterations = anp_iterations  # type: ignore[attr-defined]
    settings = settings_for("backdoor", method=name)
    result = repair(model, clean, source, settings, RunContext(seed=seed), evaluation=evaluation)
    return {
        "model": folder.name,
        "method": name,
        "seed": seed,
        "accuracy_before": result.before.accuracy,
        "asr_before": result.before.asr,
        "accuracy_after": result.after.accuracy,
        "asr_after": result.after.asr,
        "changed": result.changed_count,
        "seconds": result.seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=",".join(CLEAN_ONLY))
    parser.add_argument("--seeds", default="0", help="comma-separated repair seeds")
    parser.add_argument("--folder", type=Path, default=SAMPLE, help="the backdoored model's")
    parser.add_argument("--target-label", type=int, default=TARGET)
    parser.add_argument("--anp-iterations", type=int)
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    print(f"{args.folder.name}, target {args.target_label}\n")
    print("| method | seed | clean acc before | after | ASR before | after | values changed | s |")
    print("|---|---|---|---|---|---|---|---|")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    for name, seed in [(name, seed) for name in args.methods.split(",") for seed in seeds]:
        row = run(name, seed, args.anp_iterations, args.folder, args.target_label)
        rows.append(row)
        print(
            f"| {name} | {seed} | {row['accuracy_before']:.3f} | {row['accuracy_after']:.3f} "
            f"| {row['asr_before']:.3f} | {row['asr_after']:.3f} | {row['changed']} "
            f"| {row['seconds']:.0f} |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
