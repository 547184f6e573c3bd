"""Value rules attached to config fields, next to their defaults.

A field declares its allowed range through its dataclass metadata::

    ims_per_batch: int = field(default=8, metadata=rules(at_least(1)))

The loader applies the rules to every value read from a file or the command line and raises a
`ConfigError` naming the key, its source, the rule and the value. A rule is a callable that gets
the (already type-checked) value and returns what is wrong with it, or None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

Rule = Callable[[Any], "str | None"]
METADATA_KEY = "rules"


def rules(*checks: Rule) -> dict[str, tuple[Rule, ...]]:
    """Field metadata holding `checks` (all must pass)."""
    return {METADATA_KEY: tuple(checks)}


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def at_least(low: float) -> Rule:
    def rule(value: Any) -> str | None:
        return None if value >= low else f"must be >= {_num(low)}"

    return rule


def above(low: float) -> Rule:
    def rule(value: Any) -> str | None:
        return None if value > low else f"must be > {_num(low)}"

    return rule


def at_most(high: float) -> Rule:
    def rule(value: Any) -> str | None:
        return None if value <= high else f"must be <= {_num(high)}"

    return rule


def between(low: float, high: float) -> Rule:
    """low <= value <= high."""

    def rule(value: Any) -> str | None:
        return None if low <= value <= high else f"must be between {_num(low)} and {_num(high)}"

    return rule


def length(*allowed: int) -> Rule:
    def rule(value: Sequence) -> str | None:
        if len(value) in allowed:
            return None
        options = " or ".join(str(n) for n in allowed)
        return f"must have {options} entries"

    return rule


def one_of(*allowed: Any) -> Rule:
    def rule(value: Any) -> str | None:
        return None if value in allowed else f"must be one of {', '.join(str(a) for a in allowed)}"

    return rule


def not_empty(value: Sequence) -> str | None:
    return None if len(value) > 0 else "must not be empty"


def each(*checks: Rule) -> Rule:
    """Apply `checks` to every entry of a list (nested lists are entered too)."""

    def rule(value: Sequence) -> str | None:
        for i, item in enumerate(value):
            for check in checks:
                problem = check(item)
                if problem is not None:
                    return f"entry {i}: {problem}"
        return None

    return rule


def ascending(value: Sequence) -> str | None:
    """Entries in non-decreasing order (e.g. a [min, max] range)."""
    ok = all(a <= b for a, b in zip(value, value[1:]))
    return None if ok else "must be in ascending order ([min, max])"


def finite(value: float) -> str | None:
    return None if math.isfinite(value) else "must be a finite number"


def field_problem(metadata: Any, value: Any) -> str | None:
    """First rule of a field's metadata that `value` breaks, or None."""
    for check in (metadata or {}).get(METADATA_KEY, ()):
        problem = check(value)
        if problem is not None:
            return problem
    return None
