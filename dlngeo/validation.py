"""Input checks shared by every layer: one-line ``ValueError`` messages that name the argument."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal, overload

import numpy as np

__all__ = [
    "positive_integer",
    "positive_number",
    "check_depth",
    "check_positive",
    "check_nonnegative",
    "check_choice",
    "positive_integers",
    "integer_between",
]


def positive_integer(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer ``>= minimum`` (bools rejected), else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def positive_integers(values: Iterable[Any], name: str) -> list[int]:
    """Every entry of ``values`` as an ``int >= 1`` (bools rejected), else ``ValueError`` naming ``name``."""
    items = list(values)
    for value in items:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be positive integers, got {values!r}")
    return [int(value) for value in items]


def integer_between(value: Any, name: str, low: int, high: int) -> int:
    """``value`` as an ``int`` in ``[low, high]`` (bools rejected), else ``ValueError`` naming ``name``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or not low <= value <= high
    ):
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def check_depth(depth: Any) -> int:
    """The network depth ``N >= 1`` as an ``int``, else ``ValueError`` naming ``depth``."""
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    return int(depth)


def positive_number(value: Any, name: str) -> float:
    """``value`` as a finite ``float > 0``, else ``ValueError`` naming ``name``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not np.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return number


@overload
def check_positive(name: str, value: Any, *, allow_none: Literal[False] = False) -> float: ...
@overload
def check_positive(name: str, value: Any, *, allow_none: bool) -> float | None: ...
def check_positive(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """``value`` as a positive finite float, else ``ValueError`` naming ``name``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not (math.isfinite(float(value)) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_nonnegative(name: str, value: Any) -> float:
    """``value`` as a non-negative finite float, else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    if not (math.isfinite(float(value)) and value >= 0):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else ``ValueError`` naming ``name`` and listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
