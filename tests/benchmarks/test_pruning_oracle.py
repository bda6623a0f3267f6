"""The pruning oracle on the bundled BadNets sample: its greedy choice lowers the ASR on the
held-out triggered images, and both paths are measured from the unpruned model on."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.defenses import SAMPLE, TARGET, Case
from benchmarks.pruning_oracle import (
    ft_sam_premise,
    measure,
    per_neuron_norm,
    ranks_largest_first,
)
from inner_onnx.io.data import load_npz
from inner_onnx.io.model import OnnxModel
from inner_onnx.measure.evaluation import EvaluationSet
from inner_onnx.repair.methods.anp import NeuronGroup, neuron_groups

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_oracle_prunes_toward_a_lower_asr() -> None:
    result = measure(Case("torch_badnets", SAMPLE, TARGET), max_pruned=2, anp_iterations=2, seed=0)
    oracle, anp = result["oracle"], result["anp_order"]
    assert oracle[0] == anp[0] and oracle[0]["asr"] > 0.9
    assert len(oracle) == len(anp) == 3
    assert oracle[-1]["asr"] < oracle[0]["asr"]
    assert len(result["oracle_neurons_anp_rank"]) == 2
    assert [name for name, _ in result["oracle_neurons"]] and result["ft_sam"] is None


def test_neuron_norms_are_per_output_channel() -> None:
    group = NeuronGroup("w", "b", (2, 1, 1, 1))
    weight = np.zeros((2, 3, 2, 2), np.float32)
    weight[0, 0, 0, 0], weight[1] = 3.0, 1.0
    assert per_neuron_norm(weight, group).tolist() == pytest.approx([3.0, np.sqrt(12)])
    assert ranks_largest_first(np.array([0.5, np.nan, 2.0, 1.0]), [0, 2, 1]) == [2, 0, None]


def test_ft_sam_premise_ranks_the_oracle_neurons_and_measures_their_change() -> None:
    case = Case("torch_badnets", SAMPLE, TARGET)
    model = OnnxModel.load(SAMPLE / "model.onnx")
    groups = neuron_groups(model)
    evaluation = EvaluationSet(
        load_npz(SAMPLE / "eval.npz", model), load_npz(SAMPLE / "eval_bad.npz", model), TARGET
    )
    oracle = [(0, 1), (1, 0)]
    clean = load_npz(SAMPLE / "clean.npz", model)
    premise = ft_sam_premise(case, model, groups, oracle, clean, evaluation, seed=0, epochs=1)
    total = sum(group.neurons for group in groups)
    assert all(0 <= rank < total for rank in premise["oracle_scale_rank"])
    assert all(change > 0 for change in premise["oracle_scale_relative_change"])
    assert 0 <= premise["ft_sam_asr"] <= 1
