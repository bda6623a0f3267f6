"""The repair methods, one file each; `inner-onnx repair --method NAME` offers them all.

Every module of this package is imported here, so a new method is one new file
whose class carries `@register`.
"""

from __future__ import annotations

import importlib
import pkgutil

from inner_onnx.errors import InputError
from inner_onnx.repair.methods.base import REGISTRY, MethodPlan, RepairMethod

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

METHODS: dict[str, RepairMethod] = dict(sorted(REGISTRY.items()))


def method_named(name: str, scenario: str | None = None) -> RepairMethod:
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose auto, {', '.join(METHODS)}")
    method = METHODS[name]
    if scenario is not None and scenario not in method.scenarios:
        raise InputError(
            f"--method {name} does not apply to --scenario {scenario} "
            f"(only {', '.join(method.scenarios)})"
        )
    return method


__all__ = ["METHODS", "MethodPlan", "RepairMethod", "method_named"]
