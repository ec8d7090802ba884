"""The one set of value checks every config uses (``DecodeConfig``, the policy configs, the n-gram
config): a bad value is a one-line ``OptTreeError`` naming the setting, what it must be and what it
got. ``bool`` is never a number here: ``True`` is refused where an integer or a real is meant."""
from __future__ import annotations

import math
import numbers

from .errors import OptTreeError


def check_int(value, what: str, low: int | None = 1, high: int | None = None) -> None:
    """An integer (not a bool) in [low, high]; None: no bound on that side."""
    bounds = [f">= {low}"] if low is not None else []
    bounds += [f"<= {high}"] if high is not None else []
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or (low is not None and value < low) or (high is not None and value > high)):
        raise OptTreeError(f"{what} must be an integer{' ' if bounds else ''}{' and '.join(bounds)}, got {value!r}")


def check_real(value, what: str, low: float | None = None, high: float | None = None, *,
               open_low: bool = False, open_high: bool = False) -> None:
    """A finite real number (not a bool; inf and nan are never a setting) between ``low`` and
    ``high``, each bound included unless ``open_low`` / ``open_high``; None: no bound on that side."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if open_low else value >= low
    if ok and high is not None:
        ok = value < high if open_high else value <= high
    if not ok:
        raise OptTreeError(f"{what} must be {_interval(low, high, open_low, open_high)}, got {value!r}")


def check_prob(value, what: str) -> None:
    """A probability: a real number in [0, 1]."""
    check_real(value, what, 0.0, 1.0)


def _interval(low, high, open_low: bool, open_high: bool) -> str:
    if low is not None and high is not None:
        return f"a number in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    if low is not None:
        return f"a finite number {'>' if open_low else '>='} {low:g}"
    if high is not None:
        return f"a finite number {'<' if open_high else '<='} {high:g}"
    return "a finite number"
