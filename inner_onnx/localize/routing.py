"""Neuron routing (DESIGN.md step 3): which neurons carry each bad sample's route.

For a selected unit, every bad sample gets its own gate `r ∈ [0, 1]` per neuron
(or per weight element) on the unit's weight. Starting from 1, the gates follow
the gradient that keeps the unit's probe on its own prediction, while an L1
pull drags them toward 0; after the steps, the gates above the sample's mean
gate mark its route and each such neuron gets a vote.

Only the unit's own little subgraph (the unit node, its bias Add, its
activation) is re-run under the gates: the unit's input does not depend on
them, so it is computed once, and `torch.func.vmap` runs every sample with its
own gated weight in one batched call. Neuron gates on a unit whose output is
linear in its weight (Conv, ConvTranspose, Gemm, a MatMul by a matrix) skip the
per-sample weights: gating a neuron's weight slice by r scales that neuron's
share of the unit's output by r, so the output is the ungated one plus
(r - 1) times the weight's share, one ordinary batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import helper

from inner_onnx.batching import GRADIENT_FACTOR, BatchSizes, fitting
from inner_onnx.context import as_torch, device_of, on_device_of
from inner_onnx.errors import InputError
from inner_onnx.io.data import Inputs
from inner_onnx.io.model import OnnxModel
from inner_onnx.io.units import Unit, data_input, weight_input
from inner_onnx.localize.faults import FaultNeuron
from inner_onnx.localize.probes import Probe
from inner_onnx.torchview import TorchView
from inner_onnx.torchview.inputs import TensorInputs

GRANULARITIES = ("neuron", "weight")
_FLOAT = onnx.TensorProto.FLOAT
_DATA_TYPES = {"Gather": onnx.TensorProto.INT64}
# The output axis of a neuron, for the units whose output is linear in their weight.
_OUTPUT_NEURON_AXIS = {"Conv": 1, "ConvTranspose": 1, "Gemm": -1, "MatMul": -1}


FAULT_RULES = ("top", "union", "majority")


@dataclass(frozen=True)
class RoutingSettings:
    granularity: str = "neuron"
    steps: int = 40
    step_size: float = 0.01
    l1: float = 0.005
    max_samples: int = 100
    # "union": every neuron (or weight) with at least one vote, the rule of the paper's
    # reference code (its top-k cut is commented out); "top": the `keep` most-voted per unit.
    # Union is the default: on the zoo's tuning half it met more runs than this project's
    # earlier top cut in every scenario (benchmarks/RESULTS.md, "INNER's fault rule").
    # "majority": every neuron (or weight) on the routes of at least half the routed samples,
    # this project's rule between the two (the union keeps nearly every weight of a selected
    # unit: one vote in a hundred samples is enough).
    fault_rule: str = "union"
    # the top rule's count per unit; None: `top_fraction` of the unit, at least one
    top_k: int | None = None
    top_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise InputError(
                f"unknown granularity {self.granularity!r}; choose {' or '.join(GRANULARITIES)}"
            )
        if self.fault_rule not in FAULT_RULES:
            raise InputError(
                f"unknown fault rule {self.fault_rule!r}; choose {' or '.join(FAULT_RULES)}"
            )
        if self.top_k is not None and self.top_k < 1:
            raise InputError(f"--top-k must be at least 1, got {self.top_k}")
        if self.top_k is not None and self.fault_rule != "top":
            raise InputError("--top-k counts what the top fault rule keeps: use --fault-rule top")
        if not 0 < self.top_fraction <= 1:
            raise InputError(f"top fraction must be in (0, 1], got {self.top_fraction}")

    def kept(self, votes: np.ndarray, samples: int) -> np.ndarray:
        """Indices the rule keeps, most votes first (ties by index: deterministic); `samples`:
        how many samples voted."""
        if self.fault_rule == "top":
            return _top(votes, self.keep(votes.size))
        least = 1 if self.fault_rule == "union" else math.ceil(samples / 2)
        voted = np.flatnonzero(votes >= max(1, least))
        return voted[np.argsort(-votes[voted], kind="stable")] if len(voted) else _top(votes, 1)

    def keep(self, size: int) -> int:
        if self.top_k is not None:
            return min(size, self.top_k)
        return max(1, math.ceil(size * self.top_fraction))


def unit_subgraph(model: OnnxModel, unit: Unit) -> tuple[onnx.ModelProto, str]:
    """The nodes from the unit's input to its activation, as a model of their own."""
    producers = {out: node for node in model.proto.graph.node for out in node.output}
    chain: list[onnx.NodeProto] = []
    tensor = unit.activation
    while True:
        node = producers[tensor]
        chain.append(node)
        if node.op_type == unit.op and node.input[weight_input(unit.op)] == unit.weight:
            break
        tensor = next(name for name in node.input if name not in model.initializers)
    chain.reverse()
    unit_input = chain[0].input[data_input(unit.op)]
    # Nodes that compute the chain's other inputs from weights alone go with it: Constant
    # nodes (an exported ReLU6 is a Clip whose bounds are Constant outputs) and Identity
    # aliases of an initializer (the TorchScript exporter keeps one of equal weights, a
    # freshly initialized BERT's zero biases, and names the others by Identity nodes).
    feeders: dict[int, onnx.NodeProto] = {}
    inside = {name for node in chain for name in node.output} | {unit_input}
    for node in chain:
        for name in node.input:
            if name not in inside:
                _collect_weight_only(name, producers, model.initializers, feeders)
    chain = [*feeders.values(), *chain]
    used = {name for node in chain for name in node.input}
    # Constant-node weights become initializers here: the chain leaves their nodes out.
    initializers = [
        init if init.name == name else _renamed(init, name)
        for name, init in model.initializers.items()
        if name in used
    ]
    graph = helper.make_graph(
        chain,
        f"{unit.name}_subgraph",
        # an embedding's input is its token ids
        [helper.make_tensor_value_info(unit_input, _DATA_TYPES.get(unit.op, _FLOAT), None)],
        [helper.make_tensor_value_info(unit.activation, onnx.TensorProto.FLOAT, None)],
        initializers,
    )
    sub = helper.make_model(graph, opset_imports=list(model.proto.opset_import))
    sub.ir_version = model.proto.ir_version
    return sub, unit_input


def _collect_weight_only(
    name: str,
    producers: dict[str, onnx.NodeProto],
    initializers: dict[str, onnx.TensorProto],
    found: dict[int, onnx.NodeProto],
) -> bool:
    """Whether tensor `name` is computed from weights alone; the nodes computing it are added
    to `found`, each after those it reads."""
    if not name or name in initializers:
        return True
    node = producers.get(name)
    if node is None:  # a graph input
        return False
    if id(node) in found:
        return True
    if all(_collect_weight_only(i, producers, initializers, found) for i in node.input):
        found[id(node)] = node
        return True
    return False


def _renamed(tensor: onnx.TensorProto, name: str) -> onnx.TensorProto:
    copy = onnx.TensorProto()
    copy.CopyFrom(tensor)
    copy.name = name
    return copy


class UnitRouter:
    """Routes bad samples through one unit; `votes()` counts how often each gate stays on."""

    def __init__(
        self,
        model: OnnxModel,
        unit: Unit,
        probe: Probe,
        settings: RoutingSettings,
        device: torch.device | str = "cpu",
    ):
        self.unit = unit
        self.probe = probe
        self.settings = settings
        sub, self.input_name = unit_subgraph(model, unit)
        self.view = TorchView(sub).eval().requires_grad_(False).to(device)
        self.weight = self.view.parameter(unit.weight).detach()
        self.scales_output = (
            settings.granularity == "neuron"
            and unit.op in _OUTPUT_NEURON_AXIS
            and (unit.op not in ("Gemm", "MatMul") or self.weight.dim() == 2)
            and (unit.op != "MatMul" or unit.neuron_axis == 1)
        )

    def _gated_weight(self, gates: torch.Tensor) -> torch.Tensor:
        if self.settings.granularity == "weight":
            return gates * self.weight
        shape = [1] * self.weight.dim()
        shape[self.unit.neuron_axis] = -1
        return gates.reshape(shape) * self.weight

    def _probe_logits(
        self, weights: torch.Tensor, inputs: torch.Tensor, masks: torch.Tensor | None
    ) -> torch.Tensor:
        """The probe's logits per sample, each through its own gated weight; `masks`: a text
        model's attention mask per sample (pooling respects it), or None."""

        def one_sample(weight: torch.Tensor, sample: torch.Tensor, mask: torch.Tensor | None):
            activation = self.view(sample.unsqueeze(0), overrides={self.unit.weight: weight})
            one_mask = None if mask is None else mask.unsqueeze(0)
            return self.probe.torch_features(activation, self.unit, one_mask)[0]

        # The probe runs on the stacked features, outside vmap: a conv head's layers then see
        # an ordinary batch.
        mask_axis = None if masks is None else 0
        features = torch.func.vmap(one_sample, in_dims=(0, 0, mask_axis))(weights, inputs, masks)
        return self.probe.torch_logits(features)

    def _weight_share(self, inputs: torch.Tensor) -> torch.Tensor:
        """The part of the unit's output that its weight contributes (the output without
        the bias the op itself adds), per sample."""
        output = self.unit.output
        _, full = self.view(inputs, capture=[output])
        zero = {self.unit.weight: torch.zeros_like(self.weight)}
        _, bias_only = self.view(inputs, capture=[output], overrides=zero)
        return full[output] - bias_only[output]

    def _output_scaled_logits(
        self,
        gates: torch.Tensor,
        inputs: torch.Tensor,
        share: torch.Tensor,
        masks: torch.Tensor | None,
    ) -> torch.Tensor:
        """The probe's logits with each sample's neuron gates scaling its neurons' shares of
        the unit's output: what gating their weight slices gives, without a weight per
        sample."""
        shape = [len(gates)] + [1] * (share.dim() - 1)
        shape[_OUTPUT_NEURON_AXIS[self.unit.op]] = self.unit.neurons
        offset = (gates.reshape(shape) - 1) * share
        batch = TensorInputs({self.input_name: inputs, self.unit.output: offset})
        activation = self.view(batch)
        return self.probe.torch_logits(self.probe.torch_features(activation, self.unit, masks))

    def _gated_logits(
        self, inputs: torch.Tensor, masks: torch.Tensor | None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The probe's logits as a function of the samples' gates: through the unit's output
        when the gates can scale it, else through a gated weight per sample."""
        if self.scales_output:
            with torch.no_grad():
                share = self._weight_share(inputs)
            return lambda gates: self._output_scaled_logits(gates, inputs, share, masks)
        return lambda gates: self._probe_logits(
            torch.func.vmap(self._gated_weight)(gates), inputs, masks
        )

    def gate_elements(self) -> int:
        """Gates per sample."""
        return self.weight.numel() if self.settings.granularity == "weight" else self.unit.neurons

    def votes(
        self, unit_inputs: torch.Tensor, chunk: int, masks: torch.Tensor | None = None
    ) -> np.ndarray:
        """Per-gate vote counts over the samples: shape [neurons] or the weight's shape.

        Each sample's gates follow only its own loss, so the samples go `chunk` at a time:
        memory is one chunk's gated weights (a weight-granularity gate set is as large as the
        weight), and the counts add up."""
        total = np.zeros(
            tuple(self.weight.shape)
            if self.settings.granularity == "weight"
            else (self.unit.neurons,),
            dtype=np.int64,
        )
        for start in range(0, len(unit_inputs), chunk):
            rows = slice(start, start + chunk)
            total += self._chunk_votes(unit_inputs[rows], None if masks is None else masks[rows])
        return total

    def _chunk_votes(self, unit_inputs: torch.Tensor, masks: torch.Tensor | None) -> np.ndarray:
        count = len(unit_inputs)
        like = {"device": self.weight.device}
        if self.settings.granularity == "weight":
            gates = torch.ones((count, *self.weight.shape), **like)
        else:
            gates = torch.ones((count, self.unit.neurons), **like)
        logits_of = self._gated_logits(unit_inputs, masks)
        with torch.no_grad():
            targets = logits_of(gates).argmax(dim=1)
        # The neuron gate's gradient sums over its weight slice: dividing by the slice's L1 norm
        # gives a weighted mean of per-weight gradients, so both granularities step alike.
        slice_norm = self._slice_l1_norm()
        # A weight gate on an embedding row the sample does not read gets no gradient: it only
        # decays with the L1 pull, like every unread row, and stays above the mean of a table
        # whose read rows move, so unread rows filled the fault set. A route runs through the
        # weights the sample reads: on an embedding only those vote, against their own mean.
        # (Other units keep the reference rule: their zero gradients, a dead ReLU's say, are
        # no sign that the sample does not read the weight.)
        embedding = self.unit.op == "Gather" and self.settings.granularity == "weight"
        read = torch.zeros_like(gates, dtype=torch.bool) if embedding else None
        for _ in range(self.settings.steps):
            if self.settings.granularity == "weight":
                gated = torch.func.vmap(self._gated_weight)(gates).requires_grad_(True)
                loss = torch.nn.functional.cross_entropy(
                    self._probe_logits(gated, unit_inputs, masks), targets, reduction="sum"
                )
                (gradient,) = torch.autograd.grad(loss, gated)
                if read is not None:
                    read |= gradient != 0
            else:
                gates.requires_grad_(True)
                loss = torch.nn.functional.cross_entropy(logits_of(gates), targets, reduction="sum")
                (gradient,) = torch.autograd.grad(loss, gates)
                gradient = gradient / slice_norm
                gates = gates.detach()
            with torch.no_grad():
                step = self.settings.step_size * gradient + self.settings.l1 * torch.sign(gates)
                gates = (gates - step).clamp_(0.0, 1.0)
        flat = gates.reshape(count, -1)
        if read is None:
            above_mean = flat > flat.mean(dim=1, keepdim=True)
        else:
            reads = read.reshape(count, -1)
            mean = (flat * reads).sum(dim=1, keepdim=True) / reads.sum(
                dim=1, keepdim=True
            ).clamp_min(1)
            above_mean = (flat > mean) & reads
        return above_mean.sum(dim=0).reshape(gates.shape[1:]).cpu().numpy().astype(np.int64)

    def _slice_l1_norm(self) -> torch.Tensor:
        axes = [d for d in range(self.weight.dim()) if d != self.unit.neuron_axis]
        return self.weight.abs().sum(dim=axes).clamp_min(1e-12)


def choose_route_samples(wrong: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Up to `limit` bad-sample indices, those the model gets wrong first (they show the fault)."""
    rng = np.random.default_rng(seed)
    wrong_idx = rng.permutation(np.flatnonzero(wrong))
    right_idx = rng.permutation(np.flatnonzero(~wrong))
    return np.sort(np.concatenate([wrong_idx, right_idx])[:limit])


def route(
    model: OnnxModel,
    view: TorchView,
    probes: dict[str, Probe],
    units: list[str],
    x_route: np.ndarray | Inputs,
    settings: RoutingSettings,
    progress: Callable[[int], None] | None = None,
    sizes: BatchSizes = BatchSizes(),
) -> tuple[list[FaultNeuron], dict[str, list[int]], dict[str, list[int]]]:
    """Fault neurons sorted by votes, the kept weight indices (weight granularity) and every
    neuron's votes per unit. The view's device is where routing runs."""
    device = device_of(view)
    routers = [
        UnitRouter(model, model.unit(name), probes[name], settings, device) for name in units
    ]
    mask = model.mask_input
    names = [r.input_name for r in routers] + ([mask.name] if mask is not None else [])
    captured = _unit_inputs(view, x_route, names, sizes.inference)
    masks = captured[mask.name] if mask is not None else None
    neurons: list[FaultNeuron] = []
    weight_indices: dict[str, list[int]] = {}
    unit_votes: dict[str, list[int]] = {}
    for router in routers:
        unit = router.unit
        inputs = captured[router.input_name]
        chunk = routing_chunk(router.gate_elements(), inputs[0].numel())
        votes = router.votes(inputs, chunk, masks)
        if settings.granularity == "weight":
            flat = votes.reshape(-1)
            kept = settings.kept(flat, len(inputs))
            weight_indices[unit.name] = [int(i) for i in kept]
            kept_mask = np.zeros(flat.size, dtype=bool)
            kept_mask[kept] = True
            per_neuron = _per_neuron(np.where(kept_mask, flat, 0).reshape(votes.shape), unit)
            chosen = np.flatnonzero(per_neuron)
            chosen = chosen[np.argsort(-per_neuron[chosen], kind="stable")]
        else:
            per_neuron = votes
            chosen = settings.kept(per_neuron, len(inputs))
        neurons += [FaultNeuron(unit.name, int(i), int(per_neuron[i])) for i in chosen]
        unit_votes[unit.name] = [int(v) for v in _per_neuron(votes, unit)]
        if progress:
            progress(1)
    neurons.sort(key=lambda n: -n.votes)
    return neurons, weight_indices, unit_votes


def _unit_inputs(
    view: TorchView, x: np.ndarray | Inputs, names: list[str], batch_size: int
) -> dict[str, torch.Tensor]:
    """The routed units' inputs for the samples `x`, computed `batch_size` at a time."""
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = on_device_of(view, as_torch(x[start : start + batch_size]))
            _, captured = view(batch, capture=names)
            for name in names:
                parts[name].append(captured[name])
    return {name: torch.cat(tensors) for name, tensors in parts.items()}


def routing_chunk(gate_elements: int, input_elements: int) -> int:
    """Samples routed at once: per sample, its gates live about six times over (gates, gated
    weight, their gradients, the step) and the unit's input and output with backward."""
    per_sample = 4 * (6 * gate_elements + GRADIENT_FACTOR * 2 * input_elements)
    return fitting(per_sample, cap=1 << 30)


def _top(votes: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the `keep` largest vote counts, ties broken by index (deterministic)."""
    order = np.argsort(-votes, kind="stable")
    return order[:keep]


def _per_neuron(votes: np.ndarray, unit: Unit) -> np.ndarray:
    if votes.ndim == 1:
        return votes
    axes = tuple(d for d in range(votes.ndim) if d != unit.neuron_axis)
    return votes.sum(axis=axes)
