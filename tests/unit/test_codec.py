from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import uuid4

import msgspec
import pytest
from freezegun import freeze_time

from tierlog.adapters.store.codec import EventCodec, MsgspecMapper, topic_of
from tierlog.domain import events as ev


class ThingHappened(ev.DomainEvent, frozen=True, kw_only=True):
    """Version 2 of a test event: ``size`` was added, ``label`` renamed to ``name``."""

    class_version: ClassVar[int] = 2
    name: str
    size: int

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["name"] = state.pop("label")
        state["size"] = 0


def test_every_event_type_round_trips():
    codec = EventCodec()
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    event = ev.TaskCancelled(
        originator_id=uuid4(), originator_version=7, timestamp=now, reason="x", requested_by="op"
    )
    assert codec.decode(codec.topic(event), codec.encode(event)) == event
    assert topic_of(ev.TaskCancelled) == "domain.events:TaskCancelled"
    assert len({topic_of(t) for t in ev.EVENT_TYPES}) == len(ev.EVENT_TYPES)


def test_old_versions_are_upcast_on_read():
    codec = EventCodec((ThingHappened,))
    old = (
        b'{"originator_id":"%s","originator_version":1,"timestamp":"2026-01-01T00:00:00Z",'
        b'"label":"old"}' % str(uuid4()).encode()
    )
    base = topic_of(ThingHappened).split("@")[0]
    event = codec.decode(base, old)
    assert isinstance(event, ThingHappened)
    assert (event.name, event.size) == ("old", 0)
    assert topic_of(ThingHappened).endswith("@2")


def test_unknown_topic_is_a_decode_error():
    with pytest.raises(msgspec.DecodeError):
        EventCodec().decode("domain.events:Nope", b"{}")


def test_freezegun_datetimes_encode():
    mapper = MsgspecMapper()
    with freeze_time("2026-05-06T07:08:09Z"):
        event = ev.TaskDeadLettered(
            originator_id=uuid4(), originator_version=1, timestamp=datetime.now(UTC), reason="r"
        )
        stored = mapper.to_stored_event(event)
    assert b"2026-05-06T07:08:09" in stored.state
    assert mapper.to_domain_event(stored) == event
