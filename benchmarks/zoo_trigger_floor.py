"""How often a never-poisoned model lands a zoo backdoor's triggered images on its target.

An ASR target is only reachable without cost if a clean model of the same data rarely
puts the triggered images on the attacker's class anyway. When the target class is one the
data confuses with others (Fashion-MNIST's shirts and pullovers), a clean model already
"obeys" the trigger on several percent of the images, and a repair that must go below that
has to take predictions away from the target class itself, which the fairness gap sees.

For every built backdoor model of the zoo this prints, through onnxruntime on the model's
own eval_bad.npz (triggered eval images, none of the target class) and eval.npz:
- the rate at which each clean zoo model of the same data predicts the target class on
  the triggered images (the floor a repaired model is measured against), and on the clean
  images not of the target class;
- the backdoored model's own rate on those clean images.
Clean references are the zoo's trigger-free models without an under-sampled class (the
adversarial scenario's); fmnist3 has none, so its rows say so.

    .venv/bin/python -m benchmarks.zoo_trigger_floor [--zoo DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.zoo.load import DEFAULT_ZOO_DIR, ZooModel, zoo_models
from inner_onnx.cli.app import load_checked
from inner_onnx.runtime import predict


def images_for(reference: ZooModel, x: np.ndarray, layout: str) -> np.ndarray:
    """`x` (in `layout`) in the reference model's layout."""
    wanted = reference.meta["input_layout"]
    if layout == wanted:
        return x
    return x.transpose(0, 3, 1, 2) if layout == "NHWC" else x.transpose(0, 2, 3, 1)


def target_rate(model: ZooModel, x: np.ndarray, target: int) -> float:
    return float(np.mean(predict(load_checked(model.model_path), x, device="cpu") == target))


def rows(zoo: list[ZooModel]) -> list[str]:
    references = [z for z in zoo if z.entry.scenario == "adversarial"]
    lines = [
        "| backdoor model | half | target | clean reference | triggered → target | "
        "clean non-target → target | backdoored model, clean non-target → target |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for model in (z for z in zoo if z.entry.scenario == "backdoor"):
        target = model.entry.target_class
        assert target is not None
        layout = model.meta["input_layout"]
        triggered = np.load(model.eval_bad_path)["x"]
        evaluation = np.load(model.eval_path)
        others = evaluation["x"][evaluation["y"] != target]
        own = target_rate(model, others, target)
        same_data = [r for r in references if r.entry.dataset == model.entry.dataset]
        for reference in same_data or [None]:
            if reference is None:
                floor, clean = "no clean model of this data", "–"
            else:
                on_triggered = images_for(reference, triggered, layout)
                on_clean = images_for(reference, others, layout)
                floor = f"{100 * target_rate(reference, on_triggered, target):.1f} %"
                clean = f"{100 * target_rate(reference, on_clean, target):.1f} %"
            name = "–" if reference is None else reference.entry.name
            lines.append(
                f"| {model.entry.name} | {model.entry.half} | {target} | {name} | {floor} | "
                f"{clean} | {100 * own:.1f} % |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=DEFAULT_ZOO_DIR, help="built zoo folder")
    args = parser.parse_args()
    print("\n".join(rows(zoo_models(root=args.zoo))))


if __name__ == "__main__":
    main()
