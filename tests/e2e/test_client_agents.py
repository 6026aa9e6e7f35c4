"""``tierlog.client`` against a real ``tierlog serve`` (SQLite and PostgreSQL): a fleet of
``Agent``s and ``AsyncAgent``s drains tasks of every tier, each completed exactly once;
a killed agent's task comes back after its lease; a SIGTERM'd agent hands its task back
at once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from waiting import wait_for

from tierlog.client import Agent, AsyncAgent, Operator, Task

TASKS = 2000
TIERS = ("trivial", "standard", "complex", "unknown", None)

VICTIM = """
import pathlib, sys, time
from tierlog.client import Agent

url, token, marker = sys.argv[1:4]

def handler(task):
    pathlib.Path(marker).write_text(task.task_id)
    time.sleep(600)

Agent(url, "victim", operator_token=token, poll_wait_s=0.5).run(handler)
"""


def _wait(what: str, check: Any, timeout: float = 120.0) -> Any:
    return wait_for(what, check, timeout)


def _whole_log(op: Operator) -> list[dict[str, Any]]:
    events, after = [], 0
    while True:
        page = op.log(after=after, limit=1000)
        if not page["events"]:
            return events
        events += page["events"]
        after = page["next_after"]


def _completed(op: Operator) -> int:
    by_state = op.telemetry()["telemetry"]["tasks_by_state_and_tier"]
    return sum(by_state.get("completed", {}).values())


def _healthy_endpoint(op: Operator) -> None:
    op.register_endpoint("gpu1", 11434, ["llama3"])
    assert op.report_health("gpu1:11434", True, ["llama3"]) == "healthy"


def test_agents_and_async_agents_drain_every_tier_each_task_completed_once(
    store_url: str, server_factory: Any
) -> None:
    server = server_factory(store_url, TIERLOG_LEASE_S="3")
    op = Operator(server.url, server.admin_token)
    _healthy_endpoint(op)
    handled: list[tuple[str, int, str]] = []
    lock = threading.Lock()

    def handler(task: Task) -> dict[str, Any]:
        with lock:
            handled.append((task.task_id, task.generation, "sync"))
        return {"task": task.task_id, "tier": task.tier}

    async def async_handler(task: Task) -> dict[str, Any]:
        await asyncio.sleep(0)
        with lock:
            handled.append((task.task_id, task.generation, "async"))
        return {"task": task.task_id, "tier": task.tier}

    agents = [Agent(server.url, f"sync-{n}", operator_token=server.admin_token) for n in range(20)]
    async_agents = [
        AsyncAgent(server.url, f"async-{n}", operator_token=server.admin_token) for n in range(20)
    ]
    threads = [threading.Thread(target=a.run, args=(handler,)) for a in agents]

    async def async_fleet() -> None:
        await asyncio.gather(*(a.run(async_handler) for a in async_agents))

    threads.append(threading.Thread(target=asyncio.run, args=(async_fleet(),)))
    for thread in threads:
        thread.start()
    try:
        bodies = [
            {"description": f"task {n} of the drain", "complexity_tier": TIERS[n % len(TIERS)]}
            for n in range(TASKS)
        ]
        submitted = op.submit_many([{k: v for k, v in b.items() if v} for b in bodies])
        assert len({s.task_id for s in submitted}) == TASKS and all(s.created for s in submitted)
        _wait("every task completed", lambda: _completed(op) == TASKS, timeout=300)
    finally:
        for agent in [*agents, *async_agents]:
            agent.stop()
        for thread in threads:
            thread.join(30)
    assert not any(thread.is_alive() for thread in threads)

    completions = Counter(e["aggregate_id"] for e in _whole_log(op) if e["type"] == "TaskCompleted")
    assert set(completions) == {s.task_id for s in submitted}
    assert set(completions.values()) == {1}
    assert {kind for _, _, kind in handled} == {"sync", "async"}
    stats = [a.stats for a in [*agents, *async_agents]]
    assert sum(s.completed for s in stats) == TASKS
    assert sum(s.failed + s.abandoned for s in stats) == 0
    rows = op.tasks(state="completed", limit=None)
    tiers = Counter(row["effective_tier"] for row in rows)
    assert set(tiers) == {"trivial", "standard", "complex"}
    assert all(
        row["result"] == {"task": row["task_id"], "tier": row["effective_tier"]} for row in rows
    )
    # Every agent left the fleet when it stopped.
    _wait("the agents gone", lambda: op.agents() == [], timeout=10)
    op.close()


def _victim(server: Any, tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    script, marker = tmp_path / "victim.py", tmp_path / "victim.task"
    script.write_text(VICTIM)
    process = subprocess.Popen(
        [sys.executable, str(script), server.url, server.admin_token, str(marker)],
        text=True,
        stderr=subprocess.PIPE,
    )
    return process, marker


def _rescue(server: Any, task_id: str) -> dict[str, Any]:
    """Another agent completes the task; the task's row once it is completed."""
    rescuer = Agent(server.url, "rescuer", operator_token=server.admin_token, poll_wait_s=0.5)
    thread = threading.Thread(target=rescuer.run, args=(lambda task: {"by": "rescuer"},))
    thread.start()
    with Operator(server.url, server.admin_token) as op:
        # A fresh client has written nothing: its reads start from the log's head now
        # (the task was submitted by another client; the read models may be a step behind).
        op.catch_up()
        try:
            return dict(
                _wait("the rescue", lambda: _done(op.get(task_id)), timeout=60),
            )
        finally:
            rescuer.stop()
            thread.join(30)


def _done(task: dict[str, Any]) -> dict[str, Any] | None:
    return task if task["state"] == "completed" else None


def test_a_killed_agents_task_comes_back_after_its_lease_and_another_completes_it(
    store_url: str, server_factory: Any, tmp_path: Path
) -> None:
    server = server_factory(store_url, TIERLOG_LEASE_S="2")
    process, marker = _victim(server, tmp_path)
    try:
        with Operator(server.url, server.admin_token) as op:
            task_id = op.submit("fix typo in the killed agent's task").task_id
            _wait("the victim's task", marker.exists, timeout=60)
            assert marker.read_text() == task_id
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            killed_at = time.monotonic()
            done = _rescue(server, task_id)
            assert done["result"] == {"by": "rescuer"}
            assert time.monotonic() - killed_at < 30
            reclaims = [e for e in op.timeline(task_id) if e["type"] == "TaskReclaimed"]
            assert [e["payload"]["reason"] for e in reclaims] == ["lease_expired"]
    finally:
        if process.poll() is None:
            process.kill()


def test_a_sigtermed_agent_hands_its_task_back_at_once(
    store_url: str, server_factory: Any, tmp_path: Path
) -> None:
    server = server_factory(store_url)  # the default lease (300 s): no waiting it out
    process, marker = _victim(server, tmp_path)
    try:
        with Operator(server.url, server.admin_token) as op:
            task_id = op.submit("fix typo in the stopped agent's task").task_id
            _wait("the victim's task", marker.exists, timeout=60)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(10) == 0, process.stderr.read() if process.stderr else ""
            back = _wait(
                "the task back in the queue",
                lambda: [e for e in op.timeline(task_id) if e["type"] == "TaskReclaimed"],
                timeout=10,
            )
            assert time.monotonic() - started < 10
            assert back[0]["payload"]["reason"] == "agent_gone"
            op.catch_up()  # the timeline reads the log; the rows below follow it
            assert op.get(task_id)["retry_count"] == 0  # handed back, not failed
            assert "victim" not in {a["agent_id"] for a in op.agents()}
        assert _rescue(server, task_id)["result"] == {"by": "rescuer"}
    finally:
        if process.poll() is None:
            process.kill()


def test_an_agent_that_cannot_register_again_fails_its_task_back_on_stop(
    sqlite_url: str, server_factory: Any
) -> None:
    server = server_factory(sqlite_url)
    with Operator(server.url, server.admin_token) as op:
        token = op.register_agent("holder")
        task_id = op.submit("fix typo held at the stop", max_retries=3).task_id
        started = threading.Event()
        agent = Agent(server.url, "holder", token=token, poll_wait_s=0.5)
        assert agent.leave_on_stop is False  # no operator token: it could not come back

        def handler(task: Task) -> None:
            started.set()
            time.sleep(600)

        thread = threading.Thread(target=agent.run, args=(handler,))
        thread.start()
        assert started.wait(30)
        agent.stop()
        thread.join(10)
        assert not thread.is_alive()
        assert agent.stats.handed_back == 1
        row = _wait(
            "the failure", lambda: (t := op.get(task_id))["retry_count"] == 1 and t, timeout=10
        )
        assert row["last_error"] == "the agent stopped before finishing the task"
        assert "holder" in {a["agent_id"] for a in op.agents()}
