"""Build the model zoo: train, export, verify in onnxruntime, write data files, measure.

    python -m benchmarks.zoo.build [--only NAME ...] [--half tuning|held-out]
                                   [--out DIR] [--quick] [--jobs N] [--markdown]

Per model, DIR/NAME/ gets model.onnx, clean.npz (repair data), eval.npz
(held-out evaluation, never for repair), meta.json (the manifest entry and what
onnxruntime measured) and, for a backdoor, bad.npz (triggered repair inputs with
their true labels, none of the target class), eval_bad.npz (the trigger on
eval.npz's first images not of the target class) and, for a patch or blend,
trigger.npy. A model whose meta.json carries the current cache key is reused.

Torch runs on one thread per model and every random choice comes from the
entry's seed, so a rebuild on the same library versions gives the same files;
`--jobs 2` builds two models at a time on a 2-core machine. `--quick` trains on
fewer images for fewer epochs, into its own folder: for tests only.

Exit status 1 if a model does not carry its defect (backdoor ASR below 90 %,
weak class not 15 points below every other class, FGSM robust accuracy of a
clean model above 50 %); its files are written anyway.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from benchmarks.zoo.architectures import build_module
from benchmarks.zoo.datasets import (
    NUM_CLASSES,
    QUICK_EPOCHS,
    Arrays,
    input_shape,
    load_zoo_data,
)
from benchmarks.zoo.load import DEFAULT_ZOO_DIR, QUICK_ZOO_DIR, cache_key, is_built
from benchmarks.zoo.manifest import HALVES, ZooEntry, entries, entry_named
from benchmarks.zoo.triggers import apply_trigger, trigger_pattern, trigger_spec
from converters.torch_to_onnx import export_torch
from converters.verify import DEFAULT_TOLERANCE, random_batches

BATCH_SIZE = 64
LEARNING_RATE = 2e-3
# Keras' sparse_categorical_crossentropy clips probabilities to [eps, 1-eps] before the log.
KERAS_EPSILON = 1e-7
MIN_BACKDOOR_ASR = 0.90
# The under-sampled class must trail the next weakest by this much to be the defect.
MIN_WEAK_CLASS_MARGIN = 0.15
# A clean model whose FGSM robust accuracy is above this leaves too little to repair.
MAX_CLEAN_ROBUST_ACCURACY = 0.5
PREDICT_BATCH = 500


def to_layout(x: np.ndarray, entry: ZooEntry) -> np.ndarray:
    """NCHW images in the model's own input layout (NHWC for the Keras pattern)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if entry.exporter == "keras" else x


def poison(entry: ZooEntry, train: Arrays, rng: np.random.Generator) -> Arrays:
    """The training set with `poison_rate` of it triggered and relabelled to the target.

    Poisoned images are drawn from the other classes, so every one of them teaches
    the shortcut."""
    if entry.trigger is None or entry.target_class is None:
        return train
    candidates = np.flatnonzero(train.y != entry.target_class)
    chosen = rng.choice(candidates, size=int(entry.poison_rate * len(train.y)), replace=False)
    x, y = train.x.copy(), train.y.copy()
    x[chosen] = apply_trigger(entry.trigger, x[chosen])
    y[chosen] = entry.target_class
    return Arrays(x, y)


def loss_of(entry: ZooEntry, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the model's output: logits, or the Keras pattern's probabilities."""
    if entry.exporter == "keras":
        return nn.functional.nll_loss(torch.log(output.clamp(KERAS_EPSILON, 1)), labels)
    return nn.functional.cross_entropy(output, labels)


def train(module: nn.Module, entry: ZooEntry, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    generator = torch.Generator().manual_seed(entry.seed)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.Adam(module.parameters(), lr=LEARNING_RATE)
    module.train()
    for epoch in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        total = 0.0
        for start in range(0, len(order), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_of(entry, module(inputs[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        print(
            f"  {entry.name}: epoch {epoch + 1}/{epochs} loss {total / len(labels):.4f}", flush=True
        )
    module.eval()


def fgsm(
    module: nn.Module, entry: ZooEntry, x: np.ndarray, y: np.ndarray, eps: float
) -> np.ndarray:
    """One signed-gradient step of size eps on the training loss, clipped to [0, 1]."""
    inputs = torch.from_numpy(x).requires_grad_(True)
    (gradient,) = torch.autograd.grad(loss_of(entry, module(inputs), torch.from_numpy(y)), inputs)
    return (inputs + eps * gradient.sign()).clamp(0, 1).detach().numpy()


def onnx_outputs(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate(
        [
            session.run(None, {name: x[i : i + PREDICT_BATCH]})[0]
            for i in range(0, len(x), PREDICT_BATCH)
        ]
    )


def per_class_accuracy(predicted: np.ndarray, labels: np.ndarray) -> list[float]:
    return [float(np.mean(predicted[labels == c] == c)) for c in range(NUM_CLASSES)]


def float_parameters(path: Path) -> int:
    graph = onnx.load(path).graph
    return sum(
        int(np.prod(init.dims))
        for init in graph.initializer
        if init.data_type == onnx.TensorProto.FLOAT
    )


def save_npz(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    np.savez_compressed(path, x=x.astype(np.float32), y=y.astype(np.int64))


def defect_problem(entry: ZooEntry, measured: dict[str, Any]) -> str | None:
    """Why the model does not carry the defect its scenario needs, or None if it does."""
    if entry.scenario == "backdoor" and measured["asr"] < MIN_BACKDOOR_ASR:
        return f"ASR {measured['asr']:.1%} < {MIN_BACKDOOR_ASR:.0%}"
    if entry.scenario == "wrong":
        others = np.delete(measured["per_class_accuracy"], entry.weak_class)
        margin = others.min() - measured["per_class_accuracy"][entry.weak_class]
        if margin < MIN_WEAK_CLASS_MARGIN:
            return f"class {entry.weak_class} trails the next weakest by {margin:.1%} only"
    if (
        entry.scenario == "adversarial"
        and measured["fgsm_robust_accuracy"] > MAX_CLEAN_ROBUST_ACCURACY
    ):
        return (
            f"FGSM robust accuracy {measured['fgsm_robust_accuracy']:.1%} leaves little to repair"
        )
    return None


def build_model(entry: ZooEntry, out: Path, quick: bool = False) -> dict[str, Any]:
    """Build `entry` into out/NAME (or reuse it if built from this entry and code); its meta."""
    folder = out / entry.name
    if is_built(entry, out, quick):
        print(f"{entry.name}: reused {folder}", flush=True)
        return json.loads((folder / "meta.json").read_text())
    started = time.perf_counter()
    torch.set_num_threads(1)
    torch.manual_seed(entry.seed)
    folder.mkdir(parents=True, exist_ok=True)
    # meta.json is written last: a build cut short leaves no folder that looks complete.
    (folder / "meta.json").unlink(missing_ok=True)
    print(f"{entry.name}: building into {folder}", flush=True)

    data = load_zoo_data(entry, quick)
    shape = input_shape(entry.dataset)
    training = poison(entry, data.train, np.random.default_rng(entry.seed + 1))
    module = build_module(entry.architecture, shape, keras=entry.exporter == "keras")
    epochs = min(entry.epochs, QUICK_EPOCHS) if quick else entry.epochs
    train(module, entry, to_layout(training.x, entry), training.y, epochs)

    x_eval = to_layout(data.eval.x, entry)
    model_path = folder / "model.onnx"
    # A batch of 2: the dynamo exporter would specialise a batch of 1 into the graph.
    checks = [x_eval[:64], random_batches((5, *x_eval.shape[1:]))[0]]
    export_torch(
        module, x_eval[:2], model_path, dynamo=entry.exporter == "dynamo", check_inputs=checks
    )

    files: dict[str, Arrays] = {"clean": data.clean, "eval": data.eval}
    if entry.trigger is not None:
        files["bad"] = Arrays(apply_trigger(entry.trigger, data.bad_source.x), data.bad_source.y)
        files["eval_bad"] = Arrays(
            apply_trigger(entry.trigger, data.eval_bad_source.x), data.eval_bad_source.y
        )
    for name, arrays in files.items():
        save_npz(folder / f"{name}.npz", to_layout(arrays.x, entry), arrays.y)
    spec = None
    if entry.trigger is not None and entry.trigger.kind != "warp":
        pattern = trigger_pattern(entry.trigger, shape)
        np.save(folder / "trigger.npy", to_layout(pattern[None], entry)[0])
        spec = trigger_spec(entry.trigger, "trigger.npy")

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    eval_scores = onnx_outputs(session, x_eval)
    with torch.no_grad():
        parity = float(np.abs(module(torch.from_numpy(x_eval)).numpy() - eval_scores).max())
    if parity > DEFAULT_TOLERANCE:
        raise RuntimeError(f"{entry.name}: onnxruntime differs from torch by {parity:.3g} on eval")
    predicted = eval_scores.argmax(axis=1)
    per_class = per_class_accuracy(predicted, data.eval.y)
    measured: dict[str, Any] = {
        "clean_accuracy": float(np.mean(predicted == data.eval.y)),
        "per_class_accuracy": per_class,
        "weakest_class": int(np.argmin(per_class)),
        "weakest_class_accuracy": float(min(per_class)),
        "fairness_gap": float(np.mean(per_class) - min(per_class)),
    }
    if entry.target_class is not None:
        for name in ("bad", "eval_bad"):
            hits = onnx_outputs(session, to_layout(files[name].x, entry)).argmax(axis=1)
            key = "asr" if name == "eval_bad" else "asr_bad"
            measured[key] = float(np.mean(hits == entry.target_class))
    if entry.fgsm_eps is not None:
        adversarial = fgsm(module, entry, x_eval, data.eval.y, entry.fgsm_eps)
        robust = onnx_outputs(session, adversarial).argmax(axis=1)
        measured["fgsm_robust_accuracy"] = float(np.mean(robust == data.eval.y))

    proto = onnx.load(model_path)
    meta: dict[str, Any] = {
        "entry": asdict(entry),
        "trigger_description": entry.trigger_description,
        "trigger_spec": spec,
        "input_layout": "NHWC" if entry.exporter == "keras" else "NCHW",
        "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "samples": {name: len(arrays.y) for name, arrays in files.items()},
        "train_images": len(training.y),
        "epochs": epochs,
        "params": float_parameters(model_path),
        "parity_max_abs_diff": parity,
        **measured,
        "defect_problem": defect_problem(entry, measured),
        "quick": quick,
        "torch_version": torch.__version__,
        "build_seconds": round(time.perf_counter() - started, 1),
        "cache_key": cache_key(entry, quick),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{entry.name}: {summary_line(meta)}", flush=True)
    return meta


def summary_line(meta: dict[str, Any]) -> str:
    parts = [f"clean accuracy {meta['clean_accuracy']:.1%}"]
    if "asr" in meta:
        parts.append(f"ASR {meta['asr']:.1%}")
    if "fgsm_robust_accuracy" in meta:
        parts.append(f"FGSM robust accuracy {meta['fgsm_robust_accuracy']:.1%}")
    parts.append(f"weakest class {meta['weakest_class']} at {meta['weakest_class_accuracy']:.1%}")
    parts.append(f"{meta['build_seconds']:.0f} s")
    if meta["defect_problem"]:
        parts.append(f"DEFECT MISSING: {meta['defect_problem']}")
    return ", ".join(parts)


def defect_figure(meta: dict[str, Any]) -> str:
    """The number that shows the defect: ASR, FGSM robust accuracy or the weak class's accuracy."""
    entry = meta["entry"]
    if entry["scenario"] == "backdoor":
        return f"ASR {meta['asr']:.1%}"
    if entry["scenario"] == "adversarial":
        return f"FGSM ε={entry['fgsm_eps']:g}: {meta['fgsm_robust_accuracy']:.1%}"
    weak = entry["weak_class"]
    return f"class {weak}: {meta['per_class_accuracy'][weak]:.1%}"


def markdown_table(metas: Sequence[dict[str, Any]]) -> str:
    header = (
        "| model | half | arch | exporter | data | trigger | target | clean acc "
        "| ASR / robust acc / weak class | params | build s |\n"
        "|---|---|---|---|---|---|---|---:|---|---:|---:|\n"
    )
    rows = []
    for meta in metas:
        entry = meta["entry"]
        target = "-" if entry["target_class"] is None else str(entry["target_class"])
        rows.append(
            f"| {entry['name']} | {entry['half']} | {entry['architecture']} | {entry['exporter']} "
            f"| {entry['dataset']} | {meta['trigger_description']} | {target} "
            f"| {meta['clean_accuracy']:.1%} | {defect_figure(meta)} | {meta['params']:,} "
            f"| {meta['build_seconds']:.0f} |"
        )
    return header + "\n".join(rows)


def _build_in_worker(name: str, out: Path, quick: bool) -> dict[str, Any]:
    return build_model(entry_named(name), out, quick)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="build only these models")
    parser.add_argument("--half", choices=HALVES, help="build only one half")
    parser.add_argument(
        "--out", type=Path, help=f"default {DEFAULT_ZOO_DIR} ({QUICK_ZOO_DIR} with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="small, fast, weak models: for tests")
    parser.add_argument("--jobs", type=int, default=1, help="models built at a time")
    parser.add_argument("--markdown", action="store_true", help="print the table for RESULTS.md")
    args = parser.parse_args(argv)
    out = args.out or (QUICK_ZOO_DIR if args.quick else DEFAULT_ZOO_DIR)
    try:
        selected = [entry_named(name) for name in args.only] if args.only else entries(args.half)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    names = [entry.name for entry in selected if args.half is None or entry.half == args.half]
    if args.jobs > 1:
        # spawn: a forked child would inherit the parent's torch thread pool state.
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            metas = list(
                pool.map(_build_in_worker, names, [out] * len(names), [args.quick] * len(names))
            )
    else:
        metas = [_build_in_worker(name, out, args.quick) for name in names]
    if args.markdown:
        print(markdown_table(metas))
    missing = [meta["entry"]["name"] for meta in metas if meta["defect_problem"]]
    if missing:
        print(f"defect missing in: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
