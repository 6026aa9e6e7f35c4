"""Read routes: the queue, telemetry, Prometheus metrics, the raw log, health."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from tierlog.adapters.http.deps import (
    CANDIDATE_BUCKETS,
    LATENCY_BUCKETS_MS,
    MAX_POSITION,
    SCORING_BUCKETS_US,
    Ctx,
    MinPosition,
    Reader,
    event_json,
)
from tierlog.adapters.http.models import READ, error_responses

router = APIRouter(tags=["reads"])


@router.get("/v1/queue", responses=READ)
async def queue(
    ctx: Ctx,
    _auth: Reader,
    min_position: MinPosition = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """The first ``limit`` queued tasks in queue order, with tier, timer and why each waits.

    Pollers at the same log position share one query and one encoding.
    """
    position = await ctx.reads.at(min_position)
    return Response(await ctx.reads.queue_page(position, limit), media_type="application/json")


@router.get("/v1/telemetry", responses=READ)
async def telemetry(ctx: Ctx, _auth: Reader, min_position: MinPosition = None) -> dict[str, Any]:
    """Counters and histograms (SPEC §3), and each read model's lag."""
    position = await ctx.reads.at(min_position)
    head = ctx.writer.position
    positions = await ctx.reads.models.projection_positions()
    return {
        "position": position,
        "telemetry": await ctx.reads.models.telemetry(),
        "projection_lag": {name: max(0, head - pos) for name, pos in positions.items()},
    }


def _histogram(
    name: str,
    doc: str,
    data: dict[str, Any],
    bounds: tuple[float, ...] = LATENCY_BUCKETS_MS,
    sum_key: str = "sum_ms",
    scale: float = 1000,
) -> HistogramMetricFamily:
    """A read-model histogram (non-cumulative buckets) in Prometheus' cumulative form,
    its bounds and sum divided by ``scale`` (milliseconds to seconds by default)."""
    cumulative, buckets = 0, []
    for bound in bounds:
        cumulative += data["buckets"][f"le_{bound:g}"]
        buckets.append((f"{bound / scale:g}", cumulative))
    buckets.append(("+Inf", cumulative + data["buckets"]["le_inf"]))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=data[sum_key] / scale)


class _Snapshot:
    """A one-scrape collector over the telemetry read model."""

    def __init__(
        self,
        data: dict[str, Any],
        lag: dict[str, int],
        head: int,
        node: dict[str, Any],
        memory: dict[str, Any],
    ) -> None:
        self.data, self.lag, self.head, self.node = data, lag, head, node
        self.memory = memory

    def collect(self) -> Any:
        data = self.data
        tasks = GaugeMetricFamily(
            "tierlog_tasks", "Tasks by state and tier", labels=["state", "tier"]
        )
        for state, tiers in data["tasks_by_state_and_tier"].items():
            for tier, count in tiers.items():
                tasks.add_metric([state, tier], count)
        yield tasks
        routing = CounterMetricFamily(
            "tierlog_routing_decisions", "Routing decisions", labels=["tier", "target"]
        )
        for key, count in data["routing_decisions"].items():
            routing.add_metric(key.split("->"), count)
        yield routing
        timers = CounterMetricFamily(
            "tierlog_fallback_timers", "Fallback timers by outcome", labels=["outcome", "reason"]
        )
        for outcome, key in (
            ("started", "started_by_reason"),
            ("fired", "fired_by_reason"),
            ("cancelled", "cancelled"),
        ):
            for reason, count in data["timers"][key].items():
                timers.add_metric([outcome, reason], count)
        yield timers
        yield _histogram(
            "tierlog_fallback_wait_seconds", "Fallback timer waits", data["fallback_wait_ms"]
        )
        yield _histogram(
            "tierlog_submit_to_assign_seconds",
            "Submission to assignment",
            data["submit_to_assign_ms"],
        )
        yield _histogram(
            "tierlog_routing_candidates",
            "Candidates (endpoints) scored per routing decision",
            data["routing_candidates"],
            CANDIDATE_BUCKETS,
            sum_key="sum",
            scale=1,
        )
        yield _histogram(
            "tierlog_routing_scoring_seconds",
            "Time one routing decision took to score its candidates",
            data["routing_scoring_us"],
            SCORING_BUCKETS_US,
            sum_key="sum_us",
            scale=1_000_000,
        )
        lag = GaugeMetricFamily(
            "tierlog_projection_lag_events", "Events behind the log head", labels=["projection"]
        )
        for name, behind in self.lag.items():
            lag.add_metric([name], behind)
        yield lag
        yield GaugeMetricFamily("tierlog_log_head", "Position of the last event", value=self.head)
        yield from _node_metrics(self.node)
        yield from _scheduler_metrics(self.memory)


def _scheduler_metrics(memory: dict[str, Any]) -> Any:
    """What the scheduler holds in memory, its store lookups and its checkpoints."""
    held = GaugeMetricFamily(
        "tierlog_scheduler_records", "Records the scheduler holds in memory", labels=["kind"]
    )
    for kind in ("tasks", "agents", "endpoints", "settled"):
        held.add_metric([kind], memory[kind])
    yield held
    yield CounterMetricFamily(
        "tierlog_recalled_lookups",
        "Records that left memory, looked up in the store by key",
        value=memory["recalled_lookups"],
    )
    checkpoints = memory["checkpoints"]
    if checkpoints is None:
        return
    yield CounterMetricFamily(
        "tierlog_checkpoints_written", "Checkpoints written", value=checkpoints["written"]
    )
    yield CounterMetricFamily(
        "tierlog_checkpoints_failed",
        "Checkpoints that could not be written",
        value=checkpoints["failed"],
    )
    yield GaugeMetricFamily(
        "tierlog_checkpoints_ignored",
        "Checkpoints ignored at start (not the log's, undecodable, other settings)",
        value=len(checkpoints["ignored"]),
    )


def _node_metrics(node: dict[str, Any]) -> Any:
    """This node's role among several on one PostgreSQL log, and its counters."""
    role = GaugeMetricFamily(
        "tierlog_node_leader", "1 if this node is the leader, else 0", labels=["node", "leader"]
    )
    role.add_metric([node["id"] or "", node["leader"] or ""], 1 if node["role"] == "leader" else 0)
    yield role
    yield GaugeMetricFamily(
        "tierlog_leader_epoch", "This node's fencing epoch while it leads", value=node["epoch"] or 0
    )
    yield GaugeMetricFamily(
        "tierlog_follower_lag_events", "Events this node trails the log head by", value=node["lag"]
    )
    for name, doc, key in (
        ("tierlog_forwarded_commands", "Commands this node forwarded to the leader", "forwarded"),
        (
            "tierlog_withdrawn_commands",
            "Forwarded commands no leader answered in time",
            "withdrawn",
        ),
        ("tierlog_fenced_appends", "Appends refused because the lease was lost", "fenced"),
        ("tierlog_elections_won", "Elections this node won", "elections"),
        (
            "tierlog_append_conflicts",
            "Appends that lost a version race and were retried",
            "conflicts",
        ),
    ):
        yield CounterMetricFamily(name, doc, value=node[key])


@router.get("/metrics", response_class=Response, responses=error_responses(401, 403))
async def metrics(ctx: Ctx, _auth: Reader) -> Response:
    """Prometheus text format."""
    head = ctx.writer.position
    positions = await ctx.reads.models.projection_positions()
    registry = CollectorRegistry()
    registry.register(
        _Snapshot(
            await ctx.reads.models.telemetry(),
            {n: max(0, head - p) for n, p in positions.items()},
            head,
            ctx.writer.node(),
            ctx.writer.memory(),
        )
    )
    return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")


@router.get("/v1/log", responses=READ)
async def raw_log(
    ctx: Ctx,
    _auth: Reader,
    after: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Raw events after position ``after``, in order (token digests redacted)."""
    events = await ctx.log.after(after, limit)
    return {
        "events": [event_json(e, position=p) for p, e in events],
        "next_after": events[-1][0] if events else after,
    }


@router.get("/healthz")
async def healthz(ctx: Ctx) -> dict[str, Any]:
    """Liveness, with the log head, each read model's lag and where they are folded
    (``read_models``: in serve's thread, or in a process of their own) (no token needed).

    ``status`` is ``ok``, ``degraded`` while the store fails (``reason`` and ``since``
    say why and since when; writes answer 503 until it recovers), or ``stopped``.
    """
    head = ctx.writer.position
    positions = await ctx.reads.models.projection_positions()
    fault = ctx.writer.store_fault
    node = ctx.writer.node()
    leaderless = node["role"] != "leader" and node["leader"] is None
    status = "stopped" if not ctx.writer.running else "degraded" if fault or leaderless else "ok"
    why = {} if fault is None else {"reason": fault.reason, "since": fault.since.isoformat()}
    if leaderless and fault is None:
        why = {"reason": "no leader is elected: writes answer 503 until one is"}
    return {
        "status": status,
        **why,
        "log_head": head,
        "projections": {n: {"position": p, "lag": max(0, head - p)} for n, p in positions.items()},
        "read_models": ctx.reads.runner.status(),
        "node": node,
        "nodes": await ctx.writer.nodes(),
        "scheduler": ctx.writer.memory(),
    }
