"""``projections.base.Fold``: which handlers see which events, over which positions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from memory_rows import MemoryRows

from tierlog.domain import events as ev
from tierlog.projections.base import Fold, Handler, Table
from tierlog.projections.tasks import TasksProjection
from tierlog.projections.telemetry import TelemetryProjection

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LOG = Table("log", (("name", "TEXT"), ("position", "INTEGER")), key=("name", "position"))


class Recording:
    """A projection that writes down each event it is handed, and counts the questions."""

    tables: Sequence[Table] = (LOG,)

    def __init__(self, name: str, types: tuple[type, ...]) -> None:
        self.name = name
        self.types = types
        self.asked: list[type] = []

    def _record(self, rows: Any, position: int, event: ev.DomainEvent) -> None:
        rows.put(LOG, [self.name, position])

    def handlers_for(self, event_type: type) -> Sequence[Handler]:
        self.asked.append(event_type)
        return (self._record,) if event_type in self.types else ()


def _heartbeat() -> ev.TaskHeartbeated:
    return ev.TaskHeartbeated(
        originator_id=uuid4(),
        originator_version=2,
        timestamp=T0,
        agent_id="a1",
        generation=1,
        lease_expires_at=T0,
    )


def _endpoint_health() -> ev.EndpointHealthReported:
    return ev.EndpointHealthReported(
        originator_id=uuid4(),
        originator_version=2,
        timestamp=T0,
        endpoint_id="gpu-a",
        ok=True,
        models=("llama3",),
        status="healthy",
        consecutive_failures=0,
    )


def _seen(rows: MemoryRows, name: str) -> list[int]:
    return sorted(key[1] for (_, key) in rows.rows if key[0] == name)


def test_each_projection_sees_only_its_window_of_positions() -> None:
    early = Recording("early", (ev.TaskHeartbeated,))
    late = Recording("late", (ev.TaskHeartbeated,))
    rows = MemoryRows()
    events = [(p, _heartbeat()) for p in range(1, 11)]
    Fold([(early, 0, 4), (late, 6, None)]).apply(rows, events)
    assert _seen(rows, "early") == [1, 2, 3, 4]
    assert _seen(rows, "late") == [7, 8, 9, 10]


def test_types_a_projection_does_not_fold_never_reach_it() -> None:
    heartbeats = Recording("heartbeats", (ev.TaskHeartbeated,))
    rows = MemoryRows()
    fold = Fold([(heartbeats, 0, None)])
    fold.apply(rows, [(1, _endpoint_health()), (2, _heartbeat()), (3, _endpoint_health())])
    assert _seen(rows, "heartbeats") == [2]
    assert fold.handles(ev.TaskHeartbeated)
    assert not fold.handles(ev.EndpointHealthReported)


def test_handlers_are_asked_for_once_per_event_type() -> None:
    recording = Recording("r", (ev.TaskHeartbeated,))
    fold = Fold([(recording, 0, None)])
    for start in (1, 101):
        events = [(start + i, _heartbeat() if i % 2 else _endpoint_health()) for i in range(100)]
        fold.apply(MemoryRows(), events)
    assert sorted(t.__name__ for t in recording.asked) == [
        "EndpointHealthReported",
        "TaskHeartbeated",
    ]


def test_telemetry_counts_every_event_and_tasks_ignore_endpoint_events() -> None:
    assert len(TelemetryProjection().handlers_for(ev.EndpointHealthReported)) == 1
    assert len(TelemetryProjection().handlers_for(ev.TaskSubmitted)) == 2
    assert TasksProjection().handlers_for(ev.EndpointHealthReported) == ()
    rows = MemoryRows()
    Fold([(TelemetryProjection(), 0, None)]).apply(
        rows, [(1, _endpoint_health()), (2, _heartbeat())]
    )
    assert rows.rows[("rm_tel_counters", ("events", ""))] == ["events", "", 2]
