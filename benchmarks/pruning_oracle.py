"""How far pruning can remove a backdoor, with the trigger known: an upper bound for ANP
(issue 13 asks, for a defence that misses ASR <= 5 %, a measurement of why).

    .venv/bin/python -m benchmarks.pruning_oracle [--zoo NAME,NAME | --folder DIR
        --target-label T] [--max-pruned 48] [--anp-iterations 2000] [--seed 0]
        [--ft-sam] [--json FILE]

ANP's edit is to zero neurons: a BatchNormalization channel's scale, or (no BatchNorm) a
unit's weight slice, over the neurons `inner_onnx.repair.methods.anp.neuron_groups` names.
Two orders of pruning those neurons, one at a time:

- the oracle: greedy, each step prunes the neuron whose removal lowers most the ASR plus the
  clean-accuracy drop on a selection set it may look at (clean.npz and bad.npz, i.e. it
  knows the trigger, which ANP does not);
- ANP's: the masks of `optimize_masks` (the reference's 2,000 iterations on clean.npz),
  smallest first, as `prune_neuron_cifar.py --pruning-by number` walks them.

Both paths are measured on eval.npz / eval_bad.npz, which neither saw, in the torch view;
the oracle's first model at selection ASR <= 5 % is written back and measured again in
onnxruntime. If the oracle cannot get there at an accuracy the defence is allowed to lose,
no pruning defence can on that model; if it can with a few neurons, the perturbation
signal of ANP is what misses them, and the table says where they sit in ANP's order.

`--ft-sam` also tests FT-SAM's premise on the oracle's neurons. FT-SAM (Zhu et al., ICCV
2023, Sec. 3) rests on backdoor neurons having larger weight norms, which its adaptive ball
(ρ·|w|) shakes hardest. Reported: where the oracle's neurons rank by |scale| and by the norm
of the filter feeding them (largest first), then one FT-SAM repair (`ft_sam`, clean.npz
only, the reference recipe) and how far it moved each oracle neuron's scale against the
median neuron, with its eval ASR.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from onnx import numpy_helper

from benchmarks.defenses import KIND, Case, zoo_case
from inner_onnx.context import RunContext
from inner_onnx.io.data import Dataset, load_npz
from inner_onnx.io.fileio import write_json_atomic
from inner_onnx.io.model import OnnxModel, model_weights
from inner_onnx.measure.evaluation import EvaluationSet, evaluate
from inner_onnx.measure.metrics import accuracy, attack_success_rate
from inner_onnx.repair.methods.anp import (
    ANP_ITERATIONS,
    ANP_THRESHOLD,
    NeuronGroup,
    neuron_groups,
    optimize_masks,
    scaled,
)
from inner_onnx.repair.pipeline import repair, settings_for
from inner_onnx.runtime import Runner
from inner_onnx.scenarios import BadSource
from inner_onnx.scenarios.base import predict_labels
from inner_onnx.torchview import TorchView

SELECTION = 500  # images of each kind the oracle looks at
TARGET_ASR = 0.05  # issue 13's done criterion
BATCH = 250


@dataclass
class Scorer:
    """Clean accuracy and ASR of the view with some neurons zeroed, on one pair of sets."""

    view: TorchView
    groups: list[NeuronGroup]
    clean: Dataset
    bad: Dataset
    target: int

    def __call__(self, keep: list[torch.Tensor]) -> tuple[float, float]:
        overrides = scaled(self.view, self.groups, keep, None)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return self.view(x, overrides=overrides)

        clean = predict_labels(forward, self.clean.x, BATCH)
        bad = predict_labels(forward, self.bad.x, BATCH)
        return accuracy(clean, self.clean.y), attack_success_rate(bad, self.bad.y, self.target)


def neurons(groups: list[NeuronGroup]) -> list[tuple[int, int]]:
    return [(g, n) for g, group in enumerate(groups) for n in range(group.neurons)]


def pruned_keep(groups: list[NeuronGroup], pruned: list[tuple[int, int]]) -> list[torch.Tensor]:
    keep = [torch.ones(group.neurons) for group in groups]
    for g, n in pruned:
        keep[g][n] = 0.0
    return keep


def oracle_order(select: Scorer, max_pruned: int) -> tuple[list[tuple[int, int]], float]:
    """Greedy: each step the neuron whose removal minimizes ASR + accuracy drop; the order,
    and the selection ASR it ends at."""
    base_accuracy, _ = select(pruned_keep(select.groups, []))
    pruned: list[tuple[int, int]] = []
    asr = 1.0
    left = neurons(select.groups)
    while len(pruned) < max_pruned and left:
        scores = []
        for candidate in left:
            accuracy, asr = select(pruned_keep(select.groups, [*pruned, candidate]))
            scores.append(asr + max(0.0, base_accuracy - accuracy))
        best = left[int(np.argmin(scores))]
        pruned.append(best)
        left.remove(best)
        _, asr = select(pruned_keep(select.groups, pruned))
        print(
            f"  oracle {len(pruned):3d}: group {best[0]} neuron {best[1]}, selection ASR {asr:.3f}",
            flush=True,
        )
        if asr <= TARGET_ASR:
            break
    return pruned, asr


def path(scorer: Scorer, order: list[tuple[int, int]]) -> list[dict[str, float]]:
    steps = []
    for k in range(len(order) + 1):
        accuracy, asr = scorer(pruned_keep(scorer.groups, order[:k]))
        steps.append({"pruned": k, "accuracy": accuracy, "asr": asr})
    return steps


def onnx_check(
    model: OnnxModel,
    groups: list[NeuronGroup],
    pruned: list[tuple[int, int]],
    evaluation: EvaluationSet,
) -> dict[str, float]:
    view = model.torch_view(frozen=True)
    keep = pruned_keep(groups, pruned)
    with torch.no_grad():
        for name, value in scaled(view, groups, keep, None).items():
            view.parameter(name).copy_(value)
    metrics = evaluate(Runner(model.with_proto(view.write_back()), "cpu"), evaluation)
    return {"accuracy": float(metrics.accuracy), "asr": float(metrics.asr)}


def per_neuron_norm(values: np.ndarray, group: NeuronGroup) -> np.ndarray:
    """L2 norm of each neuron's slice of a group's scale (|scale| for a BatchNorm channel)."""
    axis = next((a for a, size in enumerate(group.shape) if size == group.neurons), 0)
    rows = np.moveaxis(values, axis, 0).reshape(group.neurons, -1)
    return np.linalg.norm(rows, axis=1)


def neuron_norms(model: OnnxModel, groups: list[NeuronGroup]) -> dict[str, np.ndarray]:
    """Per neuron, in `neurons(groups)` order: the norm of its scale slice, and the L2 norm
    of the filter of the Conv feeding its BatchNormalization (NaN where none does)."""
    graph = model.proto.graph
    producers = {out: node for node in graph.node for out in node.output}
    bn_input = {
        node.input[1]: node.input[0] for node in graph.node if node.op_type == "BatchNormalization"
    }
    scales, filters = [], []
    for group in groups:
        scales.append(
            per_neuron_norm(numpy_helper.to_array(model.initializers[group.scale]), group)
        )
        feeder = producers.get(bn_input.get(group.scale, ""))
        if feeder is not None and feeder.op_type == "Conv":
            weight = numpy_helper.to_array(model.initializers[feeder.input[1]])
            filters.append(np.linalg.norm(weight.reshape(len(weight), -1), axis=1))
        else:
            filters.append(np.full(group.neurons, np.nan))
    return {"scale": np.concatenate(scales), "filter": np.concatenate(filters)}


def ranks_largest_first(values: np.ndarray, picked: list[int]) -> list[int | None]:
    """Each picked neuron's rank (0 = largest) among the neurons with a value."""
    order = [i for i in np.argsort(-values, kind="stable").tolist() if not np.isnan(values[i])]
    where = {neuron: rank for rank, neuron in enumerate(order)}
    return [where.get(i) for i in picked]


def ft_sam_premise(
    case: Case,
    model: OnnxModel,
    groups: list[NeuronGroup],
    oracle: list[tuple[int, int]],
    clean: Dataset,
    evaluation: EvaluationSet,
    seed: int,
    epochs: int | None = None,
) -> dict[str, object]:
    """The oracle's neurons' norm ranks, and how far one FT-SAM repair on `clean` (the
    reference's epochs unless `epochs`) moves their scales."""
    index = neurons(groups)
    picked = [index.index(neuron) for neuron in oracle]
    norms = neuron_norms(model, groups)
    source = BadSource(KIND, bad_path=case.folder / "bad.npz", target_label=case.target)
    result = repair(
        model,
        clean,
        source,
        settings_for(KIND, method="ft_sam", epochs=epochs),
        RunContext(seed=seed),
        evaluation=evaluation,
    )
    after = model_weights(result.proto.graph)
    shifts = [
        numpy_helper.to_array(after[g.scale]) - numpy_helper.to_array(model.initializers[g.scale])
        for g in groups
    ]
    shift_norms = np.concatenate([per_neuron_norm(d, g) for d, g in zip(shifts, groups)])
    moved = shift_norms / np.maximum(norms["scale"], 1e-12)
    return {
        "oracle_scale_rank": ranks_largest_first(norms["scale"], picked),
        "oracle_filter_norm_rank": ranks_largest_first(norms["filter"], picked),
        "ft_sam_asr": float(result.after.asr),
        "ft_sam_accuracy": float(result.after.accuracy),
        "ft_sam_seconds": result.seconds,
        "oracle_scale_relative_change": [float(moved[i]) for i in picked],
        "median_scale_relative_change": float(np.median(moved)),
        "oracle_scale_change_rank": ranks_largest_first(moved, picked),
    }


def measure(
    case: Case, max_pruned: int, anp_iterations: int, seed: int, with_ft_sam: bool = False
) -> dict[str, object]:
    model = OnnxModel.load(case.folder / "model.onnx")
    groups = neuron_groups(model)
    view = model.torch_view(frozen=True)
    clean = load_npz(case.folder / "clean.npz", model)
    bad = load_npz(case.folder / "bad.npz", model)
    evaluation = EvaluationSet(
        load_npz(case.folder / "eval.npz", model),
        load_npz(case.folder / "eval_bad.npz", model),
        case.target,
    )
    eligible = np.flatnonzero(bad.y != case.target)[:SELECTION]
    select = Scorer(
        view,
        groups,
        clean.subset(np.arange(min(SELECTION, len(clean)))),
        bad.subset(eligible),
        case.target,
    )
    held = Scorer(view, groups, evaluation.data, evaluation.bad, case.target)
    print(f"{case.name}: {len(neurons(groups))} neurons in {len(groups)} groups", flush=True)
    started = time.perf_counter()
    oracle, selection_asr = oracle_order(select, max_pruned)
    oracle_seconds = time.perf_counter() - started
    started = time.perf_counter()
    masks = optimize_masks(
        model.torch_view(),
        groups,
        torch.from_numpy(np.asarray(clean.x)),
        torch.from_numpy(clean.y.astype(np.int64)),
        anp_iterations,
        seed,
    )
    anp_seconds = time.perf_counter() - started
    flat = torch.cat(masks)
    index = neurons(groups)
    anp_order = [index[i] for i in torch.argsort(flat, stable=True).tolist()]
    rank = {neuron: r for r, neuron in enumerate(anp_order)}
    reached = selection_asr <= TARGET_ASR
    return {
        "model": case.name,
        "neurons": len(index),
        "groups": "BatchNormalization" if "BatchNormalization" in model.op_types() else "units",
        "seed": seed,
        "anp_iterations": anp_iterations,
        "anp_below_threshold": int((flat <= ANP_THRESHOLD).sum()),
        "oracle_reached_target_on_selection": reached,
        "oracle": path(held, oracle),
        "oracle_onnx": onnx_check(model, groups, oracle, evaluation) if reached else None,
        "oracle_neurons_anp_rank": [rank[n] for n in oracle],
        "oracle_neurons_anp_mask": [float(masks[g][n]) for g, n in oracle],
        "anp_order": path(held, anp_order[: len(oracle)]),
        "oracle_neurons": [[groups[g].scale, n] for g, n in oracle],
        "ft_sam": (
            ft_sam_premise(case, model, groups, oracle, clean, evaluation, seed)
            if with_ft_sam
            else None
        ),
        "seconds": {"oracle": oracle_seconds, "anp_masks": anp_seconds},
    }


def report(result: dict) -> None:
    print(
        f"\n{result['model']} ({result['neurons']} neurons, {result['groups']}); ANP masks <= "
        f"{ANP_THRESHOLD}: {result['anp_below_threshold']}"
    )
    print("| pruned | oracle acc | oracle ASR | ANP-order acc | ANP-order ASR |")
    print("|---|---|---|---|---|")
    for o, a in zip(result["oracle"], result["anp_order"]):
        cells = [o["accuracy"], o["asr"], a["accuracy"], a["asr"]]
        print(f"| {o['pruned']} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
    print(
        f"oracle's neurons: ANP rank {result['oracle_neurons_anp_rank']}, mask "
        f"{[round(m, 2) for m in result['oracle_neurons_anp_mask']]}"
    )
    if result["oracle_onnx"]:
        print(f"oracle model in onnxruntime: {result['oracle_onnx']}")
    if result["ft_sam"]:
        print(f"FT-SAM's premise on the oracle's neurons: {result['ft_sam']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--zoo", default="keras_vgg_fmnist3_checker3_bl", help="zoo models, comma-separated"
    )
    parser.add_argument("--folder", type=Path, help="a model folder instead of --zoo")
    parser.add_argument("--target-label", type=int)
    parser.add_argument("--max-pruned", type=int, default=48)
    parser.add_argument("--anp-iterations", type=int, default=ANP_ITERATIONS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ft-sam", action="store_true", help="also test FT-SAM's premise")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.folder is not None:
        if args.target_label is None:
            parser.error("--folder needs --target-label")
        cases = [Case(args.folder.name, args.folder, args.target_label)]
    else:
        cases = [zoo_case(name) for name in args.zoo.split(",")]
    results = []
    for case in cases:
        results.append(measure(case, args.max_pruned, args.anp_iterations, args.seed, args.ft_sam))
        report(results[-1])
        if args.json:
            write_json_atomic(args.json, results)


if __name__ == "__main__":
    main()
