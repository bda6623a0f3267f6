"""Repair end to end on the bundled PyTorch backdoor sample, measured through onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from inner_onnx.errors import InputError
from inner_onnx.io.data import load_npz
from inner_onnx.io.model import OnnxModel
from inner_onnx.io.samples import SAMPLES_ROOT
from inner_onnx.measure.evaluation import EvaluationSet
from inner_onnx.repair.pipeline import repair, settings_for
from inner_onnx.repair.result import RepairResult
from inner_onnx.repair.settings import LossWeights, RepairSettings, TrainingSettings
from inner_onnx.repair.trainer import MaskedTrainer, ValidationSplit, WeightAverage
from inner_onnx.scenarios import SCENARIOS, BadSamples, bad_source
from inner_onnx.scenarios.backdoor import Backdoor
from inner_onnx.scenarios.base import checked_split, split_indices
from inner_onnx.torchview import TorchView
from tests.support.cli import run_cli

SAMPLE = SAMPLES_ROOT / "torch_badnets"


@pytest.fixture(scope="module")
def repaired() -> tuple[OnnxModel, RepairResult]:
    model = OnnxModel.load(SAMPLE / "model.onnx")
    clean = load_npz(SAMPLE / "clean.npz", model)
    evaluation = EvaluationSet(
        load_npz(SAMPLE / "eval.npz", model),
        load_npz(SAMPLE / "eval_bad.npz", model),
        0,
        name="eval",
    )
    source = bad_source("backdoor", bad_path=SAMPLE / "bad.npz", target_label=0)
    # INNER with the top fault rule: these tests are about a fault set (the default, auto, may
    # pick another method), and on this sample the top rule meets the targets on seeds 0-2
    # where the default union rule drops accuracy by 0.9-1.2 pt (benchmarks/RESULTS.md,
    # "INNER's fault rule")
    settings = settings_for("backdoor", method="inner_top")
    return model, repair(model, clean, source, settings, evaluation=evaluation)


def test_backdoor_targets_met_on_held_out_data(repaired: tuple[OnnxModel, RepairResult]) -> None:
    """The repair issue's targets, on eval data the repair never saw (seeds 0-2 all meet them
    with the top rule, benchmarks/RESULTS.md)."""
    _, result = repaired
    before, after = result.before, result.after
    print(f"\nbefore {before.to_dict()}\nafter {after.to_dict()}")
    assert before.asr > 0.9
    assert after.asr <= 0.02
    assert after.accuracy >= before.accuracy - 0.01
    assert after.fairness_gap <= before.fairness_gap + 0.01
    assert result.changed_count <= 0.10 * result.weights_total
    assert result.outcome.averaged_epochs == 10 and result.outcome.average is not None


def test_only_fault_neurons_change(repaired: tuple[OnnxModel, RepairResult]) -> None:
    model, result = repaired
    masks = result.faults.masks(model)
    for init in result.proto.graph.initializer:
        old = numpy_helper.to_array(model.initializers[init.name])
        new = numpy_helper.to_array(init)
        changed = old != new
        if init.name in masks:
            assert not (changed & ~masks[init.name]).any(), init.name
        else:
            assert not changed.any(), init.name


def test_written_model_is_the_original_graph_with_provenance(
    repaired: tuple[OnnxModel, RepairResult], tmp_path: Path
) -> None:
    model, result = repaired
    onnx.checker.check_model(result.proto, full_check=True)
    assert [n.SerializeToString() for n in result.proto.graph.node] == [
        n.SerializeToString() for n in model.proto.graph.node
    ]
    assert [i.name for i in result.proto.graph.initializer] == list(model.initializers)
    keys = {p.key for p in result.proto.metadata_props}
    assert "inner_onnx.provenance" in keys
    import json

    record = json.loads(
        next(p.value for p in result.proto.metadata_props if p.key == "inner_onnx.provenance")
    )
    assert record["scenario"] == "backdoor" and record["after"]["asr"] == result.after.asr


def test_split_is_stratified_and_disjoint() -> None:
    labels = np.repeat(np.arange(5), 20)
    train, held = split_indices(labels, 0.2, seed=1)
    assert not set(train) & set(held) and len(train) + len(held) == 100
    assert np.bincount(labels[held]).tolist() == [4] * 5


def test_too_few_samples_for_a_validation_split() -> None:
    from inner_onnx.io.data import Dataset

    single = Dataset(np.zeros((3, 1), np.float32), np.array([0, 1, 2]), "tiny.npz")
    with pytest.raises(InputError, match="too few samples for a validation split"):
        checked_split(single, 0.2, seed=0)


def refused_before_work(tmp_path: Path, capsys, *options: object) -> str:
    """Run `repair --scenario wrong` on the sample with `options`; it must exit 2 with nothing
    written. Returns stderr."""
    output = tmp_path / "out.onnx"
    args = ["repair", SAMPLE / "model.onnx", "-d", SAMPLE / "clean.npz", "--scenario", "wrong"]
    status, _, err = run_cli([*args, *options, "-o", output], capsys)
    assert status == 2 and not output.exists()
    return err


def test_faults_with_plain_fine_tuning_refused(tmp_path: Path, capsys) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text("{}")
    err = refused_before_work(tmp_path, capsys, "--method", "ft", "--faults", faults)
    assert "--faults applies only to methods that use a fault set" in err


def test_report_path_that_is_a_file_refused_before_work(tmp_path: Path, capsys) -> None:
    report = tmp_path / "report"
    report.write_text("not a folder")
    assert "report path is a file" in refused_before_work(tmp_path, capsys, "--report", report)


def test_backdoor_defaults_and_user_overrides() -> None:
    backdoor = settings_for("backdoor")
    assert backdoor.localize.routing.granularity == "weight"
    assert (backdoor.training.epochs, backdoor.training.average_epochs) == (30, 10)
    assert backdoor.loss.clean_mixup > 0 and backdoor.loss.bad_mixup > 0
    short = settings_for("backdoor", epochs=4, granularity="neuron", top_k=7, layers=2)
    assert (short.training.epochs, short.training.average_epochs) == (4, 4)
    assert short.stopping.patience == 4
    assert short.localize.routing.granularity == "neuron" and short.localize.routing.top_k == 7
    assert short.localize.layers == 2
    wrong = settings_for("wrong")
    assert wrong.localize.routing.granularity == "neuron" and wrong.training.average_epochs == 0
    assert wrong.loss.clean_mixup == 0 and wrong.loss.bad_mixup == 0
    assert wrong.loss.clean_distillation == 0
    with pytest.raises(InputError, match="average_epochs"):
        TrainingSettings(epochs=5, average_epochs=6)
    assert settings_for("adversarial").localize.layers == 4


def test_weight_average_covers_the_last_epochs_only() -> None:
    average = WeightAverage(first_epoch=3)
    for epoch in range(1, 6):
        average.add(epoch, [torch.full((2,), float(epoch)), torch.tensor([10.0 * epoch])])
    assert average.count == 3
    assert torch.equal(average.average[0], torch.full((2,), 4.0))
    assert torch.allclose(average.average[1], torch.tensor([40.0]))


def test_mixtures_keep_what_all_samples_share() -> None:
    """Two triggered samples mixed still carry the full trigger: the bad-sample mixup relies
    on it. Shares lie in [0, 1] and the same seed mixes the same way."""
    model = OnnxModel.load(SAMPLE / "model.onnx")
    view = TorchView(model.proto).eval()
    settings = RepairSettings(loss=LossWeights(clean_mixup=1.0))
    x = torch.rand(16, 1, 28, 28)
    x[:, :, 25:, 25:] = 1.0
    mixes = []
    for _ in range(2):
        trainer = MaskedTrainer(model, view, {"9.bias": np.ones(10, bool)}, [], settings, seed=3)
        mixes.append(trainer._mix(x))
    (mixed, share, partner), (again, _, _) = mixes
    assert torch.equal(mixed, again)
    assert torch.all(mixed[:, :, 25:, 25:] == 1.0)
    assert torch.all((share >= 0) & (share <= 1))
    expected = share[3] * x[3] + (1 - share[3]) * x[partner[3]]
    assert torch.allclose(mixed[3], expected)
    assert trainer.teacher is not None  # clean mixtures are scored by the original model


@pytest.mark.parametrize("average_wins", [True, False])
def test_training_with_average_keeps_the_mean_of_the_last_epochs(
    average_wins: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With average_epochs the kept weights are the mean of the last epochs' weights, unless
    the untouched model scores better on validation (then nothing changes)."""

    def judged(self, now, start, rule) -> float:
        return float(average_wins) if now is not start else float(not average_wins)

    monkeypatch.setattr(Backdoor, "objective", judged)
    model = OnnxModel.load(SAMPLE / "model.onnx")
    clean = load_npz(SAMPLE / "clean.npz", model).subset(np.arange(300))
    bad = load_npz(SAMPLE / "bad.npz", model)
    settings = RepairSettings(
        training=TrainingSettings(epochs=3, average_epochs=2), loss=LossWeights(bad_mixup=1.0)
    )
    view = TorchView(model.proto, outputs=[model.logits_name]).eval()
    trainer = MaskedTrainer(model, view, {"9.weight": np.ones((10, 32), bool)}, [], settings)
    snapshots = []
    original_snapshot = trainer._snapshot

    def recording_snapshot() -> list[torch.Tensor]:
        state = original_snapshot()
        snapshots.append(state)
        return state

    trainer._snapshot = recording_snapshot  # type: ignore[method-assign]
    train_bad = BadSamples(bad.subset(np.arange(200)), 0)
    held_bad = BadSamples(bad.subset(np.arange(200, 260)), 0)
    validation = ValidationSplit(clean, held_bad, SCENARIOS["backdoor"])
    outcome = trainer.fit(clean, train_bad, validation)
    assert [r.epoch for r in outcome.history] == [0, 1, 2, 3]
    assert outcome.average is not None
    kept = view.parameter("9.weight").detach()
    # snapshots: the initial state, then one per epoch
    if average_wins:
        assert outcome.averaged_epochs == 2 and outcome.kept_epoch == 3
        assert torch.allclose(kept, (snapshots[2][0] + snapshots[3][0]) / 2, atol=1e-6)
    else:
        assert outcome.averaged_epochs == 0 and outcome.kept_epoch == 0
        assert torch.equal(kept, snapshots[0][0])
