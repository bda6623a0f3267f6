"""Every reported number is measured through onnxruntime on the model as written.

Adversarial examples need gradients, so they are generated on the torch view
of the same model; their predictions still come from onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from inner_onnx.io.data import Dataset
from inner_onnx.io.specs import AttackSpec
from inner_onnx.measure.attacks import Domain, attack_domain, generate
from inner_onnx.measure.metrics import Metrics, summarize
from inner_onnx.progress import QUIET, Reporter
from inner_onnx.runtime import Runner

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class EvaluationSet:
    """What to measure: clean data, optional bad samples and attacker target, optional attack."""

    data: Dataset
    bad: Dataset | None = None
    target_label: int | None = None
    attack: AttackSpec | None = None
    # the valid input range, or a text model's embedding space (attacks.attack_domain)
    clip: Domain | None = None
    name: str = ""


def evaluate(
    runner: Runner,
    evaluation: EvaluationSet,
    seed: int = 0,
    reporter: Reporter = QUIET,
    device: torch.device | str = "cpu",
) -> Metrics:
    """Metrics of `evaluation` in onnxruntime; adversarial examples are made on a torch view
    on `device`, in batches that fit the model (`Runner.batch_sizes`)."""
    model = runner.model
    data = evaluation.data
    pred = runner.predict(data.x)
    bad_pred = runner.predict(evaluation.bad.x) if evaluation.bad is not None else None
    robust_pred = None
    if evaluation.attack is not None:
        view = model.torch_view(frozen=True, device=device)
        clip = attack_domain(model, data.x, evaluation.clip)
        with reporter.step(f"attack {evaluation.attack}", len(data)) as advance:
            x_adv = generate(
                evaluation.attack,
                view,
                data.x,
                data.y,
                clip,
                seed=seed,
                batch_size=runner.batch_sizes(data.x).gradient,
                progress=advance,
            )
        robust_pred = runner.predict(x_adv)
    return summarize(
        pred,
        data.y,
        model.num_classes,
        bad_pred=bad_pred,
        bad_y=evaluation.bad.y if evaluation.bad is not None else None,
        target=evaluation.target_label if evaluation.bad is not None else None,
        robust_pred=robust_pred,
    )
