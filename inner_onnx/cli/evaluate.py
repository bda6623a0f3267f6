"""`inner-onnx evaluate`: the figures of a model on data, measured in onnxruntime."""

from __future__ import annotations

from inner_onnx.cli.app import app, load_checked, metrics_rows, print_json, reporter, stdout
from inner_onnx.cli.options import (
    AttackOpt,
    BadOpt,
    ClipOpt,
    DataOpt,
    DeviceOpt,
    JsonOpt,
    ModelArg,
    OutputNameOpt,
    QuietOpt,
    SeedOpt,
    TargetOpt,
)
from inner_onnx.errors import InputError


@app.command()
def evaluate(
    model_path: ModelArg,
    data: DataOpt,
    bad: BadOpt = None,
    target_label: TargetOpt = None,
    attack: AttackOpt = None,
    clip: ClipOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    output_name: OutputNameOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Accuracy, per-class accuracy, fairness gap, ASR, bad-sample and robust accuracy."""
    from inner_onnx.io.data import load_npz
    from inner_onnx.io.model import OnnxModel
    from inner_onnx.io.specs import parse_attack
    from inner_onnx.measure.attacks import parse_clip
    from inner_onnx.measure.evaluation import EvaluationSet
    from inner_onnx.measure.evaluation import evaluate as run_evaluation
    from inner_onnx.runtime import Runner

    model = (
        load_checked(model_path, output_name) if attack else OnnxModel.load(model_path, output_name)
    )
    spec = parse_attack(attack) if attack else None
    clip_range = parse_clip(clip) if clip else None
    if target_label is not None and not 0 <= target_label < model.num_classes:
        raise InputError(f"--target-label {target_label} out of range (0..{model.num_classes - 1})")
    if target_label is not None and bad is None:
        raise InputError("--target-label needs --bad (the triggered samples)")
    dataset = load_npz(data, model)
    bad_set = load_npz(bad, model) if bad else None
    evaluation = EvaluationSet(dataset, bad_set, target_label, spec, clip_range, str(data))
    metrics = run_evaluation(Runner(model, device), evaluation, seed, reporter(quiet or as_json))
    payload: dict[str, object] = {"model": str(model_path), "data": str(data), **metrics.to_dict()}
    if spec is not None:
        # A text model is attacked in its token embeddings (attacks.EmbeddingSpace); onnxruntime
        # predicts on a copy of the graph that adds the offset to the embedding's output.
        payload["attack_space"] = "token embeddings" if model.is_text else "input"
    if as_json:
        print_json(payload)
        return
    stdout.print(metrics_rows(payload))
    stdout.print(
        "per-class accuracy: "
        + ", ".join(
            f"{i}: {'-' if a is None else f'{a:.3f}'}"
            for i, a in enumerate(metrics.per_class_accuracy)
        )
    )
