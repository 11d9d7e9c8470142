"""Argument checks shared by the whole package (layer 0: imports nothing from workbench).

Validation happens at the edges (configs, ``build_loss`` and constructors, dataset builders, file
loaders, the CLI): each check raises a ``ValueError`` that names the parameter, says what is allowed
and shows what was given, and returns the value in its canonical type so callers can write
``self.size = check_int("size", size, minimum=1)``.

Python's ``bool`` is a subclass of ``int``, so every integer check here rejects ``True``/``False``
explicitly; numbers accept ``int`` and ``float`` (not ``bool``), NumPy scalars included.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(
    name: str,
    value: object,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """An integer (not a bool) in ``[minimum, maximum]``; None too when ``allow_none``.

    Raises:
        ValueError: ``"{name} must be an integer >= {minimum}, got {value!r}"`` (or the range).
    """
    if value is None and allow_none:
        return None
    if (
        not _is_int(value)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        if minimum is not None and maximum is not None:
            allowed = f"an integer in [{minimum}, {maximum}]"
        elif minimum is not None:
            allowed = f"an integer >= {minimum}"
        elif maximum is not None:
            allowed = f"an integer <= {maximum}"
        else:
            allowed = "an integer"
        raise ValueError(f"{name} must be {'None or ' if allow_none else ''}{allowed}, got {value!r}")
    return int(value)


def check_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
) -> float:
    """A real number (not a bool), finite unless ``finite=False``, within the given interval.

    Args:
        low, high: bounds (None: unbounded on that side).
        low_open, high_open: exclude the bound itself.
        finite: reject NaN and infinities (NaN is always rejected).

    Raises:
        ValueError: naming ``name``, the interval and the value.
    """
    ok = _is_number(value) and not math.isnan(value) and (not finite or math.isfinite(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        kind = "a finite number" if finite else "a number"
        if low is not None and high is not None:
            where = f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            where = f" {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            where = f" {'<' if high_open else '<='} {high:g}"
        else:
            where = ""
        raise ValueError(f"{name} must be {kind}{where}, got {value!r}")
    return float(value)


def check_positive(name: str, value: object) -> float:
    """A finite number > 0 (a temperature, a scale, a width)."""
    return check_number(name, value, low=0.0, low_open=True)


def check_choice(name: str, value: T, allowed: Iterable[T]) -> T:
    """One of ``allowed`` (compared with ``==``; an unhashable value is simply not allowed).

    Raises:
        ValueError: ``"{name} must be one of 'a', 'b'; got {value!r}"``.
    """
    allowed = tuple(allowed)
    if not any(isinstance(value, type(option)) and value == option for option in allowed):
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def check_weights(
    name: str, weights: object, known: Iterable[str], what: str, default: float
) -> dict[str, float]:
    """A mapping from some of ``known`` to finite weights >= 0; the others get ``default``.

    Raises:
        ValueError: not a mapping, an unknown key (``"{name} has unknown {what}(s) [...]"``), or a bad
            weight (``"{name}['key'] must be a finite number >= 0"``).
    """
    known = tuple(known)
    if weights is None:
        weights = {}
    if not isinstance(weights, Mapping):
        raise ValueError(f"{name} must be a mapping from {what} name to weight, got {weights!r}")
    unknown = sorted(set(weights) - set(known))
    if unknown:
        raise ValueError(f"{name} has unknown {what}(s) {unknown}; known: {', '.join(known)}")
    out = dict.fromkeys(known, float(default))
    for key, value in weights.items():
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}[{key!r}] must be a finite number >= 0, got {value!r}")
        out[key] = float(value)
    return out


def check_bool(name: str, value: object) -> bool:
    """``True`` or ``False`` (NumPy bools included), not 0/1 or a string."""
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
    if not isinstance(value, bool) and not numpy_bool:
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


__all__ = ["check_bool", "check_choice", "check_int", "check_number", "check_positive"]
