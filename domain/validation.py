"""Argument checks shared by the commands: each raises ``ValidationError`` naming the field."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from tierlog.domain.errors import ValidationError

MAX_TEXT = 100_000
MAX_NAME = 200
MAX_ITEMS = 1_000


def text(value: object, field: str, *, max_len: int = MAX_TEXT) -> str:
    """A non-empty string (white space alone counts as empty)."""
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string", field=field)
    if not value.strip():
        raise ValidationError(f"{field} must not be empty", field=field)
    if len(value) > max_len:
        raise ValidationError(f"{field} is longer than {max_len} characters", field=field)
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL: refuse it here, before anything is appended.
        raise ValidationError(f"{field} must not contain NUL characters", field=field)
    return value


def name(value: object, field: str) -> str:
    """An identifier: non-empty, at most 200 characters, no white space."""
    result = text(value, field, max_len=MAX_NAME)
    if any(ch.isspace() for ch in result):
        raise ValidationError(f"{field} must not contain white space", field=field)
    return result


def optional_text(value: object, field: str, *, max_len: int = MAX_TEXT) -> str | None:
    """None, or a non-empty string."""
    return None if value is None else text(value, field, max_len=max_len)


def strings(value: object, field: str) -> tuple[str, ...]:
    """A list of non-empty strings (None means empty)."""
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValidationError(f"{field} must be a list of strings", field=field)
    if len(value) > MAX_ITEMS:
        raise ValidationError(f"{field} has more than {MAX_ITEMS} items", field=field)
    return tuple(text(item, f"{field}[{i}]") for i, item in enumerate(value))


def choice(value: object, field: str, allowed: Sequence[str]) -> str:
    """One of ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise ValidationError(f"{field} must be one of {', '.join(allowed)}", field=field)
    return value


def integer(value: object, field: str, *, low: int, high: int) -> int:
    """An int (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{field} must be an integer", field=field)
    if not low <= value <= high:
        raise ValidationError(f"{field} must be between {low} and {high}", field=field)
    return value


def optional_number(
    value: object, field: str, *, low: float = 0.0, high: float = math.inf
) -> float | None:
    """None, or a finite number in ``[low, high]``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{field} must be a number", field=field)
    if not math.isfinite(value) or not low <= value <= high:
        raise ValidationError(f"{field} must be between {low:g} and {high:g}", field=field)
    return float(value)


def optional_count(value: object, field: str) -> int | None:
    """None, or a non-negative int (bytes)."""
    if value is None:
        return None
    return integer(value, field, low=0, high=2**62)


def _non_finite(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_non_finite(v) for v in value)
    return False


def json_value(value: object, field: str) -> Any:
    """Any value that encodes as JSON, without NaN or infinities (JSON has none)."""
    try:
        encoded = msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(f"{field} must be JSON: {exc}", field=field) from exc
    if b"\\u0000" in encoded:
        raise ValidationError(f"{field} must not contain NUL characters", field=field)
    if _non_finite(value):
        raise ValidationError(
            f"{field} holds a number JSON cannot carry (NaN or infinite)", field=field
        )
    return value


def json_object(value: object, field: str) -> dict[str, Any]:
    """A JSON object: a dict with string keys that encodes as JSON."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValidationError(f"{field} must be a JSON object", field=field)
    result: dict[str, Any] = json_value(value, field)
    return result


def aware_datetime(value: object, field: str) -> datetime:
    """A timezone-aware datetime."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValidationError(f"{field} must be a timezone-aware datetime", field=field)
    return value
