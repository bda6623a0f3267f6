"""INNER with the optimizer and schedule of the paper's reference code
(github.com/implicitDeclaration/inner, `main.py`, repair_mid_layers and layer_rep;
`utils/my_optim.py`, MySGD); the fault set, probe terms and loss are INNER's (issue 12:
one deviation at a time; `inner_ref` is the reference's loss).

What the reference does, and what is kept here:
- optimizer: layer_rep builds `MySGD(selected_param, lr=0.0007, assign_mask=...)`, plain
  SGD whose update is multiplied by the fault mask; its momentum and both weight decays
  default to 0 and are never passed. Ours: SGD with the fault mask on the gradient and no
  weight decay already, so only the rate, the momentum and the clipping change.
- schedule: none; layer_rep makes a fresh optimizer at the same rate on every call, and
  nothing clips the gradient.
- epochs and batch: repair_mid_layers runs up to `epoch = 20` epochs and stops once clean
  accuracy is within 0.1 of the original and the ASR below 0.15 (0.25 Blend, 0.22 WaNet
  and adversarial); batches of 64. The problem's epochs, batch size and stopping rule
  stay (the backdoor defaults: 30 epochs, the last 10 averaged; `--epochs` applies).
- not replicated: the reference repairs the selected layers one after the other, each
  epoch a probe-loss pass per layer then two passes (one for Blend, four for WaNet) of
  output cross-entropy on augmented triggered samples; here one loss trains all of them.
"""

from __future__ import annotations

from dataclasses import replace

from inner_onnx.repair.methods.base import MethodPlan, RepairMethod, register
from inner_onnx.repair.problem import RepairProblem

# main.py layer_rep: `MySGD(selected_param, lr=0.0007, ...)`
REFERENCE_LEARNING_RATE = 0.0007
# utils/my_optim.py MySGD: `momentum=0` by default, and layer_rep passes none
REFERENCE_MOMENTUM = 0.0
# no scheduler in main.py: the rate stays 0.0007 throughout
REFERENCE_SCHEDULE = "constant"
# main.py layer_rep: loss.backward() then optimizer.step(), nothing clips
REFERENCE_MAX_GRAD_NORM = None


@register
class InnerReferenceOptimizer(RepairMethod):
    name = "inner_refopt"
    label = "INNER (reference optimizer)"
    summary = "INNER trained with the reference code's optimizer (SGD, lr 0.0007, constant)"
    uses_faults = True

    def plan(self, problem: RepairProblem) -> MethodPlan:
        training = replace(
            problem.settings.training,
            learning_rate=REFERENCE_LEARNING_RATE,
            momentum=REFERENCE_MOMENTUM,
            schedule=REFERENCE_SCHEDULE,
            max_grad_norm=REFERENCE_MAX_GRAD_NORM,
        )
        return MethodPlan(
            problem.faults.masks(problem.model), problem.probe_terms(), training=training
        )
