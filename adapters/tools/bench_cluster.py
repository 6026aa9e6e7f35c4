"""``tierlog bench-cluster``: one and several ``serve`` nodes on one PostgreSQL log,
under HTTP load from 127.0.0.1.

For each node count (default 1 and 3), on a fresh schema: submit→assigned tasks per
second (idle agents are registered first, so a submission's group commit assigns it),
``GET /v1/queue`` reads per second over a backlog of queued tasks, and long-polls
answered per second (agents that hold a task asking for it). Clients are spread over
the nodes round robin; each figure is the median of ``repeats`` runs. The load comes
from this one process (asyncio and aiohttp), so on a small machine it competes with the
nodes and PostgreSQL for the same cores: the JSON says how many processes ran.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
ADMIN = "bench-cluster-operator-token"
RETRY_STATUSES = (502, 503)


class _Fleet:
    """Sessions on every node, and the agents registered so far (with their tokens)."""

    def __init__(self, urls: Sequence[str], connections: int) -> None:
        from tierlog.adapters.tools.bench_http import session

        self.urls = list(urls)
        self.http = [session(url, connections, ADMIN) for url in urls]
        self.tokens: dict[str, str] = {}
        self.holding: list[tuple[str, int]] = []  # (agent id, node index) of busy agents
        self.errors: list[str] = []

    async def close(self) -> None:
        for http in self.http:
            await http.close()

    async def call(
        self, node: int, method: str, path: str, **kwargs: Any
    ) -> tuple[int, dict[str, Any] | None]:
        """One request; a 502/503 is tried again on the next node (at most 50 times)."""
        for attempt in range(50):
            http = self.http[(node + attempt) % len(self.http)]
            async with http.request(method, path, **kwargs) as answer:
                body = await answer.read()
                if answer.status in RETRY_STATUSES:
                    await asyncio.sleep(0.05)
                    continue
                if answer.status >= 400 and len(self.errors) < 20:
                    self.errors.append(f"{method} {path}: {answer.status} {body[:200]!r}")
                return answer.status, json.loads(body) if body else None
        return 503, None


async def _spread(total: int, concurrency: int, job: Callable[[int], Awaitable[None]]) -> float:
    """Run ``job(i)`` for i in range(total) on ``concurrency`` workers; seconds taken."""
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            await job(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def _register(fleet: _Fleet, prefix: str, count: int) -> None:
    async def one(i: int) -> None:
        agent_id = f"{prefix}-{i}"
        status, body = await fleet.call(
            i % len(fleet.urls), "POST", "/v1/agents", json={"agent_id": agent_id}
        )
        if status == 201 and body is not None:
            fleet.tokens[agent_id] = body["token"]

    await _spread(count, 32, one)


async def _submit_to_assigned(
    fleet: _Fleet, run: int, tasks: int, concurrency: int
) -> dict[str, Any]:
    """``tasks`` idle agents, then ``tasks`` submissions: each is assigned in the group
    commit that appends it, so submissions answered per second is submit→assigned."""
    await _register(fleet, f"r{run}", tasks)
    answered: list[float] = []

    async def one(i: int) -> None:
        started = time.perf_counter()
        body = {"description": f"fix typo {run}-{i}", "complexity_tier": "trivial"}
        status, _ = await fleet.call(i % len(fleet.urls), "POST", "/v1/tasks", json=body)
        if status == 201:
            answered.append((time.perf_counter() - started) * 1000)

    elapsed = await _spread(tasks, concurrency, one)
    from tierlog.adapters.tools.bench_http import summary

    return {"tasks": len(answered), "seconds": round(elapsed, 3), **summary(answered or [0.0])}


async def _for_seconds(
    seconds: float, clients: int, request: Callable[[int], Awaitable[bool]]
) -> tuple[int, list[float]]:
    """``clients`` loops calling ``request(client)`` back to back for ``seconds``; the
    number that succeeded and every latency."""
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    done = 0

    async def loop(client: int) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            started = time.perf_counter()
            if await request(client):
                done += 1
                latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(loop(c) for c in range(clients)))
    return done, latencies


async def _queue_reads(fleet: _Fleet, seconds: float, pollers: int) -> dict[str, Any]:
    async def read(client: int) -> bool:
        status, _ = await fleet.call(client % len(fleet.urls), "GET", "/v1/queue")
        return status == 200

    done, latencies = await _for_seconds(seconds, pollers, read)
    from tierlog.adapters.tools.bench_http import summary

    return {"per_s": round(done / seconds), **summary(latencies or [0.0])}


async def _long_polls(fleet: _Fleet, seconds: float, pollers: int) -> dict[str, Any]:
    """Agents that hold a task poll for it (answered at once with their assignment)."""
    agents = list(fleet.tokens)[:pollers]

    async def poll(client: int) -> bool:
        agent_id = agents[client]
        status, _ = await fleet.call(
            client % len(fleet.urls),
            "GET",
            f"/v1/agents/{agent_id}/assignment",
            params={"wait": "5"},
            headers={"Authorization": f"Bearer {fleet.tokens[agent_id]}"},
        )
        return status == 200

    done, latencies = await _for_seconds(seconds, len(agents), poll)
    from tierlog.adapters.tools.bench_http import summary

    return {"per_s": round(done / seconds), "agents": len(agents), **summary(latencies or [0.0])}


def _median_of(runs: list[dict[str, Any]], key: str) -> float:
    return round(float(statistics.median(run[key] for run in runs)), 1)


def _assigned_in_log(store: str) -> int:
    """How many ``TaskAssigned`` the log holds (read-only)."""
    from tierlog.adapters.store.event_log import EventLog
    from tierlog.domain import events as ev

    log = EventLog(store, read_only=True)
    try:
        return sum(1 for _, e in log.iter_events() if isinstance(e, ev.TaskAssigned))
    finally:
        log.close()


async def _measure(
    urls: Sequence[str],
    store: str,
    *,
    tasks: int,
    repeats: int,
    seconds: float,
    pollers: int,
    backlog: int,
) -> dict[str, Any]:
    from tierlog.adapters.tools.cluster_nodes import Node, wait_caught_up

    fleet = _Fleet(urls, connections=max(64, pollers) + 8)
    try:
        writes = []
        for run in range(repeats):
            result = await _submit_to_assigned(fleet, run, tasks, concurrency=48)
            result["per_s"] = round(result["tasks"] / result["seconds"])
            writes.append(result)
        assigned = await asyncio.to_thread(_assigned_in_log, store)
        if assigned != sum(run["tasks"] for run in writes):
            fleet.errors.append(f"{assigned} tasks assigned in the log, not every one submitted")
        # Every agent now holds a task: the backlog stays queued.
        await _spread(
            backlog,
            16,
            lambda i: _discard(
                fleet.call(i % len(urls), "POST", "/v1/tasks", json={"description": f"t {i}"})
            ),
        )
        nodes = [Node(url, "", Path(), port=int(url.rsplit(":", 1)[1])) for url in urls]
        head = (nodes[0].healthz() or {}).get("log_head", 0)
        await asyncio.to_thread(wait_caught_up, nodes, int(head), 30.0)
        reads = [await _queue_reads(fleet, seconds, pollers) for _ in range(repeats)]
        polls = [await _long_polls(fleet, seconds, pollers) for _ in range(repeats)]
    finally:
        await fleet.close()
    return {
        "nodes": len(urls),
        "submit_to_assigned": {"tasks_per_s_median": _median_of(writes, "per_s"), "runs": writes},
        "queue_reads": {
            "pollers": pollers,
            "seconds": seconds,
            "queued_tasks": backlog,
            "per_s_median": _median_of(reads, "per_s"),
            "runs": reads,
        },
        "long_polls": {"per_s_median": _median_of(polls, "per_s"), "runs": polls},
        "errors": fleet.errors,
    }


async def _discard(call: Awaitable[Any]) -> None:
    await call


def _one_size(dsn: str, count: int, workdir: Path, **load: Any) -> dict[str, Any]:
    from tierlog.adapters.tools.cluster_nodes import (
        drop_schema,
        new_schema,
        start_nodes,
        stop_nodes,
        wait_for_leader,
    )

    store = new_schema(dsn, "bench")
    try:
        nodes = start_nodes(store, count, workdir, {"TIERLOG_ADMIN_TOKEN": ADMIN}, f"b{count}n")
        try:
            elected = wait_for_leader(nodes, 15.0)
            figures = asyncio.run(_measure([n.url for n in nodes], store, **load))
            figures["leader_elected"] = elected is not None
        finally:
            stop_nodes(nodes)
    finally:
        drop_schema(store)
    return figures


def _ratio(many: dict[str, Any], one: dict[str, Any], key: str) -> float | None:
    base = one[key]["per_s_median" if key != "submit_to_assigned" else "tasks_per_s_median"]
    top = many[key]["per_s_median" if key != "submit_to_assigned" else "tasks_per_s_median"]
    return round(top / base, 2) if base else None


def run_cluster_bench(
    *,
    dsn: str = DEFAULT_DSN,
    node_counts: Sequence[int] = (1, 3),
    tasks: int = 500,
    repeats: int = 3,
    seconds: float = 5.0,
    pollers: int = 60,
    backlog: int = 200,
) -> dict[str, Any]:
    """Every figure for each node count, then the ratios of the largest to the first."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in node_counts:
            results.append(
                _one_size(
                    dsn,
                    count,
                    Path(tmp),
                    tasks=tasks,
                    repeats=repeats,
                    seconds=seconds,
                    pollers=pollers,
                    backlog=backlog,
                )
            )
    first, last = results[0], results[-1]
    return {
        "store": "postgresql (one schema per node count)",
        "processes": {
            "load_generator": 1,
            "nodes": list(node_counts),
            "postgresql": "one server (its backends per connection)",
            "cpus": os.cpu_count(),
        },
        "results": results,
        f"ratio_{last['nodes']}_to_{first['nodes']}_nodes": {
            "submit_to_assigned": _ratio(last, first, "submit_to_assigned"),
            "queue_reads": _ratio(last, first, "queue_reads"),
            "long_polls": _ratio(last, first, "long_polls"),
        },
    }


def add_command(sub: Any) -> None:
    """Register ``tierlog bench-cluster`` on the CLI's subparsers."""
    from tierlog.adapters.cli_errors import positive

    parser: argparse.ArgumentParser = sub.add_parser(
        "bench-cluster", help="1 and 3 serve nodes on one PostgreSQL log under HTTP load"
    )
    parser.add_argument("--store", default=DEFAULT_DSN, help="a PostgreSQL DSN (no schema)")
    parser.add_argument("--nodes", default="1,3", help="node counts, comma separated")
    parser.add_argument("--tasks", type=positive, default=500, help="submissions per run")
    parser.add_argument("--repeats", type=positive, default=3)
    parser.add_argument("--seconds", type=positive, default=5, help="seconds per read run")
    parser.add_argument("--pollers", type=positive, default=60)
    parser.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from tierlog.domain.errors import ValidationError

    if not args.store.startswith("postgresql://") or "?" in args.store:
        raise ValidationError("bench-cluster needs a PostgreSQL DSN without a query", field="store")
    counts = [int(n) for n in args.nodes.split(",") if n.strip()]
    figures = run_cluster_bench(
        dsn=args.store,
        node_counts=counts,
        tasks=args.tasks,
        repeats=args.repeats,
        seconds=float(args.seconds),
        pollers=args.pollers,
    )
    print(json.dumps(figures, indent=2))
    return 0
