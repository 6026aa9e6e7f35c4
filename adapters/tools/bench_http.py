"""``tierlog bench --http``: the HTTP API under load, on 127.0.0.1 only.

A real ``tierlog serve`` runs in its own process on a temporary SQLite log; the load
comes from this process with aiohttp. Figures: long-poll wake latency with 1,000 agents
polling (the assignment decided → the agent's poll has it), ``GET /v1/queue`` latency
with 100 concurrent pollers, single submissions per second with 64 clients, and tasks
per second through ``POST /v1/tasks/batch``. Each part runs on a fresh server, ``repeats``
times; the medians come first. Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ADMIN = "bench-operator-token"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values_ms: list[float]) -> dict[str, float]:
    """Count, median, 99th percentile and maximum of latencies in milliseconds."""
    return {
        "n": len(values_ms),
        "p50_ms": round(_percentile(values_ms, 0.50), 2),
        "p99_ms": round(_percentile(values_ms, 0.99), 2),
        "max_ms": round(max(values_ms), 2),
    }


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    exe = shutil.which("tierlog") or str(Path(sys.executable).with_name("tierlog"))
    env = {**os.environ, "TIERLOG_ADMIN_TOKEN": ADMIN}
    proc = subprocess.Popen(
        [exe, "serve", "--port", str(port), "--store", f"sqlite:///{workdir / 'bench.db'}"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the bench server did not start")


def session(url: str, connections: int, token: str = ADMIN) -> Any:
    """An aiohttp session on ``url`` with a bearer token and at most ``connections``."""
    try:
        import aiohttp
    except ImportError as exc:  # an optional extra
        raise RuntimeError("the HTTP bench needs aiohttp: pip install -e '.[bench]'") from exc
    return aiohttp.ClientSession(
        base_url=url,
        headers={"Authorization": f"Bearer {token}"},
        connector=aiohttp.TCPConnector(limit=connections),
    )


async def _submissions(url: str, total: int, concurrency: int) -> dict[str, Any]:
    async with session(url, concurrency) as http:
        counter = iter(range(total))
        latencies: list[float] = []

        async def worker() -> None:
            for i in counter:
                started = time.perf_counter()
                body = {"description": f"refactor module {i}", "priority": "normal"}
                async with http.post("/v1/tasks", json=body) as answer:
                    assert answer.status == 201, await answer.text()
                    await answer.read()
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "submissions": total,
        "concurrency": concurrency,
        "per_s": round(total / elapsed),
        **summary(latencies),
    }


def _body(i: int) -> dict[str, Any]:
    # A complex task routes to claude, which is always available: no fallback timer,
    # so each submission is the same work however many are queued.
    return {"description": f"refactor module {i}", "priority": "normal"}


async def _batch_submissions(url: str, total: int, batch: int, concurrency: int) -> dict[str, Any]:
    """``total`` tasks in requests of ``batch``, ``concurrency`` requests at a time."""
    import msgspec

    bodies = [
        msgspec.json.encode({"tasks": [_body(i) for i in range(start, min(total, start + batch))]})
        for start in range(0, total, batch)
    ]  # encoded before the clock starts: the load generator's own work is not timed
    headers = {"Content-Type": "application/json"}
    async with session(url, concurrency) as http:
        pending = iter(bodies)
        latencies: list[float] = []
        accepted = 0

        async def worker() -> None:
            nonlocal accepted
            for body in pending:
                started = time.perf_counter()
                async with http.post("/v1/tasks/batch", data=body, headers=headers) as answer:
                    assert answer.status == 200, await answer.text()
                    accepted += (await answer.json())["accepted"]
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    assert accepted == total, f"{accepted} of {total} accepted"
    return {
        "tasks": total,
        "batch": batch,
        "concurrency": concurrency,
        "tasks_per_s": round(total / elapsed),
        **{f"request_{k}": v for k, v in summary(latencies).items()},
    }


async def _register(admin: Any, agents: int, concurrency: int = 32) -> dict[str, str]:
    names = iter([f"poller-{n}" for n in range(agents)])
    tokens: dict[str, str] = {}

    async def worker() -> None:
        for agent_id in names:
            body = {"agent_id": agent_id, "capabilities": []}
            async with admin.post("/v1/agents", json=body) as answer:
                assert answer.status == 201, await answer.text()
                tokens[agent_id] = (await answer.json())["token"]

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tokens


POLL_WAIT_S = 5.0


async def _long_poll(url: str, agents: int, tasks: int, stagger: bool = True) -> dict[str, Any]:
    """Wake latency: ``agents`` long-poll (``POLL_WAIT_S`` each), tasks are submitted one
    at a time, each agent completes what it gets and polls again. With ``stagger`` the
    agents start spread over one poll period, as a fleet that did not all start in the
    same instant; without it they re-poll in step."""
    async with session(url, agents + 10) as admin:
        tokens = await _register(admin, agents)
        latencies: list[float] = []
        done = asyncio.Event()

        async def agent(agent_id: str, offset: float) -> None:
            auth = {"Authorization": f"Bearer {tokens[agent_id]}"}
            await asyncio.sleep(offset)
            while not done.is_set():
                async with admin.get(
                    f"/v1/agents/{agent_id}/assignment",
                    params={"wait": POLL_WAIT_S},
                    headers=auth,
                ) as answer:
                    if answer.status != 200:
                        continue
                    seen = datetime.now(UTC)
                    task = await answer.json()
                decided = datetime.fromisoformat(task["routing_decision"]["decided_at"])
                latencies.append((seen - decided).total_seconds() * 1000)
                async with admin.post(
                    f"/v1/tasks/{task['task_id']}/complete",
                    headers=auth,
                    json={"generation": task["generation"]},
                ) as answer:
                    await answer.read()
                if len(latencies) >= tasks:
                    done.set()

        spread = POLL_WAIT_S / agents if stagger else 0.0
        pollers = [asyncio.create_task(agent(a, n * spread)) for n, a in enumerate(tokens)]
        await asyncio.sleep(POLL_WAIT_S + min(5.0, 0.5 + agents / 500))  # all are waiting
        for i in range(tasks):
            body = {"description": f"fix typo {i}", "complexity_tier": "trivial"}
            async with admin.post("/v1/tasks", json=body) as answer:
                await answer.read()
            await asyncio.sleep(0.01)
        await asyncio.wait_for(done.wait(), timeout=120)
        for poller in pollers:
            poller.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
    return {"agents_polling": agents, "staggered": stagger, **summary(latencies)}


async def _queue_pollers(
    url: str, pollers: int, seconds: float, interval: float = 0.0
) -> dict[str, Any]:
    """``pollers`` clients reading the queue for ``seconds``: back to back when
    ``interval`` is 0 (saturation), else each once per ``interval`` seconds."""
    async with session(url, pollers) as http:
        async with http.get("/v1/queue") as answer:
            queued = (await answer.json())["total"]
        latencies: list[float] = []
        deadline = time.monotonic() + seconds

        async def poller(offset: float) -> None:
            await asyncio.sleep(offset)
            while time.monotonic() < deadline:
                started = time.perf_counter()
                async with http.get("/v1/queue") as answer:
                    assert answer.status == 200
                    await answer.read()
                took = time.perf_counter() - started
                latencies.append(took * 1000)
                if interval:
                    await asyncio.sleep(max(0.0, interval - took))

        spread = interval / pollers if interval else 0.0
        await asyncio.gather(*(poller(i * spread) for i in range(pollers)))
    return {
        "pollers": pollers,
        "interval_s": interval,
        "queued_tasks": queued,
        "seconds": seconds,
        "requests_per_s": round(len(latencies) / seconds),
        **summary(latencies),
    }


def _more_files() -> None:
    """Let this process and the server it starts hold a connection per agent."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16_384 if hard == resource.RLIM_INFINITY else min(hard, 16_384)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _median_of(runs: list[dict[str, Any]], key: str) -> float:
    return round(float(statistics.median(run[key] for run in runs)), 2)


def run_http_bench(
    *,
    submissions: int = 5000,
    agents: int = 1000,
    wake_tasks: int = 500,
    pollers: int = 100,
    poll_seconds: float = 5.0,
    queued: int = 1000,
    batch_tasks: int = 100_000,
    batch: int = 1000,
    repeats: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Each part on its own fresh server (so one part's tasks do not skew the next),
    ``repeats`` times for the throughput and wake figures; the queue reads once."""
    _more_files()

    def on_fresh_server(part: Any) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            proc, url = _start_server(Path(tmp))
            try:
                result: dict[str, Any] = asyncio.run(part(url))
                return result
            finally:
                proc.terminate()
                proc.wait(timeout=30)

    async def queue_reads(url: str) -> dict[str, Any]:
        # A realistic backlog first, then the pollers.
        await _submissions(url, queued, concurrency=32)
        return {
            "paced": await _queue_pollers(url, pollers, poll_seconds, interval=0.1),
            "saturated": await _queue_pollers(url, pollers, poll_seconds),
        }

    wakes: list[dict[str, Any]] = []
    in_step: list[dict[str, Any]] = []
    singles: list[dict[str, Any]] = []
    batches: list[dict[str, Any]] = []
    for n in range(repeats):
        wakes.append(on_fresh_server(lambda url: _long_poll(url, agents, wake_tasks)))
        in_step.append(
            on_fresh_server(lambda url: _long_poll(url, agents, wake_tasks, stagger=False))
        )
        singles.append(on_fresh_server(lambda url: _submissions(url, submissions, 64)))
        batches.append(on_fresh_server(lambda url: _batch_submissions(url, batch_tasks, batch, 4)))
        if progress is not None:
            progress(
                f"run {n + 1}/{repeats}: wake p99 {wakes[-1]['p99_ms']} ms, "
                f"{singles[-1]['per_s']} submissions/s, {batches[-1]['tasks_per_s']} tasks/s "
                "in batches"
            )
    return {
        "repeats": repeats,
        "load": os.getloadavg(),
        "long_poll_wake": {
            "agents_polling": agents,
            "p50_ms_median": _median_of(wakes, "p50_ms"),
            "p99_ms_median": _median_of(wakes, "p99_ms"),
            "runs": wakes,
            "in_step": {
                "p50_ms_median": _median_of(in_step, "p50_ms"),
                "p99_ms_median": _median_of(in_step, "p99_ms"),
                "runs": in_step,
            },
        },
        "http_submissions": {
            "concurrency": 64,
            "per_s_median": _median_of(singles, "per_s"),
            "runs": singles,
        },
        "batch_submissions": {
            "batch": batch,
            "tasks_per_s_median": _median_of(batches, "tasks_per_s"),
            "runs": batches,
        },
        "queue_read": on_fresh_server(queue_reads),
    }
