"""INNER with the reference code's probes (github.com/implicitDeclaration/inner,
`model/cifar10_vgg.py`, class Probe): every 2-D convolution unit is probed by a small conv
head on its unpooled activation map instead of a logistic regression on its channel means
(`--probe conv`, localize/probes.py ConvProbe), for layer selection, routing and the probe
loss of the repair alike. A pooled probe cannot see where a patch trigger sits; the map
keeps it. Everything else is INNER's (issue 12: one deviation at a time)."""

from __future__ import annotations

from dataclasses import replace

from inner_onnx.repair.methods.base import MethodPlan, RepairMethod, register
from inner_onnx.repair.methods.inner_variants import plan_with
from inner_onnx.repair.problem import RepairProblem


@register
class InnerConv(RepairMethod):
    name = "inner_conv"
    label = "INNER (conv probes)"
    summary = "INNER with the reference's conv-head probes on unpooled conv maps"
    uses_faults = True

    def plan(self, problem: RepairProblem) -> MethodPlan:
        return plan_with(problem, replace(problem.settings.localize, probe="conv"))
