"""TorchView: an ONNX graph as a differentiable torch module whose parameters are its initializers.

The graph is compiled once into a list of steps (op function, input and output
names, parsed attributes); `forward` walks the steps that the requested
tensors need, in graph order, over a dict of named tensors.

`view.to(device)` moves every initializer and constant; inputs on that device
give outputs on it, and `write_back()` copies the values back to the host.
A graph exported with a pinned batch axis (batch 1, say, with shapes such as Reshape's
[1, 8, 28, 28] written into it) runs any number of samples: they go in groups of the
pinned size (the last one zero-padded, as onnxruntime gets them) under `torch.func.vmap`, so
that every op sees the batch the graph was exported for.

Ops that use tensor values as shapes or attributes (Reshape's shape, Slice's
starts, Resize's sizes ...) read those few integers on the host: on a GPU each
such read waits for the queued kernels.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import onnx
import onnx.inliner
import torch

from inner_onnx.errors import InputError
from inner_onnx.torchview import ops  # noqa: F401 (registers the op functions)
from inner_onnx.torchview.graph import (
    FLOAT_TYPES,
    constant_weights,
    fixed_batch,
    graph_inputs,
    needed_nodes,
    node_names,
)
from inner_onnx.torchview.inputs import TensorInputs
from inner_onnx.torchview.ops.nn import BATCH_STATISTICS
from inner_onnx.torchview.registry import (
    UnsupportedOpError,
    domain_key,
    lookup,
    registered_ops,
)
from inner_onnx.torchview.tensors import tensor_from_proto
from inner_onnx.torchview.writeback import store_if_changed


def domain_opsets(proto: onnx.ModelProto) -> dict[str, int]:
    """The model's opset of each domain, keyed as the registry keys domains."""
    return {domain_key(entry.domain): entry.version for entry in proto.opset_import}


def _runnable(node: onnx.NodeProto, opsets: dict[str, int]) -> bool:
    domain = domain_key(node.domain)
    return domain in opsets and lookup(node.op_type, opsets[domain], domain) is not None


def executable_model(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its local functions inlined (exporters may wrap modules as functions)."""
    if not proto.functions:
        return proto
    return onnx.inliner.inline_local_functions(proto)


def unsupported_nodes(
    proto: onnx.ModelProto, outputs: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """(op_type, node name) of every node the view cannot run at the model's opsets, among
    those `outputs` need (default: every node)."""
    proto = executable_model(proto)
    opsets = domain_opsets(proto)
    graph = proto.graph
    needed = None if outputs is None else needed_nodes(graph, outputs)
    return [
        (node.op_type, name)
        for index, (name, node) in enumerate(zip(node_names(graph), graph.node))
        if (needed is None or index in needed) and not _runnable(node, opsets)
    ]


def check_supported(proto: onnx.ModelProto, outputs: Sequence[str] | None = None) -> None:
    """Raise InputError naming every unsupported op type (with one node of each) on one line,
    among the nodes `outputs` need (default: every node)."""
    nodes: dict[str, list[str]] = {}
    for op_type, name in unsupported_nodes(proto, outputs):
        nodes.setdefault(op_type, []).append(name)
    if nodes:
        described = ", ".join(
            f"{op_type} (node {names[0]}{f' and {len(names) - 1} more' if len(names) > 1 else ''})"
            for op_type, names in nodes.items()
        )
        raise UnsupportedOpError(f"unsupported ops: {described}")


def _attribute_value(attribute: onnx.AttributeProto):
    kind = onnx.AttributeProto
    if attribute.type == kind.FLOAT:
        return attribute.f
    if attribute.type == kind.INT:
        return attribute.i
    if attribute.type == kind.STRING:
        return attribute.s.decode()
    if attribute.type == kind.TENSOR:
        return tensor_from_proto(attribute.t)
    if attribute.type == kind.FLOATS:
        return list(attribute.floats)
    if attribute.type == kind.INTS:
        return list(attribute.ints)
    if attribute.type == kind.STRINGS:
        return [s.decode() for s in attribute.strings]
    kind_name = kind.AttributeType.Name(attribute.type)
    raise UnsupportedOpError(f"attribute {attribute.name} of type {kind_name} is not supported")


@dataclass(frozen=True)
class _Step:
    """One node, ready to run: inputs '' (omitted) are passed as None."""

    name: str
    op_type: str
    function: Callable
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict

    def run(self, env: dict[str, torch.Tensor]) -> None:
        args = [env[name] if name else None for name in self.inputs]
        try:
            result = self.function(*args, **self.attributes)
        except UnsupportedOpError as exc:
            raise UnsupportedOpError(f"node {self.name} ({self.op_type}): {exc}") from None
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            raise RuntimeError(f"node {self.name} ({self.op_type}): {exc}") from exc
        results = result if isinstance(result, tuple) else (result,)
        if len(results) < len(self.outputs):
            raise UnsupportedOpError(
                f"node {self.name} ({self.op_type}): only {len(results)} of its "
                f"{len(self.outputs)} outputs are supported"
            )
        for name, value in zip(self.outputs, results):
            if name:
                env[name] = value


def _compile_node(node: onnx.NodeProto, name: str, opsets: dict[str, int]) -> _Step:
    domain = domain_key(node.domain)
    version = lookup(node.op_type, opsets[domain], domain)
    assert version is not None, "check_supported runs before nodes are compiled"
    attributes = {}
    for attribute in node.attribute:
        if attribute.name not in version.attributes:
            raise UnsupportedOpError(
                f"node {name} ({node.op_type}): attribute {attribute.name!r} is not supported"
            )
        try:
            attributes[attribute.name] = _attribute_value(attribute)
        except UnsupportedOpError as exc:
            raise UnsupportedOpError(f"node {name} ({node.op_type}): {exc}") from None
    outputs = list(node.output)
    while outputs and not outputs[-1]:
        outputs.pop()
    if version.wants_output_count:
        attributes["output_count"] = len(outputs)
    return _Step(
        name, node.op_type, version.function, tuple(node.input), tuple(outputs), attributes
    )


def _attribute_name(onnx_name: str, taken: set[str]) -> str:
    """A valid, unique nn.Module attribute name for an ONNX tensor name."""
    base = "t_" + re.sub(r"\W", "_", onnx_name)
    name, suffix = base, 1
    while name in taken:
        suffix += 1
        name = f"{base}_{suffix}"
    taken.add(name)
    return name


class TorchView(torch.nn.Module):
    """A differentiable torch view of an ONNX graph with one nn.Parameter per float weight.

    Weights are the float initializers and the float `Constant` nodes of the graph
    (keyed by the node's output name), as older exporters write them. Runs
    inference semantics (BatchNormalization on running statistics, Dropout off);
    with `batch_statistics` on, BatchNormalization runs as torch's train mode does
    (the batch's statistics, and the running ones updated in place unless
    `update_running_statistics` is off).
    `write_back()` returns the original model with the current parameter values
    in its weights and nothing else changed. The view keeps `proto` and reads it:
    the caller must not change it while the view lives.
    """

    def __init__(self, proto: onnx.ModelProto, outputs: Sequence[str] | None = None):
        super().__init__()
        # Read, never changed (write_back copies it): a copy per view would double a large
        # model's weights in memory once more.
        self._proto = proto
        executable = executable_model(self._proto)
        graph = executable.graph
        self.output_names = list(outputs) if outputs is not None else [o.name for o in graph.output]
        check_supported(executable, self.output_names)
        opsets = domain_opsets(executable)
        needed = needed_nodes(graph, self.output_names)
        initializers = {init.name: init for init in graph.initializer}
        taken: set[str] = set()
        self._parameter_keys: dict[str, str] = {}
        self._buffer_keys: dict[str, str] = {}
        for init in graph.initializer:
            value = tensor_from_proto(init)
            key = _attribute_name(init.name, taken)
            if init.data_type in FLOAT_TYPES:
                self.register_parameter(key, torch.nn.Parameter(value))
                self._parameter_keys[init.name] = key
            else:
                self.register_buffer(key, value)
                self._buffer_keys[init.name] = key
        # Float Constant nodes of the model's own graph are weights too (older exporters);
        # those inlined from local functions have no single node to write back into.
        weights = constant_weights(self._proto.graph)
        real_inputs = graph_inputs(graph, initializers)
        self.input_names = [value.name for value in real_inputs]
        self.fixed_batch = fixed_batch(real_inputs)
        self._steps: list[_Step] = []
        available = set(initializers) | set(self.input_names) | {""}
        for index, (name, node) in enumerate(zip(node_names(graph), graph.node)):
            missing = [i for i in node.input if i not in available]
            step = None
            if index in needed:
                if missing:
                    raise InputError(
                        f"node {name} reads {missing[0]!r} before any node produces it "
                        "(graph not in topological order)"
                    )
                step = _compile_node(node, name, opsets)
            elif not missing and _runnable(node, opsets):
                # Off the requested outputs' path a node the view cannot run is left out
                # (a ZipMap, a label lookup), with everything that reads it; the rest stays
                # available for capture.
                with contextlib.suppress(UnsupportedOpError):
                    step = _compile_node(node, name, opsets)
            if step is None:
                continue
            if node.op_type == "Constant":
                key = _attribute_name(node.output[0], taken)
                value = step.function(**step.attributes)
                if node.output[0] in weights:
                    self.register_parameter(key, torch.nn.Parameter(value))
                    self._parameter_keys[node.output[0]] = key
                else:
                    self.register_buffer(key, value)
                    self._buffer_keys[node.output[0]] = key
            else:
                self._steps.append(step)
            available.update(node.output)
        self._known = available - {""}
        # what an offset may name (forward): the outputs of the nodes the view runs
        self._computed = frozenset(name for step in self._steps for name in step.outputs)
        self._check_names(self.output_names, "output")
        self._plans: dict[tuple[str, ...], list[_Step]] = {}
        self.batch_statistics = False
        self.update_running_statistics = True

    def _check_names(self, names: Sequence[str], what: str) -> None:
        unknown = [name for name in names if name not in self._known]
        if unknown:
            raise InputError(f"no tensor named {unknown[0]!r} in the graph (requested as {what})")

    def _plan(self, capture: tuple[str, ...]) -> list[_Step]:
        """The steps the outputs and `capture` need, in graph order (the rest is skipped)."""
        plan = self._plans.get(capture)
        if plan is None:
            self._check_names(capture, "capture")
            needed = set(self.output_names) | set(capture)
            plan = []
            for step in reversed(self._steps):
                if needed.intersection(step.outputs):
                    plan.append(step)
                    needed.update(step.inputs)
            plan.reverse()
            self._plans[capture] = plan
        return plan

    def parameter(self, onnx_name: str) -> torch.nn.Parameter:
        key = self._parameter_keys.get(onnx_name)
        if key is None:
            raise InputError(f"no float initializer or Constant named {onnx_name!r}")
        return self._parameters[key]

    def share_parameter(self, onnx_name: str, parameter: torch.nn.Parameter) -> None:
        """Use `parameter` (another view's, of the same shape) in place of this view's own."""
        own = self.parameter(onnx_name)
        if own.shape != parameter.shape:
            raise ValueError(f"{onnx_name}: shape {tuple(parameter.shape)} != {tuple(own.shape)}")
        self._parameters[self._parameter_keys[onnx_name]] = parameter

    def onnx_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        for onnx_name, key in self._parameter_keys.items():
            yield onnx_name, self._parameters[key]

    def forward(
        self,
        *inputs: torch.Tensor | TensorInputs,
        capture: Sequence[str] = (),
        overrides: Mapping[str, torch.Tensor] | None = None,
    ):
        """The graph on its inputs in order, or on one `TensorInputs` holding them by name.

        A `TensorInputs` may also hold offsets: a tensor named after a node's output is added
        to that output as soon as the node computes it (an attack on a text model perturbs
        the token embeddings so)."""
        offsets: dict[str, torch.Tensor] = {}
        if len(inputs) == 1 and isinstance(inputs[0], TensorInputs):
            offsets = self._offsets(inputs[0])
            inputs = tuple(self._named_inputs(inputs[0]))
        if len(inputs) != len(self.input_names):
            raise InputError(
                f"the graph takes {len(self.input_names)} inputs "
                f"({', '.join(self.input_names)}), got {len(inputs)}"
            )
        capture = tuple(capture)
        inputs = tuple(torch.as_tensor(value) for value in inputs)
        count = len(inputs[0]) if inputs and inputs[0].dim() else None
        if self.fixed_batch is not None and count is not None and count != self.fixed_batch:
            results, captured = self._run_in_groups(inputs, offsets, capture, overrides, count)
        else:
            results, captured = self._run(inputs, offsets, capture, overrides)
        result = results[0] if len(results) == 1 else results
        if capture:
            return result, captured
        return result

    def _run(
        self,
        inputs: tuple[torch.Tensor, ...],
        offsets: Mapping[str, torch.Tensor],
        capture: tuple[str, ...],
        overrides: Mapping[str, torch.Tensor] | None,
    ) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
        """The requested outputs and the captured tensors of one pass over the plan."""
        plan = self._plan(capture)
        env: dict[str, torch.Tensor] = {
            name: self._parameters[key] for name, key in self._parameter_keys.items()
        }
        for name, key in self._buffer_keys.items():
            env[name] = self._buffers[key]
        if overrides:
            unknown = [name for name in overrides if name not in self._parameter_keys]
            if unknown:
                raise InputError(f"override {unknown[0]!r} is not a float initializer")
            env.update(overrides)
        env.update(zip(self.input_names, inputs))
        mode = BATCH_STATISTICS.set((self.batch_statistics, self.update_running_statistics))
        try:
            for step in plan:
                step.run(env)
                for name in offsets.keys() & step.outputs:
                    env[name] = env[name] + offsets[name]
        finally:
            BATCH_STATISTICS.reset(mode)
        return tuple(env[name] for name in self.output_names), {n: env[n] for n in capture}

    def _run_in_groups(
        self,
        inputs: tuple[torch.Tensor, ...],
        offsets: Mapping[str, torch.Tensor],
        capture: tuple[str, ...],
        overrides: Mapping[str, torch.Tensor] | None,
        count: int,
    ) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
        """`count` samples through a graph that pins its batch axis: groups of the pinned size
        (the last one zero-padded) under vmap, the padding cut from every result."""
        size = self.fixed_batch
        assert size is not None
        if self.batch_statistics:
            raise InputError(
                f"the graph pins its batch axis at {size}: BatchNormalization cannot run on "
                f"the batch statistics of {count} samples"
            )
        groups = -(-count // size)

        def grouped(tensor: torch.Tensor) -> torch.Tensor:
            padding = groups * size - len(tensor)
            if padding:
                tensor = torch.cat([tensor, tensor.new_zeros((padding, *tensor.shape[1:]))])
            return tensor.reshape(groups, size, *tensor.shape[1:])

        def one_group(group_inputs, group_offsets):
            return self._run(group_inputs, group_offsets, capture, overrides)

        results, captured = torch.func.vmap(one_group)(
            tuple(grouped(t) for t in inputs), {n: grouped(t) for n, t in offsets.items()}
        )

        def ungrouped(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.flatten(0, 1)[:count]

        return tuple(ungrouped(t) for t in results), {n: ungrouped(t) for n, t in captured.items()}

    def _offsets(self, batch: TensorInputs) -> dict[str, torch.Tensor]:
        offsets = {n: t for n, t in batch.tensors.items() if n not in self.input_names}
        unknown = [name for name in offsets if name not in self._computed]
        if unknown:
            raise InputError(f"offset {unknown[0]!r} names no tensor a node of the graph computes")
        return offsets

    def _named_inputs(self, batch: TensorInputs) -> list[torch.Tensor]:
        missing = [name for name in self.input_names if name not in batch.tensors]
        if missing:
            raise InputError(f"no tensor for graph input {missing[0]!r}")
        return [batch.tensors[name] for name in self.input_names]

    def write_back(self) -> onnx.ModelProto:
        """The original model with the current parameter values; untouched tensors stay as read."""
        model = onnx.ModelProto()
        model.CopyFrom(self._proto)
        for tensor in model.graph.initializer:
            key = self._parameter_keys.get(tensor.name)
            if key is not None:
                value = self._parameters[key].detach().cpu().numpy()
                store_if_changed(tensor, value)
        for name, tensor in constant_weights(model.graph).items():
            key = self._parameter_keys.get(name)
            if key is not None:  # None: a Constant the requested outputs do not need
                store_if_changed(tensor, self._parameters[key].detach().cpu().numpy())
        return model


def supported_ops() -> list[str]:
    """ONNX op types the view runs (at some opset; `unsupported_nodes` checks a model's)."""
    return registered_ops()
