"""The defects inner-onnx repairs, one `Scenario` per file (DESIGN.md, the scenario table).

Every module of this package is imported here, so a new scenario is one new file
whose class carries `@register`.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from inner_onnx.errors import InputError
from inner_onnx.io.specs import AttackSpec, TriggerSpec
from inner_onnx.scenarios.base import REGISTRY, BadSamples, BadSource, Measurement, Scenario

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

# In the order of DESIGN.md's scenario table; scenarios added later follow by name.
_ORDER = ("backdoor", "adversarial", "wrong")
SCENARIOS: dict[str, Scenario] = {
    name: REGISTRY[name]
    for name in sorted(REGISTRY, key=lambda n: (_ORDER.index(n) if n in _ORDER else 99, n))
}


def scenario_named(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise InputError(f"unknown scenario {name!r}; choose {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


def bad_source(
    scenario: str | None,
    bad_path: Path | None = None,
    trigger: TriggerSpec | None = None,
    attack: AttackSpec | None = None,
    target_label: int | None = None,
    clip: tuple[float, float] | None = None,
) -> BadSource:
    """The user's options as a BadSource, or a one-line refusal of a bad combination."""
    given = [
        name
        for name, value in (("--bad", bad_path), ("--trigger", trigger), ("--attack", attack))
        if value
    ]
    if len(given) > 1:
        raise InputError(f"give one source of bad samples, not {' and '.join(given)}")
    if scenario is None:
        by_option = [s.name for s in SCENARIOS.values() if given and given[0] in s.sources]
        if not by_option:
            raise InputError("give --bad, --trigger, --attack or --scenario wrong")
        scenario = by_option[0]
    scenario_named(scenario).check_source(given)
    if trigger is not None and target_label is None:
        raise InputError("--trigger needs --target-label (the attacker's class)")
    return BadSource(scenario, bad_path, trigger, attack, target_label, clip)


__all__ = [
    "SCENARIOS",
    "BadSamples",
    "BadSource",
    "Measurement",
    "Scenario",
    "bad_source",
    "scenario_named",
]
