"""What the dashboard (``/ui``) reads that no other route gives, from the read models,
the log and the scheduler's state.

Everything here only reads: the counts of the overview, the queue by page (10,000
queued tasks are 200 pages of 50, one indexed query each), the agents with their
lease and last sign of life, each endpoint's score for a standard task now, the
routing decisions of the recent past in time buckets, and one readable line per
event for the live feed.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import anyio

from tierlog.adapters.readside.queries import AsyncReadModels
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import events as ev
from tierlog.domain.routing import score_endpoint
from tierlog.domain.state import SchedulerState
from tierlog.projections.base import STATUSES
from tierlog.projections.queue import waiting_reason

QUEUE_PAGE_MAX = 200
"""The most queued tasks one page of the dashboard's queue holds."""
BUCKET_S = 10
"""The width of one bar of the routing-decisions chart, in seconds."""
BUCKETS = 60
"""How many buckets the chart keeps (10 minutes)."""
TAIL_EVENTS = 20_000
"""How far back from the head the first read of the routing series starts."""


async def overview(models: AsyncReadModels) -> dict[str, Any]:
    """Counts at a glance: the queue by tier and priority (and how many wait on a
    timer), agents by status, endpoints by status."""
    queue = await models.fetch(
        "SELECT effective_tier AS tier, priority, COUNT(*) AS n,"
        " SUM(CASE WHEN timer_fires_at IS NULL THEN 0 ELSE 1 END) AS timers"
        " FROM rm_queue WHERE queued = 1 GROUP BY effective_tier, priority"
    )
    agents = await models.fetch("SELECT status, COUNT(*) AS n FROM rm_agents GROUP BY status")
    endpoints = await models.fetch(
        "SELECT status, COUNT(*) AS n FROM rm_endpoints WHERE status <> ? GROUP BY status",
        (STATUSES.code["deregistered"],),
    )
    # In the order of the names (the columns hold codes, which sort otherwise).
    queue.sort(key=lambda r: (r["tier"], r["priority"]))
    return {
        "queue": [
            {"tier": r["tier"], "priority": r["priority"], "count": int(r["n"])} for r in queue
        ],
        "timers_pending": sum(int(r["timers"] or 0) for r in queue),
        "agents": {str(r["status"]): int(r["n"]) for r in sorted(agents, key=_status)},
        "endpoints": {str(r["status"]): int(r["n"]) for r in sorted(endpoints, key=_status)},
    }


def _status(row: dict[str, Any]) -> str:
    return str(row["status"])


async def queue_page(
    models: AsyncReadModels, offset: int, limit: int, now_iso: str
) -> dict[str, Any]:
    """Queued tasks ``offset`` to ``offset + limit`` in queue order, with why each waits,
    and how many are queued."""
    total = await models.fetch("SELECT COUNT(*) AS n FROM rm_queue WHERE queued = 1")
    rows = await models.fetch(
        "SELECT task_id, priority, tier, effective_tier, escalation_reason, generation,"
        " queued_at, complete_by, needed_capabilities, description, timer_fires_at,"
        " timer_fallback_tier, timer_reason FROM rm_queue WHERE queued = 1"
        " ORDER BY priority_rank, submit_position LIMIT ? OFFSET ?",
        (limit, offset),
    )
    for row in rows:
        row["waiting_reason"] = waiting_reason(row, now_iso)
    return {"total": int(total[0]["n"]), "offset": offset, "tasks": rows}


async def agents(models: AsyncReadModels) -> list[dict[str, Any]]:
    """Every registered agent with its current task's lease expiry and when it was last
    heard of (its own last event, or its task's: a heartbeat moves the task)."""
    rows = await models.fetch(
        "SELECT a.agent_id, a.status, a.capabilities, a.ollama_host, a.task_id,"
        " a.generation, a.updated_at, t.lease_expires_at, t.updated_at AS task_updated_at"
        " FROM rm_agents a LEFT JOIN rm_tasks t ON t.task_id = a.task_id"
        " ORDER BY a.agent_id"
    )
    for row in rows:
        task_seen = row.pop("task_updated_at")
        seen = row.pop("updated_at")
        row["last_seen"] = max(seen, task_seen) if task_seen else seen
    return rows


def endpoint_scores(state: SchedulerState, now: datetime) -> dict[str, Any]:
    """What a standard task (no repo) would be routed to now: the target of the
    standard tier, and each endpoint's score (None where it is no candidate)."""
    config = state.config
    if config is None:
        return {"target": None, "scores": {}}
    target = config.rule_for("standard").target
    scores: dict[str, float | None] = {}
    for endpoint in state.endpoints.values():
        if endpoint.status == "deregistered":
            continue
        candidate = target == "ollama" and endpoint.status == "healthy" and bool(endpoint.models)
        scores[endpoint.endpoint_id] = (
            round(score_endpoint(endpoint, None, config, now).score, 4) if candidate else None
        )
    return {"target": target, "scores": scores}


class RoutingSeries:
    """Routing decisions (tier -> target) per ``BUCKET_S`` seconds of event time.

    The first read starts ``TAIL_EVENTS`` before the head; each later one reads only
    what was appended since, so a dashboard polling it costs the new events alone.
    """

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._after: int | None = None
        self._buckets: dict[datetime, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._lock = asyncio.Lock()

    async def read(self) -> dict[str, Any]:
        """The buckets, oldest first (only those with decisions), and the bucket width."""
        async with self._lock:
            await anyio.to_thread.run_sync(self._catch_up)
            return {
                "bucket_s": BUCKET_S,
                "position": self._after,
                "buckets": [
                    {"start": start.isoformat(), "counts": dict(counts)}
                    for start, counts in sorted(self._buckets.items())
                ],
            }

    def _catch_up(self) -> None:
        if self._after is None:
            self._after = max(0, self._log.head() - TAIL_EVENTS)
        # Bounded per call: a huge backlog is read over several calls.
        for _ in range(TAIL_EVENTS // 1000):
            events = self._log.read(self._after, 1000)
            if not events:
                break
            for position, event in events:
                self._after = position
                if isinstance(event, ev.TaskRouted):
                    self._count(event)
        self._trim()

    def _count(self, event: ev.TaskRouted) -> None:
        stamp = event.timestamp
        start = stamp - timedelta(seconds=stamp.second % BUCKET_S, microseconds=stamp.microsecond)
        d = event.decision
        self._buckets[start][f"{d.effective_tier}->{d.target_type}"] += 1

    def _trim(self) -> None:
        if len(self._buckets) <= BUCKETS:
            return
        oldest_kept = max(self._buckets) - timedelta(seconds=BUCKET_S * (BUCKETS - 1))
        for start in [s for s in self._buckets if s < oldest_kept]:
            del self._buckets[start]
