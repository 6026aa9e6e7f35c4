"""The limits on what a command may carry: absolute ceilings, and the stricter ones an
operator configures.

The ceilings are constants the command types (``tierlog.domain.commands``) are declared
with: nothing above them is ever valid, whatever the configuration. ``CommandLimits``
holds the limits an operator sets (``TIERLOG_MAX_JSON_DEPTH`` …) at or below those
ceilings; the service checks every command against them before deciding it, so a value
past a limit is refused with a ``ValidationError`` naming the field and the limit, and
nothing is appended.

``check_json`` walks a free-form JSON value (``metadata``, an agent's ``result``)
without recursion, so a value nested ten thousand deep is refused at the depth limit
rather than overflowing the stack; it also refuses what the log cannot carry (NaN,
infinity, NUL characters, lone surrogates, non-string keys, non-JSON types).
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from tierlog.domain.errors import ValidationError

__all__ = [
    "CEILINGS",
    "MAX_BYTES",
    "MAX_GENERATION",
    "MAX_ITEMS",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_JSON_ITEMS",
    "MAX_LONG_NAME",
    "MAX_NAME",
    "MAX_TEXT",
    "CommandLimits",
    "JsonLimitError",
    "check_json",
    "field_name",
]

MAX_TEXT = 100_000
"""The longest free text a command field holds (characters)."""
MAX_NAME = 200
"""The longest identifier or short text (characters)."""
MAX_LONG_NAME = 1_000
"""The longest repository, branch or reason (characters)."""
MAX_ITEMS = 1_000
"""The most entries a list field (capabilities, file hints, models) holds."""
MAX_GENERATION = 2**62
MAX_BYTES = 2**62
MAX_JSON_DEPTH = 64
"""The deepest a JSON value may nest (``{}`` is 1 deep): far below any recursion limit
of the encoders, decoders and validators the value passes through."""
MAX_JSON_BYTES = 16 * 1024 * 1024
"""The largest a JSON value (``metadata``, ``result``) may be, encoded."""
MAX_JSON_ITEMS = 1_000_000
"""The most entries one JSON array or object may hold."""
_MIN_INT, _MAX_INT = -(2**63), 2**64 - 1  # the integers msgspec encodes natively


def field_name(location: tuple[int | str, ...]) -> str:
    """``("needed_capabilities", 0)`` → ``needed_capabilities[0]``."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


class CommandLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The limits a command is checked against before it is decided.

    Each is at least 1 and at most its ceiling; the defaults are what ``tierlog serve``
    enforces unless configured otherwise (README, Configuration).
    """

    max_json_depth: int = 32
    """How deep ``metadata`` or a ``result`` may nest."""
    max_string_chars: int = MAX_TEXT
    """The longest string a command carries, anywhere (a field, a key, a JSON string)."""
    max_list_items: int = 10_000
    """The most entries of one list (a list field, a JSON array or object)."""
    max_metadata_bytes: int = 64 * 1024
    """The largest a task's ``metadata`` may be, encoded as JSON."""
    max_result_bytes: int = 512 * 1024
    """The largest an agent's ``result`` may be, encoded as JSON."""

    def __post_init__(self) -> None:
        for name, ceiling in _CEILING_OF.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValidationError(f"{name} must be an integer", field=name)
            if not 1 <= value <= ceiling:
                raise ValidationError(
                    f"{name} must be from 1 to {ceiling}, not {value}", field=name
                )


_CEILING_OF = {
    "max_json_depth": MAX_JSON_DEPTH,
    "max_string_chars": MAX_JSON_BYTES,
    "max_list_items": MAX_JSON_ITEMS,
    "max_metadata_bytes": MAX_JSON_BYTES,
    "max_result_bytes": MAX_JSON_BYTES,
}

CEILINGS = CommandLimits(**_CEILING_OF)
"""Every limit at its ceiling: what the command types enforce on their own."""


class JsonLimitError(ValueError):
    """A JSON value the log must not carry: what is wrong, and where inside the value
    (``.steps[3]``; empty for the value itself)."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(f"{message} (at {where})" if where else message)
        self.reason = message
        self.where = where


# A place inside a JSON value, as a chain (parent, key): built only when it is needed.
_Place = tuple[Any, int | str] | None


def _where(place: _Place) -> str:
    parts: list[int | str] = []
    while place is not None:
        place, key = place
        parts.append(key)
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in reversed(parts))


def _check_text(text: str, limits: CommandLimits, place: _Place) -> None:
    if len(text) > limits.max_string_chars:
        raise JsonLimitError(
            f"a string of {len(text)} characters is over the limit of "
            f"{limits.max_string_chars} (max_string_chars)",
            _where(place),
        )
    if "\x00" in text:
        raise JsonLimitError("must not contain NUL characters", _where(place))


def _check_scalar(value: Any, limits: CommandLimits, place: _Place) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _check_text(value, limits, place)
    elif isinstance(value, int):
        if not _MIN_INT <= value <= _MAX_INT:
            raise JsonLimitError("holds an integer outside the 64-bit range", _where(place))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise JsonLimitError(
                "holds a number JSON cannot carry (NaN or infinite)", _where(place)
            )
    else:
        raise JsonLimitError(f"a {type(value).__name__} is not a JSON value", _where(place))


def _check_shape(value: Any, limits: CommandLimits) -> None:
    # Depth first with an explicit stack: no recursion, whatever the nesting.
    stack: list[tuple[Any, int, _Place]] = [(value, 1, None)]
    while stack:
        node, depth, place = stack.pop()
        if not isinstance(node, dict | list | tuple):
            _check_scalar(node, limits, place)
            continue
        if depth > limits.max_json_depth:
            raise JsonLimitError(
                f"nested deeper than {limits.max_json_depth} levels (max_json_depth)"
            )
        if len(node) > limits.max_list_items:
            raise JsonLimitError(
                f"{len(node)} entries, over the limit of {limits.max_list_items} (max_list_items)",
                _where(place),
            )
        if isinstance(node, dict):
            for key, item in node.items():
                if not isinstance(key, str):
                    raise JsonLimitError("object keys must be strings", _where(place))
                _check_text(key, limits, place)
                stack.append((item, depth + 1, (place, key)))
        else:
            stack.extend((item, depth + 1, (place, i)) for i, item in enumerate(node))


def check_json(
    value: Any, limits: CommandLimits, *, max_bytes: int = MAX_JSON_BYTES, setting: str = ""
) -> int:
    """The encoded size of ``value``, once it is known to be JSON the log can carry
    within ``limits`` and at most ``max_bytes`` encoded (``setting`` names that limit
    in the error). Raises ``JsonLimitError`` saying what is wrong and where."""
    if isinstance(value, dict | list | tuple) and not value:
        size = 2  # "{}" or "[]": nothing inside to check (most submissions' metadata)
    else:
        _check_shape(value, limits)
        try:
            size = len(msgspec.json.encode(value))
        except UnicodeEncodeError:
            raise JsonLimitError("must be valid Unicode (it holds a lone surrogate)") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise JsonLimitError(f"must be JSON: {exc}") from None
    if size > max_bytes:
        name = f" ({setting})" if setting else ""
        raise JsonLimitError(f"{size} bytes encoded, over the limit of {max_bytes}{name}")
    return size
