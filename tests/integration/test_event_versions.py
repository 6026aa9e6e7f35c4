"""Events across releases, through a real log on each store (ARCHITECTURE.md, "Changing
an event"): a stored version-1 payload is upcast to version 2 on read, and a release
meeting an event of a later one says so in one line, never with a traceback."""

from __future__ import annotations

from typing import ClassVar
from uuid import uuid4

import pytest
from event_factories import ThingHappenedV2
from releases import NOW, append_as_newer_release, as_release, with_types
from wiring import runtime_on

from tierlog.adapters.audit.run import audit
from tierlog.adapters.store.codec import NewerEventError
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import events as ev
from tierlog.domain.errors import TierlogError


class ThingV1(ev.DomainEvent, frozen=True, kw_only=True):
    """A test-only event as its first release stored it."""

    stored_name: ClassVar[str] = "ThingHappened"
    label: str


def test_a_stored_version_1_event_is_upcast_to_version_2_on_read(store_url):
    thing = uuid4()
    old = as_release(EventLog(store_url), with_types(ThingV1))
    [first] = old.append(
        [ThingV1(originator_id=thing, originator_version=1, timestamp=NOW, label="old")]
    )
    old.close()
    log = as_release(EventLog(store_url), with_types(ThingHappenedV2))
    try:
        upcast = ThingHappenedV2(
            originator_id=thing, originator_version=1, timestamp=NOW, name="old", size=0
        )
        assert log.read(first - 1, 1) == [(first, upcast)]
        assert log.events_of(thing) == [upcast]
        new = ThingHappenedV2(
            originator_id=thing, originator_version=2, timestamp=NOW, name="new", size=3
        )
        [second] = log.append([new])
        assert list(log.iter_events(after=first - 1)) == [(first, upcast), (second, new)]
        # Each is stored as written: the old row under its old topic, the new one at @2.
        topics = [row[3] for rows in log.iter_raw(after=first - 1) for row in rows]
        assert topics == ["ThingHappened", "ThingHappened@2"]
    finally:
        log.close()
    # The first release, meeting the second's event, names it.
    old = as_release(EventLog(store_url), with_types(ThingV1))
    try:
        with pytest.raises(
            NewerEventError, match=r"written by a newer tierlog \(ThingHappened@2\)"
        ):
            old.events_of(thing)
    finally:
        old.close()


@pytest.mark.parametrize(
    ("stored_name", "version", "topic"),
    [("TaskSubmitted", 9, "TaskSubmitted@9"), ("TaskPrioritised", 1, "TaskPrioritised")],
)
def test_an_event_of_a_newer_release_stops_the_runtime_and_the_audit_names_it(
    store_url, stored_name, version, topic
):
    log = EventLog(store_url)
    runtime_on(log).stop()  # this release's log: its configuration recorded
    log.close()
    position = append_as_newer_release(store_url, stored_name, version)
    expected = f"written by a newer tierlog ({topic})"
    log = EventLog(store_url)
    try:
        with pytest.raises(TierlogError) as refused:
            runtime_on(log)
        report = audit(log, parallel=False)
    finally:
        log.close()
    assert isinstance(refused.value, NewerEventError)
    assert refused.value.message.startswith(expected) and "\n" not in refused.value.message
    [violation] = report.violations
    assert violation.position == position and expected in violation.detail
