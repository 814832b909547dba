"""One home for checks of allowed values: each raises `ConfigError` with the one line `lnl: error: ...` that names
the setting, the bad value and what is allowed (the CLI prints it and exits 2; docs/design.md, "Bad input").

Every validator returns the value it accepted, so a constructor reads `self.k = at_least("model.k", k, 1)`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn, TypeVar

from lnl.errors import ConfigError

T = TypeVar("T")


def fail(name: str, value: Any, requirement: str) -> NoReturn:
    """Raise `ConfigError("<name> = <value>: <requirement>")`, the shape of every message below."""
    raise ConfigError(f"{name} = {value}: {requirement}")


def _listed(allowed: Iterable[Any]) -> str:
    return ", ".join(map(str, allowed))


def one_of(name: str, value: T, allowed: Iterable[Any]) -> T:
    """`value` when it is one of `allowed`, else `<name> = 'v': allowed values are a, b, c`."""
    allowed = tuple(allowed)
    if value not in allowed:
        fail(name, repr(value), f"allowed values are {_listed(allowed)}")
    return value


def registered(name: str, value: str, registry: Mapping[str, T]) -> T:
    """The entry of a registry (datasets, transform families, views) named `value`, else
    `<name> = 'v': unknown; allowed are a, b, c` (in the registry's order)."""
    if value not in registry:
        fail(name, repr(value), f"unknown; allowed are {_listed(registry)}")
    return registry[value]


def at_least(name: str, value: T, low: float, meaning: str = "") -> T:
    """`value` when `value >= low`, else `<name> = v: must be >= low` (or `must be <meaning>` when given)."""
    if not value >= low:  # also refuses NaN
        fail(name, value, f"must be {meaning or f'>= {low}'}")
    return value


def positive(name: str, value: T, what: str = "positive") -> T:
    """`value` when `value > 0`, else `<name> = v: must be <what>` (e.g. `a positive integer`)."""
    if not value > 0:
        fail(name, value, f"must be {what}")
    return value


def off_or_positive(name: str, value: T, unit: str = "") -> T:
    """`value` when it is 0 (off) or positive, else `<name> = v: must be 0 (off) or positive` (or `... or a
    positive number of <unit>`)."""
    if not value >= 0:
        fail(name, value, "must be 0 (off) or " + (f"a positive number of {unit}" if unit else "positive"))
    return value


def in_interval(name: str, value: T, low: float, high: float, closed: str = "[)") -> T:
    """`value` inside the interval from `low` to `high` (`closed`: which ends belong to it, `[)`, `(]`, `[]` or
    `()`), else `<name> = v: must be in [low, high)`."""
    above = value >= low if closed[0] == "[" else value > low
    below = value <= high if closed[1] == "]" else value < high
    if not (above and below):
        fail(name, value, f"must be in {closed[0]}{low}, {high}{closed[1]}")
    return value


def existing_file(name: str, path: str | os.PathLike[str], hint: str = "") -> str | os.PathLike[str]:
    """`path` when it is a file, else `<name> = path: file not found` (and `; <hint>` when given)."""
    if not os.path.isfile(path):
        fail(name, path, "file not found" + (f"; {hint}" if hint else ""))
    return path


def known_keys(what: str, given: Iterable[str], allowed: Iterable[str]) -> None:
    """Refuse option names not in `allowed`: `<what> ['k']: unknown; allowed are ['a', 'b']` (sorted)."""
    allowed = list(allowed)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(f"{what} {unknown}: unknown; allowed are {allowed}")
