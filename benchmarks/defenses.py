"""The clean-data defences on the bundled BadNets sample (samples/torch_badnets, target 0).

    .venv/bin/python -m benchmarks.defenses [--methods ft_clean,nad] [--anp-iterations N]

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


def run(name: str, seed: int, anp_iterations: int | None) -> dict[str, object]:
    model = OnnxModel.load(SAMPLE / "model.onnx")
    clean = load_npz(SAMPLE / "clean.npz", model)
    source = BadSource("backdoor", bad_path=SAMPLE / "bad.npz", target_label=TARGET)
    evaluation = EvaluationSet(
        load_npz(SAMPLE / "eval.npz", model),
        load_npz(SAMPLE / "eval_bad.npz", model),
        TARGET,
        name="eval",
    )
    if name == "anp" and anp_iterations is not None:
        METHODS["anp"].iterations = anp_iterations  # type: ignore[attr-defined]
    settings = settings_for("backdoor", method=name)
    result = repair(model, clean, source, settings, RunContext(seed=seed), evaluation=evaluation)
    return {
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--anp-iterations", type=int)
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    print("| method | clean acc before | after | ASR before | after | values changed | s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.methods.split(","):
        row = run(name, args.seed, args.anp_iterations)
        rows.append(row)
        print(
            f"| {name} | {row['accuracy_before']:.3f} | {row['accuracy_after']:.3f} "
            f"| {row['asr_before']:.3f} | {row['asr_after']:.3f} | {row['changed']} "
            f"| {row['seconds']:.0f} |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
