"""Repair settings, grouped by the part of the trainer that reads them.

The defaults here are the generic ones; each scenario starts from its own typed
defaults (`Scenario.default_settings`), and the user's options override those.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from inner_onnx.errors import InputError
from inner_onnx.localize.pipeline import LocalizeSettings
from inner_onnx.localize.routing import RoutingSettings

# How the learning rate moves over the epochs: linear decays it to a tenth by the last epoch,
# constant keeps it (the reference code's repair, methods/inner_refopt.py).
SCHEDULES = ("linear", "constant")


@dataclass(frozen=True)
class TrainingSettings:
    """The optimizer (SGD, no weight decay: masked-out values must not move) and its schedule."""

    epochs: int = 20
    batch_size: int = 64
    # bad samples per batch, as a share of the clean ones
    bad_fraction: float = 0.25
    # Backdoor with a target label: clean samples of the attacker's class added to every
    # batch, as a share of the clean ones, scored like the other clean ones (every bad sample
    # pulls its logits away from that class, whose clean recall can drop). 0 adds none; the
    # backdoor scenario's default is 1.0, with the output-bias calibration below, which
    # takes back the prior those rows give the target class (benchmarks/RESULTS.md,
    # "Output-bias calibration").
    target_fraction: float = 0.0
    # Backdoor with a target label: after training, shift the trainable entries of the
    # output unit's bias by the per-class offset that gives the kept weights the original
    # model's class scores on the clean training rows (distillation) while scoring the bad
    # rows by their true labels (weighted by LossWeights.bad). A repair moves the classes'
    # priors as a side effect (the bad samples push the target class down, the target rows
    # push it up); an offset per class undoes that without touching what the features
    # learned. Applied only where the class scores move by exactly the offset.
    calibrate_output_bias: bool = False
    learning_rate: float = 0.01
    momentum: float = 0.9
    # one of SCHEDULES
    schedule: str = "linear"
    # Triggered samples start with huge losses (the backdoor's logit dominates): clipping keeps
    # the first steps from wrecking the clean behaviour. None: no clipping.
    max_grad_norm: float | None = 1.0
    # Average the trainable weights over the last N epochs and keep the average; 0 keeps the
    # best single epoch by the validation objective.
    average_epochs: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InputError(f"--epochs must be at least 1, got {self.epochs}")
        if not 0 <= self.average_epochs <= self.epochs:
            raise InputError(
                f"average_epochs must be in [0, epochs={self.epochs}], got {self.average_epochs}"
            )
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule}")

    def learning_rate_at(self, epoch: int) -> float:
        """The learning rate of `epoch` (1-based) under the schedule."""
        if self.schedule == "constant":
            return self.learning_rate
        # Linear decay to a tenth: late epochs settle instead of oscillating.
        return self.learning_rate * (1 - 0.9 * (epoch - 1) / max(1, self.epochs - 1))


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (repair/trainer.py). The output cross-entropy on clean
    samples always counts once."""

    # per selected unit: 0.8·CE(probe(x_bad), y) + 0.2·KD_T(teacher_y ‖ probe(x_bad))
    probe: float = 0.2
    # output cross-entropy on bad samples with their true labels
    bad: float = 0.2
    # distillation from the original model on clean samples: keeps what it did right
    clean_distillation: float = 10.0
    # distillation from the original model on mixtures of clean samples; 0 switches it off
    clean_mixup: float = 0.0
    # cross-entropy on mixtures of two bad samples with mixed labels; 0 switches it off
    bad_mixup: float = 0.0
    # Backdoor with a target label: cross-entropy on mixtures of a bad sample and a clean
    # sample of the target class, labels mixed by the shares. The bad samples carry no
    # target-class content (a trigger cannot flip those), so alone they teach "trigger: not
    # the target class", which takes the target class's clean recall down with it; these
    # mixtures say that the trigger leaves the target class's content its class. 0 switches
    # it off.
    target_mixup: float = 0.0


@dataclass(frozen=True)
class StoppingRule:
    """The validation split, which epoch is kept, and when training stops."""

    validation_fraction: float = 0.2
    patience: int = 5
    asr_target: float = 0.02
    accuracy_tolerance: float = 0.005
    fairness_tolerance: float = 0.01
    # adversarial targets: robust accuracy up by this much, clean accuracy within this
    robust_gain_target: float = 0.30
    robust_accuracy_tolerance: float = 0.02

    def __post_init__(self) -> None:
        if not 0 < self.validation_fraction < 1:
            raise InputError(f"--val-fraction must be in (0, 1), got {self.validation_fraction}")


@dataclass(frozen=True)
class AutoSettings:
    """`--method auto` (repair/auto.py): which candidates, and how long to try them."""

    # Chosen on the zoo's tuning half (benchmarks/RESULTS.md, "INNER variants", seed 0):
    # INNER with the union fault rule (now its default) met every eval target on the same 4 of
    # 8 models as fine-tuning everything, changing fewer values on three of them (4-33 %
    # against 44-100 %); INNER with the top cut met 2, and INNER's other variants met none
    # that these two missed.
    candidates: tuple[str, ...] = ("inner", "ft")
    # How much less sure (share of bootstrap resamples meeting the targets) a candidate with
    # fewer changeable values may be and still win: about 1.5 Monte Carlo standard errors of
    # the 200-resample share at 0.5, so resampling noise alone does not pick the larger one.
    confidence_margin: float = 0.05
    # auto's whole time (localization included) in runs of one plain fine-tuning, estimated
    # by the first candidate's training time: issue 12's limit; None: try every candidate
    budget_factor: float | None = 3.0


@dataclass(frozen=True)
class RepairSettings:
    # auto ranked first on both zoo halves (benchmarks/RESULTS.md, "--method auto")
    method: str = "auto"
    training: TrainingSettings = field(default_factory=TrainingSettings)
    loss: LossWeights = field(default_factory=LossWeights)
    stopping: StoppingRule = field(default_factory=StoppingRule)
    localize: LocalizeSettings = field(default_factory=LocalizeSettings)
    auto: AutoSettings = field(default_factory=AutoSettings)

    def with_options(
        self,
        *,
        method: str | None = None,
        epochs: int | None = None,
        layers: int | None = None,
        granularity: str | None = None,
        top_k: int | None = None,
        fault_rule: str | None = None,
        validation_fraction: float | None = None,
        probe: str | None = None,
    ) -> RepairSettings:
        """These settings with what the user gave on the command line (None: keep)."""
        training, stopping, localize = self.training, self.stopping, self.localize
        if epochs is not None:
            training = replace(
                training, epochs=epochs, average_epochs=min(training.average_epochs, epochs)
            )
            stopping = replace(stopping, patience=min(stopping.patience, epochs))
        if validation_fraction is not None:
            stopping = replace(stopping, validation_fraction=validation_fraction)
        if layers is not None:
            localize = replace(localize, layers=layers)
        if probe is not None:
            localize = replace(localize, probe=probe)
        if granularity is not None or top_k is not None or fault_rule is not None:
            routing: RoutingSettings = localize.routing
            if fault_rule is None and top_k is not None:
                fault_rule = "top"  # a count per unit is what the top rule keeps
            localize = replace(
                localize,
                routing=replace(
                    routing,
                    granularity=granularity or routing.granularity,
                    top_k=top_k if top_k is not None else routing.top_k,
                    fault_rule=fault_rule or routing.fault_rule,
                ),
            )
        return replace(
            self,
            method=method or self.method,
            training=training,
            stopping=stopping,
            localize=localize,
        )
