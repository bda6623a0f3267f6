"""Run a model in onnxruntime: class scores, and unit activations pooled to [N, C].

Intermediate tensors are read by marking them as extra graph outputs of an
in-memory copy of the model (as Polygraphy does). onnxruntime keeps every graph
output a real tensor of the original graph: a fusion never swallows a node whose
output is a graph output, and the NCHWc layout pass reorders such outputs back,
so full optimization stays on (the tests compare against torch hooks).

Inputs stream through in batches sized from the model's footprint (batching.py):
memory is one batch of activations plus the [N, C] pooled results, whatever N.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import Fail as OrtFail
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument as OrtInvalidArgument
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidGraph as OrtInvalidGraph
from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented

from inner_onnx.batching import BatchSizes, Footprint
from inner_onnx.errors import InputError
from inner_onnx.io.data import Inputs, check_layout
from inner_onnx.io.model import OnnxModel
from inner_onnx.io.units import CONV_OPS, Unit
from inner_onnx.torchview.graph import fixed_batch, graph_inputs

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ERROR_LOGS_ONLY = 4

Progress = Callable[[int], None]
# The samples to run: one array for a single-input model, else the arrays by input name.
Batch = np.ndarray | Inputs


class DeviceFallbackWarning(UserWarning):
    """CUDA was asked for but this onnxruntime build cannot use it."""


def select_providers(device: str = "auto") -> list[str]:
    """onnxruntime providers for `device`: auto (CUDA when offered, else CPU), cpu or cuda."""
    wanted = device.strip().lower()
    if wanted not in DEVICES:
        raise InputError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")
    has_cuda = CUDA in ort.get_available_providers()
    if wanted == "cpu" or (wanted == "auto" and not has_cuda):
        return [CPU]
    if not has_cuda:
        warnings.warn(
            "device cuda: this onnxruntime has no CUDAExecutionProvider "
            "(install inner-onnx[gpu]); running on CPU",
            DeviceFallbackWarning,
            stacklevel=2,
        )
        return [CPU]
    # CPU stays listed for the few ops the CUDA provider lacks.
    return [CUDA, CPU]


def session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # onnxruntime's warnings (unused initializers, layout notes) are noise to our users.
    options.log_severity_level = ERROR_LOGS_ONLY
    # The arena keeps the largest batch's memory for the session's life (and a run keeps
    # several sessions); without it each batch's tensors go back when the batch is done.
    options.enable_cpu_mem_arena = False
    return options


def _extra_outputs_suffix(proto: onnx.ModelProto, extra_outputs: Sequence[str]) -> bytes:
    """Serialized `ModelProto` holding only the new graph outputs, to append to the model's bytes.

    Concatenated protobuf messages parse as their merge (repeated fields append),
    so the model gains outputs without a second in-memory copy of its weights.
    Outputs stay untyped: onnxruntime infers their types.
    """
    graph = proto.graph
    existing = {value.name for value in graph.output}
    known = {value.name for value in graph.input} | {name for n in graph.node for name in n.output}
    missing = [name for name in extra_outputs if name not in known]
    if missing:
        raise InputError(f"no tensor named {', '.join(map(repr, missing))} in the model graph")
    new = [name for name in dict.fromkeys(extra_outputs) if name not in existing]
    outputs = [onnx.ValueInfoProto(name=name) for name in new]
    return onnx.ModelProto(graph=onnx.GraphProto(output=outputs)).SerializeToString()


# A graph input added to a node's output (`with_offsets`) is named after it with this suffix.
OFFSET_SUFFIX = "::offset"


def with_offsets(proto: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of `proto` in which each named node output has a graph input added to it (named
    with OFFSET_SUFFIX): how onnxruntime runs samples that carry an offset of their token
    embeddings, as the torch view does (`TorchView.forward`). The added input is float32,
    cast to the type of the node's first input when that is an initializer of another type
    (a float16 embedding table). The input has no shape (onnxruntime takes it as given;
    ONNX's full check wants one, but this copy lives in memory only, never written)."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    types = {init.name: init.data_type for init in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        nodes.append(node)
        for index, name in enumerate(node.output):
            if name not in names:
                continue
            clean, offset = f"{name}::clean", name + OFFSET_SUFFIX
            node.output[index] = clean
            graph.input.append(
                onnx.helper.make_tensor_value_info(offset, onnx.TensorProto.FLOAT, None)
            )
            elem_type = types.get(next(iter(node.input), ""), onnx.TensorProto.FLOAT)
            if elem_type != onnx.TensorProto.FLOAT:
                cast = f"{offset}::cast"
                nodes.append(onnx.helper.make_node("Cast", [offset], [cast], cast, to=elem_type))
                offset = cast
            nodes.append(onnx.helper.make_node("Add", [clean, offset], [name], f"{name}::add"))
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _session(model_bytes: bytes, providers: list[str]) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(model_bytes, session_options(), providers=providers)
    except (OrtFail, OrtInvalidArgument, OrtInvalidGraph, OrtNotImplemented) as exc:
        # The checker passes graphs onnxruntime refuses (an int64 tensor into Conv, say).
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"onnxruntime cannot load the model: {first}") from None


def make_session(
    proto: onnx.ModelProto, device: str = "auto", extra_outputs: Sequence[str] = ()
) -> ort.InferenceSession:
    """A session on a copy of `proto` with `extra_outputs` marked as graph outputs."""
    suffix = _extra_outputs_suffix(proto, extra_outputs)
    return _session(proto.SerializeToString() + suffix, select_providers(device))


def pooled_axes(ndim: int, unit: Unit) -> tuple[int, ...]:
    """Axes averaged away to get [N, C]: all but batch and the unit's channel axis.

    Conv/ConvTranspose outputs have channels on axis 1; Gemm/MatMul outputs on the last axis.
    """
    if ndim < 2:
        raise ValueError(f"activation of unit {unit.name!r} has rank {ndim}; need a batch axis")
    if unit.op in CONV_OPS:
        return tuple(range(2, ndim))
    return tuple(range(1, ndim - 1))


def _channel_axis(ndim: int, unit: Unit) -> int:
    return 1 if unit.op in CONV_OPS else ndim - 1


def _check_channels(shape: Sequence[int], unit: Unit) -> None:
    channels = shape[_channel_axis(len(shape), unit)]
    if channels != unit.neurons:
        raise ValueError(
            f"activation of unit {unit.name!r} has shape {list(shape)}: "
            f"{channels} channels where the unit has {unit.neurons} neurons"
        )


def _masks_tokens(shape: Sequence[int], unit: Unit, mask_shape: Sequence[int] | None) -> bool:
    """Does an attention mask ([N, tokens]) weigh this activation: [N, tokens, C]?"""
    return (
        mask_shape is not None
        and len(shape) == 3
        and unit.op not in CONV_OPS
        and tuple(shape[:2]) == tuple(mask_shape)
    )


def pool_activation(array: np.ndarray, unit: Unit, mask: np.ndarray | None = None) -> np.ndarray:
    """[N, C] float32 mean of `unit`'s activation over every axis but batch and channel; a
    text model's token activations ([N, tokens, C]) average over the tokens `mask` keeps
    (padding carries no meaning, and its share would differ with each text's length)."""
    axes = pooled_axes(array.ndim, unit)
    _check_channels(array.shape, unit)
    if not axes:
        return np.asarray(array, dtype=np.float32)
    if mask is not None and _masks_tokens(array.shape, unit, mask.shape):
        weights = mask.astype(np.float32)[..., None]
        total = (array * weights).sum(axis=1, dtype=np.float32)
        return total / np.maximum(weights.sum(axis=1), 1.0)
    return array.mean(axis=axes, dtype=np.float32)


def pool_activation_torch(
    tensor: torch.Tensor, unit: Unit, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Torch twin of `pool_activation` (same axes, same mask), differentiable; half types
    become float32."""
    axes = pooled_axes(tensor.dim(), unit)
    _check_channels(tuple(tensor.shape), unit)
    if tensor.is_floating_point() and tensor.element_size() < 4:
        tensor = tensor.float()
    if mask is not None and _masks_tokens(tuple(tensor.shape), unit, tuple(mask.shape)):
        weights = mask.to(tensor.dtype).unsqueeze(-1)
        return (tensor * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
    # An empty `dim` would mean "reduce everything" to torch.
    return tensor.mean(dim=axes) if axes else tensor


def _one_row_per_sample(one: Sequence[int], two: Sequence[int]) -> bool:
    """Shapes of an activation for one and for two samples: is axis 0 the batch, alone?"""
    return len(one) == len(two) >= 2 and (one[0], two[0]) == (1, 2) and one[1:] == two[1:]


@dataclass
class Capture:
    """One pass over the inputs: class scores, pooled unit activations and, for the units
    asked for, the unpooled activations (what a conv-head probe reads)."""

    scores: np.ndarray
    pooled: dict[str, np.ndarray]
    maps: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


class Runner:
    """A model bound to a device, with one cached session per set of marked outputs.

    Build one per model and reuse it: a session costs a graph optimization pass.
    """

    def __init__(self, model: OnnxModel, device: str = "auto", sizes: BatchSizes | None = None):
        self.model = model
        self.providers = select_providers(device)
        self._sessions: dict[tuple[tuple[str, ...], tuple[str, ...]], ort.InferenceSession] = {}
        self._sizes = sizes

    def batch_sizes(self, x: Batch) -> BatchSizes:
        """Batch sizes for this model's passes, from one sample of `x` measured the first time
        (a model with the same graph, a repaired one, can be given them: `Runner(sizes=)`)."""
        if self._sizes is None:
            if not isinstance(x, np.ndarray):
                # Several inputs (inspect and evaluate only): the caps, not a measurement.
                return BatchSizes()
            self._sizes = BatchSizes.for_footprint(self.footprint(x[:1]))
        return self._sizes

    def footprint(self, sample: np.ndarray) -> Footprint:
        """What one sample takes: every node output marked, in a session used once (so its
        arena does not outlive the measurement). A graph with a fixed batch runs that many
        samples (zero padding) and the total counts for one."""
        graph = self.model.proto.graph
        names = list(dict.fromkeys(out for node in graph.node for out in node.output if out))
        suffix = _extra_outputs_suffix(self.model.proto, names)
        session = _session(self.model.proto.SerializeToString() + suffix, self.providers)
        runs = max(1, self.fixed_batch or 1)
        (_, outputs), *_ = self._batches(session, sample, names, 1, cut=False)
        arrays = [output for output in outputs if isinstance(output, np.ndarray)]
        return Footprint(int(sample.nbytes), sum(int(a.nbytes) for a in arrays) // runs)

    def session(
        self, extra_outputs: Sequence[str] = (), offsets: Sequence[str] = ()
    ) -> ort.InferenceSession:
        """A session with `extra_outputs` marked, on the graph `with_offsets(offsets)`."""
        marked, added = tuple(sorted(set(extra_outputs))), tuple(sorted(set(offsets)))
        key = (marked, added)
        if key not in self._sessions:
            suffix = _extra_outputs_suffix(self.model.proto, marked)
            graph = with_offsets(self.model.proto, added) if added else self.model.proto
            graph_bytes = graph.SerializeToString()
            self._sessions[key] = _session(graph_bytes + suffix, self.providers)
        return self._sessions[key]

    def release(self) -> None:
        """Drop the cached sessions (each holds its own copy of the weights, prepacked); the
        next pass makes its session again."""
        self._sessions.clear()

    def _offsets(self, x: Batch | dict[str, np.ndarray]) -> list[str]:
        """The node outputs `x` carries offsets of (arrays named after no model input)."""
        arrays = x.arrays if isinstance(x, Inputs) else x if isinstance(x, dict) else {}
        inputs = {spec.name for spec in self.model.inputs}
        return [name for name in arrays if name not in inputs]

    @property
    def fixed_batch(self) -> int | None:
        """The inputs' batch size when the graph pins it (exported with batch 1, say)."""
        return fixed_batch(graph_inputs(self.model.proto.graph, self.model.initializers))

    def _arrays(self, x: Batch) -> dict[str, np.ndarray]:
        """`x` by model input name, each checked against its input (the batch axis is free:
        a graph that pins it runs padded batches)."""
        specs = self.model.inputs
        if isinstance(x, Inputs):
            arrays = x.arrays
        elif len(specs) == 1:
            arrays = {specs[0].name: x}
        else:
            names = ", ".join(spec.name for spec in specs)
            raise InputError(f"the model takes {len(specs)} inputs ({names}), got one array")
        for spec in specs:
            if spec.name not in arrays:
                raise InputError(f"no array for model input {spec.name!r}")
            free = dataclasses.replace(spec, shape=(None, *spec.shape[1:]))
            key = spec.name if isinstance(x, Inputs) else "x"
            check_layout(arrays[spec.name].shape, free, "input", key)
        return arrays

    def _feeds(
        self, arrays: dict[str, np.ndarray], rows: slice
    ) -> tuple[dict[str, np.ndarray], int]:
        """One batch per input, in the input's dtype, zero-padded to a fixed batch size."""
        fixed = self.fixed_batch
        feeds, count = {}, 0
        inputs = {spec.name: (spec.name, spec.numpy_dtype) for spec in self.model.inputs}
        offsets = {name: (name + OFFSET_SUFFIX, np.float32) for name in self._offsets(arrays)}
        for name, (feed, dtype) in {**inputs, **offsets}.items():
            batch = np.ascontiguousarray(arrays[name][rows], dtype=dtype)
            count = len(batch)
            if fixed and count < fixed:
                padding = np.zeros((fixed - count, *batch.shape[1:]), dtype=batch.dtype)
                batch = np.concatenate([batch, padding])
            feeds[feed] = batch
        return feeds, count

    def iter_outputs(
        self, x: Batch, names: Sequence[str], batch_size: int | None = None
    ) -> Iterator[tuple[slice, list[np.ndarray]]]:
        """Yield (rows, outputs) per batch, outputs in the order of `names`; `batch_size`
        None: chosen from the model's footprint (`batch_sizes`).

        A model with a fixed batch axis runs at that size, the last batch
        zero-padded and the padding cut from the outputs.
        """
        graph_outputs = {value.name for value in self.model.proto.graph.output}
        session = self.session(
            [name for name in names if name not in graph_outputs], self._offsets(x)
        )
        if batch_size is None:
            batch_size = self.batch_sizes(x).capture
        yield from self._batches(session, x, names, batch_size)

    def _batches(
        self,
        session: ort.InferenceSession,
        x: Batch,
        names: Sequence[str],
        batch_size: int,
        cut: bool = True,
    ) -> Iterator[tuple[slice, list[np.ndarray]]]:
        """`cut`: drop the padding rows of a fixed-batch graph from the outputs (every output
        then needs a batch axis: constants and shapes marked by `footprint` have none)."""
        arrays = self._arrays(x)
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        size = self.fixed_batch or batch_size
        for start in range(0, len(x), size):
            rows = slice(start, min(start + size, len(x)))
            feeds, count = self._feeds(arrays, rows)
            outputs = self._run(session, names, feeds)
            yield rows, [output[:count] for output in outputs] if cut else outputs

    def _run(
        self, session: ort.InferenceSession, names: Sequence[str], feeds: dict[str, np.ndarray]
    ) -> list[np.ndarray]:
        try:
            return session.run(list(names), feeds)
        except (OrtFail, OrtInvalidArgument) as exc:
            first = str(exc).strip().splitlines()[0]
            shapes = "; ".join(
                f"{name} [N, {', '.join(map(str, batch.shape[1:]))}]"
                for name, batch in feeds.items()
            )
            raise InputError(
                f"onnxruntime cannot run the model on inputs of shape {shapes}: {first}"
            ) from None

    def batch_first_units(self, x: Batch, units: Sequence[Unit]) -> list[Unit]:
        """The units whose activation keeps one row per sample on axis 0 ([N, ..., C]).

        Exporters may run attention sequence-first ([tokens, N, C]) or fold the
        tokens into the batch ([tokens * N, C]); such an activation has no row
        per sample to pool, probe or index, so those units are left out. Found
        by running one and then two samples: only axis 0 may change, from 1 to 2.
        A graph with a fixed batch size cannot show it and is taken as it is.
        """
        if self.fixed_batch or len(x) < 2:
            return list(units)
        names = list(dict.fromkeys(unit.activation for unit in units))
        graph_outputs = {value.name for value in self.model.proto.graph.output}
        session = self.session(
            [name for name in names if name not in graph_outputs], self._offsets(x)
        )
        arrays = self._arrays(x)
        one, two = (
            dict(
                zip(
                    names,
                    (
                        o.shape
                        for o in self._run(session, names, self._feeds(arrays, slice(0, k))[0])
                    ),
                )
            )
            for k in (1, 2)
        )
        return [
            unit
            for unit in units
            if _one_row_per_sample(one[unit.activation], two[unit.activation])
        ]

    def capture(
        self,
        x: Batch,
        units: Sequence[Unit] | None = None,
        batch_size: int | None = None,
        progress: Progress | None = None,
        maps: Sequence[str] = (),
    ) -> Capture:
        """Scores and pooled activations of `units` (default: all) in one streaming pass, and
        the whole float32 activations of the units named in `maps` (memory: N times a sample's
        activation each).

        `progress(advance)` is called after each batch with the number of samples done.
        """
        units = list(self.model.units if units is None else units)
        output = self.model.output_name
        names = list(dict.fromkeys([output, *(unit.activation for unit in units)]))
        scores = np.empty((len(x), self.model.num_classes), dtype=np.float32)
        pooled = {unit.name: np.empty((len(x), unit.neurons), np.float32) for unit in units}
        masks = self.token_masks(x)
        kept: dict[str, np.ndarray] = {}
        for rows, outputs in self.iter_outputs(x, names, batch_size):
            by_name = dict(zip(names, outputs))
            scores[rows] = by_name[output]
            mask = None if masks is None else masks[rows]
            for unit in units:
                activation = by_name[unit.activation]
                pooled[unit.name][rows] = pool_activation(activation, unit, mask)
                if unit.name in maps:
                    if unit.name not in kept:
                        kept[unit.name] = np.empty((len(x), *activation.shape[1:]), np.float32)
                    kept[unit.name][rows] = activation
            if progress is not None:
                progress(rows.stop - rows.start)
        return Capture(scores, pooled, kept)

    def token_masks(self, x: Batch) -> np.ndarray | None:
        """The attention mask of a text model's samples, None when it has none."""
        spec = self.model.mask_input
        return x.arrays[spec.name] if spec is not None and isinstance(x, Inputs) else None

    def scores(self, x: Batch, batch_size: int | None = None) -> np.ndarray:
        """[N, num_classes] model outputs, from the unmarked graph."""
        scores = np.empty((len(x), self.model.num_classes), dtype=np.float32)
        for rows, (batch_scores,) in self.iter_outputs(x, [self.model.output_name], batch_size):
            scores[rows] = batch_scores
        return scores

    def predict(self, x: Batch, batch_size: int | None = None) -> np.ndarray:
        return self.scores(x, batch_size).argmax(axis=1)

    def pooled(
        self,
        x: Batch,
        units: Sequence[Unit] | None = None,
        batch_size: int | None = None,
        progress: Progress | None = None,
    ) -> dict[str, np.ndarray]:
        return self.capture(x, units, batch_size, progress).pooled


def predict_scores(
    model: OnnxModel, x: Batch, batch_size: int | None = None, device: str = "auto"
) -> np.ndarray:
    return Runner(model, device).scores(x, batch_size)


def predict(
    model: OnnxModel, x: Batch, batch_size: int | None = None, device: str = "auto"
) -> np.ndarray:
    return Runner(model, device).predict(x, batch_size)


def capture_pooled(
    model: OnnxModel,
    x: np.ndarray,
    units: Sequence[Unit] | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    return Runner(model, device).pooled(x, units, batch_size, progress)


def parity_max_abs_diff(
    proto: onnx.ModelProto, x: Batch, outputs: Sequence[str] | None = None
) -> float:
    """Largest |view - onnxruntime| over `outputs` (default: all graph outputs; others are
    marked as extra outputs) on the batch `x` (CPU provider)."""
    import torch

    from inner_onnx.torchview import TorchView

    names = [value.name for value in proto.graph.output] if outputs is None else list(outputs)
    suffix = _extra_outputs_suffix(proto, names)
    session = _session(proto.SerializeToString() + suffix, [CPU])
    view = TorchView(proto, names)
    arrays = x.arrays if isinstance(x, Inputs) else {view.input_names[0]: x}
    types = {value.name: value.type.tensor_type.elem_type for value in proto.graph.input}
    feeds = {
        name: np.ascontiguousarray(
            arrays[name], dtype=onnx.helper.tensor_dtype_to_np_dtype(types[name])
        )
        for name in view.input_names
    }
    count = len(next(iter(feeds.values())))
    size = view.fixed_batch or count
    if view.fixed_batch:
        # onnxruntime runs a pinned batch axis that many rows at a time; the view runs them
        # all at once (in groups of that size)
        rows = np.arange(size * max(1, count // size)) % count
        feeds = {name: array[rows] for name, array in feeds.items()}
        count = len(rows)
    try:
        chunks = [
            session.run(names, {name: array[start : start + size] for name, array in feeds.items()})
            for start in range(0, count, size)
        ]
        expected = chunks[0] if len(chunks) == 1 else [np.concatenate(c) for c in zip(*chunks)]
    except (OrtFail, OrtInvalidArgument) as exc:
        shapes = ", ".join(f"{name} {list(array.shape)}" for name, array in feeds.items())
        raise InputError(
            f"onnxruntime cannot run the model on inputs of shape {shapes}: "
            f"{str(exc).strip().splitlines()[0]}"
        ) from None
    with torch.no_grad():
        got = view(*(torch.from_numpy(feeds[name]) for name in view.input_names))
    got = got if isinstance(got, tuple) else (got,)
    return max(
        float(np.max(np.abs(g.numpy().astype(np.float64) - e.astype(np.float64)), initial=0.0))
        for g, e in zip(got, expected)
    )
