"""Other releases of tierlog, as far as the log can tell: a log opened with another set
of event types (an older release that lacks a type or a version, a newer one that adds
them). Shared by the tests of schema evolution (``tests`` is on the path through its
``conftest.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import uuid4

import msgspec

from tierlog.adapters.store.codec import EventCodec, MsgspecMapper
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import events as ev

NOW = datetime(2026, 12, 1, tzinfo=UTC)

ADDED_SINCE_CHECKED_IN_LOGS: frozenset[type[ev.DomainEvent]] = frozenset(
    {ev.SchedulerLeaderElected, ev.TaskDeescalated, ev.AgentCameBack}
)
"""Event types added after the releases that wrote ``tests/data``'s logs (0.1.0 and
495766a): those logs hold every other type, and never these."""

FIELDS_ADDED_SINCE_CHECKED_IN_LOGS: dict[str, tuple[str, ...]] = {
    "TaskSubmitted": ("retry_backoff_s", "retry_backoff_max_s"),
    "TaskRequeued": ("not_before",),
    "TaskRouted": ("reason",),
    "AgentWentOffline": ("last_seen_at",),
    "SchedulerConfigured": (
        "config.retry_backoff_s",
        "config.retry_backoff_max_s",
        "config.agent_idle_timeout_s",
    ),
}
"""Payload fields (dotted into nested structs) added, each with a default, after the
releases that wrote ``tests/data``'s logs: re-encoding one of their events writes these
too, at their defaults (ARCHITECTURE.md, "Changing an event": a new field with a
default is fine as it is)."""


def as_encoded_then(stored_name: str, payload: bytes) -> bytes:
    """``payload`` (a re-encoded event) as the release that wrote the checked-in logs
    encoded it: the fields added since left out, the rest byte for byte."""
    fields = FIELDS_ADDED_SINCE_CHECKED_IN_LOGS.get(stored_name)
    if not fields:
        return payload
    document = msgspec.json.decode(payload)
    for dotted in fields:
        *path, name = dotted.split(".")
        holder = document
        for step in path:
            holder = holder[step]
        holder.pop(name)
    return msgspec.json.encode(document)


def as_release(log: EventLog, event_types: tuple[type[ev.DomainEvent], ...]) -> EventLog:
    """``log`` read and written as a release whose event types are ``event_types``
    would: the same codec, over other types (the one seam a release changes)."""
    codec = EventCodec(event_types)
    log.codec = codec
    mapper = log.mapper
    assert isinstance(mapper, MsgspecMapper)
    mapper.codec = codec
    return log


def with_types(*extra: type[ev.DomainEvent]) -> tuple[type[ev.DomainEvent], ...]:
    """This release's event types, with ``extra`` added or put in place of the type of
    the same stored name."""
    names = {t.stored_name for t in extra}
    return (*[t for t in ev.EVENT_TYPES if t.stored_name not in names], *extra)


def newer_type(stored_name: str, version: int) -> type[ev.DomainEvent]:
    """An event type as a later release might declare it: ``stored_name`` at class
    version ``version`` (with the upcasters the rule asks for), carrying a new field."""

    def keep(state: dict[str, Any]) -> None:
        """A later release's step (its content does not matter to this one)."""

    upcasters = {f"upcast_v{v}_v{v + 1}": staticmethod(keep) for v in range(1, version)}
    return type(
        f"Newer{stored_name}",
        (ev.DomainEvent,),
        {
            "__annotations__": {
                "stored_name": ClassVar[str],
                "class_version": ClassVar[int],
                "novelty": str,
            },
            "stored_name": stored_name,
            "class_version": version,
            **upcasters,
        },
        frozen=True,
        kw_only=True,
    )


def append_as_newer_release(url: str, stored_name: str, version: int) -> int:
    """Append one event of ``stored_name`` at class ``version`` to the log at ``url``,
    as a newer tierlog would (hash chain and all); its position."""
    newer = newer_type(stored_name, version)
    log = as_release(EventLog(url), with_types(newer))
    try:
        event = newer(originator_id=uuid4(), originator_version=1, timestamp=NOW, novelty="x")
        return log.append([event])[0]
    finally:
        log.close()
