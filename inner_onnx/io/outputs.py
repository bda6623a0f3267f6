"""Which graph output holds the class scores, and the logits behind a final Softmax.

scikit-learn exports (skl2onnx) end in a ZipMap by default: their probabilities output
is a sequence of maps, no tensor. The ZipMap's input, the float [N, C] probabilities
inside the graph, stands in for that output (C: the ZipMap's class labels); the runtime
reads it as an extra graph output, and the written model keeps its ZipMap.
"""

from __future__ import annotations

import re

import onnx

from inner_onnx.errors import InputError
from inner_onnx.torchview.graph import FLOAT_TYPES, value_dims

# Output names taken as the class scores when several outputs qualify (see `class_output`).
SCORE_NAMES = frozenset({"logits", "scores", "probabilities"})


def _behind_zipmap(graph: onnx.GraphProto) -> dict[str, tuple[str, int]]:
    """Graph output of each ZipMap → (its float [N, C] input, C)."""
    outputs = {value.name for value in graph.output}
    behind = {}
    for node in graph.node:
        if node.op_type == "ZipMap" and node.domain == "ai.onnx.ml" and node.output[0] in outputs:
            labels = [
                len(a.ints) or len(a.strings) for a in node.attribute if a.name.startswith("class")
            ]
            if labels and labels[0] >= 2:
                behind[node.output[0]] = (node.input[0], labels[0])
    return behind


def output_candidates(graph: onnx.GraphProto) -> list[tuple[str, int]]:
    """(name, classes) of every tensor that can be class scores: a float [N, C >= 2] graph
    output, or the input of a ZipMap whose output is one (see the module docstring)."""
    candidates = []
    for value in graph.output:
        shape = value_dims(value)
        floating = value.type.tensor_type.elem_type in FLOAT_TYPES
        if floating and len(shape) == 2 and (shape[1] or 0) >= 2:
            candidates.append((value.name, int(shape[1])))  # type: ignore[arg-type]
    named = {name for name, _ in candidates}
    candidates += [c for c in _behind_zipmap(graph).values() if c[0] not in named]
    return candidates


def _score_named(name: str) -> bool:
    return bool(SCORE_NAMES.intersection(re.split(r"[^a-z0-9]+", name.lower())))


def class_output(graph: onnx.GraphProto, output: str | None = None) -> tuple[str, int]:
    """The class-score output and its class count.

    `output` given: that output, which must be float [N, C >= 2] (a ZipMap's output
    stands for the ZipMap's input). Otherwise the
    single output of that kind; with several, the one whose name has the word
    `logits`, `scores` or `probabilities` in it (split at non-alphanumerics:
    `logits`, `output_probabilities`, `head/scores:0`) if exactly one has.
    Anything else is refused with the list of candidates, never guessed.
    """
    candidates = output_candidates(graph)
    listed = ", ".join(f"{name} [N, {classes}]" for name, classes in candidates) or "none"
    if output is not None:
        behind = _behind_zipmap(graph)
        if output in behind:
            return behind[output]
        chosen = [c for c in candidates if c[0] == output]
        if chosen:
            return chosen[0]
        if output in {v.name for v in graph.output}:
            raise InputError(
                f"--output {output!r} is not class scores (need a float [N, classes] output, "
                f"classes >= 2); candidates: {listed}"
            )
        raise InputError(f"--output {output!r}: the model has no such output; candidates: {listed}")
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        described = ", ".join(f"{v.name}{list(value_dims(v))}" for v in graph.output)
        raise InputError(
            f"model output is not class scores (need a float [N, classes] output, classes >= 2; "
            f"got {described})"
        )
    named = [c for c in candidates if _score_named(c[0])]
    if len(named) == 1:
        return named[0]
    raise InputError(
        f"model has {len(candidates)} outputs that could be class scores ({listed}): "
        "name one with --output NAME"
    )


def _logits_name(graph: onnx.GraphProto, output: str) -> str:
    """The tensor before a final Softmax (Keras ends in one; skl2onnx follows it with an
    Identity): losses need logits."""
    producers = {name: node for node in graph.node for name in node.output}
    node = producers.get(output)
    while node is not None and node.op_type == "Identity":
        node = producers.get(node.input[0])
    if node is not None and node.op_type == "Softmax":
        return node.input[0]
    return output
