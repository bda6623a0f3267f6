"""The pruning oracle on the bundled BadNets sample: its greedy choice lowers the ASR on the
held-out triggered images, and both paths are measured from the unpruned model on."""

from __future__ import annotations

import pytest

from benchmarks.defenses import SAMPLE, TARGET, Case
from benchmarks.pruning_oracle import measure

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_oracle_prunes_toward_a_lower_asr() -> None:
    result = measure(Case("torch_badnets", SAMPLE, TARGET), max_pruned=2, anp_iterations=2, seed=0)
    oracle, anp = result["oracle"], result["anp_order"]
    assert oracle[0] == anp[0] and oracle[0]["asr"] > 0.9
    assert len(oracle) == len(anp) == 3
    assert oracle[-1]["asr"] < oracle[0]["asr"]
    assert len(result["oracle_neurons_anp_rank"]) == 2
