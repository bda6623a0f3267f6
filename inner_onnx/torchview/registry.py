"""The op registry: one small torch function per ONNX op, versioned by opset.

Ops are keyed by domain and type: the default ONNX domain, and `ai.onnx.ml` for
the few classical-ML ops scikit-learn exports put in front of a network (Scaler,
Normalizer). An op function takes the node's inputs positionally (`None` for an omitted
optional input) and its attributes as keyword arguments, ONNX names and ONNX
defaults, like the ONNX reference evaluator. It returns one tensor, or a tuple
when the op has several outputs. A function that cannot honour an attribute
value raises `UnsupportedOpError` rather than computing something else.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from inner_onnx.errors import InputError

ONNX_DOMAINS = ("", "ai.onnx")
ML_DOMAIN = "ai.onnx.ml"


class UnsupportedOpError(InputError):
    """A node the torch view cannot execute exactly (op, attribute value, dtype)."""


@dataclass(frozen=True)
class OpVersion:
    since: int
    function: Callable
    attributes: frozenset[str]
    # Whether the function wants `output_count` (how many outputs the node names).
    wants_output_count: bool


_REGISTRY: dict[tuple[str, str], list[OpVersion]] = {}


def domain_key(domain: str) -> str:
    """The registry's name of a node's domain: "" and "ai.onnx" are the same domain."""
    return "" if domain in ONNX_DOMAINS else domain


def op(op_type: str, since: int = 1, domain: str = "") -> Callable[[Callable], Callable]:
    """Register `function` as `op_type` of `domain` for that domain's opsets >= `since`
    (until a later registration)."""

    def register(function: Callable) -> Callable:
        parameters = inspect.signature(function).parameters.values()
        keywords = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
        version = OpVersion(
            since,
            function,
            frozenset(keywords - {"output_count"}),
            "output_count" in keywords,
        )
        versions = _REGISTRY.setdefault((domain_key(domain), op_type), [])
        versions.append(version)
        versions.sort(key=lambda v: v.since)
        return function

    return register


def lookup(op_type: str, opset: int, domain: str = "") -> OpVersion | None:
    """The registration in force at `opset` of `domain`, or None when the op is unknown there."""
    chosen = None
    for version in _REGISTRY.get((domain_key(domain), op_type), ()):
        if version.since <= opset:
            chosen = version
    return chosen


def registered_ops(domain: str = "") -> list[str]:
    """The op types registered in `domain` (the default ONNX domain unless named)."""
    return sorted(name for key, name in _REGISTRY if key == domain_key(domain))
