"""The Scheduler aggregate: one stream that owns the fallback timers and the recorded
configuration. Its record, how its events evolve it, and its decisions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from msgspec.structs import replace

from tierlog.domain import events as ev
from tierlog.domain.aggregates.task import TaskRecord
from tierlog.domain.config import SchedulerConfig, TierName
from tierlog.domain.errors import InvalidTransitionError
from tierlog.domain.routing import fallback_reason_for


class PendingTimer(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A fallback timer that has started and neither fired nor been cancelled."""

    task_id: UUID
    original_tier: TierName
    fallback_tier: TierName
    started_at: datetime
    fires_at: datetime
    reason: str


class SchedulerRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The scheduler stream's version, the last configuration it recorded, and the
    leader elected last.

    ``config_position`` is where that configuration was recorded (0: none yet); every
    routing decision cites it. ``leader`` and ``epoch`` name the node that decides since
    the last ``SchedulerLeaderElected`` (None and 0 on a log no election was recorded
    in: one node on SQLite). The pending timers are kept beside it, by task.
    """

    version: int = 0
    config: SchedulerConfig | None = None
    config_position: int = 0
    leader: str | None = None
    epoch: int = 0


# --- evolve ----------------------------------------------------------------------------


def evolve(record: SchedulerRecord, event: ev.DomainEvent, position: int) -> SchedulerRecord:
    """The scheduler record after one of its events (recorded at ``position``)."""
    if isinstance(event, ev.SchedulerConfigured):
        return replace(
            record,
            version=event.originator_version,
            config=event.config,
            config_position=position,
        )
    if isinstance(event, ev.SchedulerLeaderElected):
        return replace(
            record, version=event.originator_version, leader=event.node_id, epoch=event.epoch
        )
    return replace(record, version=event.originator_version)


def timer_after(event: ev.DomainEvent) -> PendingTimer | None:
    """The task's pending timer after a timer event: started, or gone (fired, cancelled)."""
    if isinstance(event, ev.FallbackTimerStarted):
        return PendingTimer(
            task_id=event.task_id,
            original_tier=event.original_tier,
            fallback_tier=event.fallback_tier,
            started_at=event.timestamp,
            fires_at=event.fires_at,
            reason=event.reason,
        )
    return None


# --- decisions -------------------------------------------------------------------------


def _event_fields(record: SchedulerRecord, now: datetime) -> dict[str, Any]:
    return {
        "originator_id": ev.SCHEDULER_ID,
        "originator_version": record.version + 1,
        "timestamp": now,
    }


def configure(
    record: SchedulerRecord, config: SchedulerConfig, now: datetime
) -> ev.SchedulerConfigured | None:
    """Record ``config`` unless it is the last one recorded (then ``None``)."""
    if record.config == config:
        return None
    return ev.SchedulerConfigured(**_event_fields(record, now), config=config)


def elect_leader(
    record: SchedulerRecord, node_id: str, epoch: int, now: datetime
) -> ev.SchedulerLeaderElected:
    """``node_id`` decides from now on, under ``epoch``; an epoch that is not newer
    than the last one recorded is refused (a deposed leader's stale claim)."""
    if epoch <= record.epoch:
        raise InvalidTransitionError(
            f"leader epoch {epoch} is not newer than the recorded epoch {record.epoch}",
            field="epoch",
        )
    return ev.SchedulerLeaderElected(**_event_fields(record, now), node_id=node_id, epoch=epoch)


def start_timer(
    record: SchedulerRecord, task: TaskRecord, config: SchedulerConfig, now: datetime
) -> ev.FallbackTimerStarted | None:
    """A timer for a task whose tier has no candidate; ``None`` at the top of the ladder
    (nowhere to go: the task waits, its TTL still applies)."""
    above = config.tier_above(task.route_tier)
    if above is None:
        return None
    return ev.FallbackTimerStarted(
        **_event_fields(record, now),
        task_id=task.task_id,
        original_tier=task.route_tier,
        fallback_tier=above,
        fires_at=now + timedelta(seconds=config.fallback_wait_s),
        reason=fallback_reason_for(config.rule_for(task.route_tier).target),
    )


def fire_timer(
    record: SchedulerRecord, timer: PendingTimer, now: datetime
) -> ev.FallbackTimerFired:
    """The timer's wait is over (SPEC §1.4)."""
    return ev.FallbackTimerFired(
        **_event_fields(record, now),
        task_id=timer.task_id,
        original_tier=timer.original_tier,
        fallback_tier=timer.fallback_tier,
        reason=timer.reason,
        wait_ms=round((now - timer.started_at).total_seconds() * 1000),
    )


def cancel_timer(
    record: SchedulerRecord, task_id: UUID, reason: str, now: datetime
) -> ev.FallbackTimerCancelled:
    """The task no longer needs its timer (assigned, recovered, cancelled, …)."""
    return ev.FallbackTimerCancelled(**_event_fields(record, now), task_id=task_id, reason=reason)
