"""Issue #13 over HTTP against a real ``tierlog serve``: retry backoff (honoured across
a restart, and to the other idle agent), agent liveness, and a stuck escalation that
follows its tier's recovery."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx
from test_fleet_http import Agent, _health, _log, _submit


def _events(admin: httpx.Client, kind: str, **match: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in _log(admin)
        if e["type"] == kind and all(e["payload"].get(k) == v for k, v in match.items())
    ]


def _stop(server: Any) -> None:
    # A clean stop (SIGTERM), as an operator restarts a server.
    server.process.terminate()
    server.process.wait(timeout=15)


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_retry_waits_for_its_backoff_across_a_restart_and_goes_to_the_other_agent(
    sqlite_url, server_factory
):
    env = {"TIERLOG_RETRY_BACKOFF_S": "3", "TIERLOG_RETRY_BACKOFF_MAX_S": "60"}
    server = server_factory(sqlite_url, **env)
    admin = server.client()
    first = Agent(server, "first", [])
    task_id = _submit(admin, "fix typo in README")
    task = first.poll(wait=5)
    assert task is not None and task["task_id"] == task_id
    assert first.fail(task).json()["detail"]["state"] == "queued"
    (requeued,) = _events(admin, "TaskRequeued")
    not_before = _when(requeued["payload"]["not_before"])
    failed_at = _when(requeued["timestamp"])
    assert 1.5 <= (not_before - failed_at).total_seconds() <= 3.0  # 3 s x jitter in [0.5, 1]
    # Registered after the failure: idle for less time than "first", which would
    # otherwise go first.
    other = Agent(server, "other", [])
    assert first.poll(wait=0) is None

    # The wait is in the log: a restarted server honours it too.
    _stop(server)
    server = server_factory(sqlite_url, **env)
    admin = server.client()
    first.http.base_url = other.http.base_url = httpx.URL(server.url)
    again = other.poll(wait=10)
    assert again is not None and again["task_id"] == task_id
    assert again["generation"] == task["generation"] + 2
    (assigned,) = _events(admin, "TaskAssigned", generation=again["generation"])
    assert assigned["payload"]["agent_id"] == "other"
    assert _when(assigned["timestamp"]) >= not_before
    assert other.complete(again).status_code == 200
    assert admin.get("/healthz").json()["status"] == "ok"


def test_a_silent_idle_agent_gets_no_work_and_its_next_poll_brings_it_back(
    sqlite_url, server_factory
):
    server = server_factory(sqlite_url, TIERLOG_AGENT_IDLE_TIMEOUT_S="1.5")
    admin = server.client()
    quiet = Agent(server, "quiet", [])
    head = server.log_length()
    polled_at = time.monotonic()
    while time.monotonic() - polled_at < 1.0:  # polls keep it alive, and append nothing
        assert quiet.poll(wait=0.2) is None
    assert server.log_length() == head
    deadline = time.monotonic() + 10
    while not _events(admin, "AgentWentOffline", agent_id="quiet"):
        assert time.monotonic() < deadline, "the silent agent was never marked offline"
        time.sleep(0.2)
    (offline,) = _events(admin, "AgentWentOffline", agent_id="quiet")
    assert offline["payload"]["reason"] == "idle_timeout"
    task_id = _submit(admin, "fix typo in the changelog")
    time.sleep(0.5)
    assert _events(admin, "TaskAssigned", generation=1) == []  # no work while offline
    task = quiet.poll(wait=5)  # the next poll brings it back, and hands it the task
    assert task is not None and task["task_id"] == task_id
    (back,) = _events(admin, "AgentCameBack", agent_id="quiet")
    assert back["payload"]["reason"] == "polled"
    assert quiet.complete(task).status_code == 200


def test_a_stuck_escalation_goes_back_to_its_tier_when_it_recovers(sqlite_url, server_factory):
    server = server_factory(
        sqlite_url, TIERLOG_FALLBACK_WAIT_S="0.3", TIERLOG_CLAUDE_ENABLED="false"
    )
    admin = server.client()
    endpoint = "gpu-a:11434"
    put = admin.put(
        f"/v1/endpoints/{endpoint}", json={"host": "gpu-a", "port": 11434, "models": ["llama3"]}
    )
    assert put.status_code == 200, put.text
    worker = Agent(server, "worker", [])
    task_id = _submit(admin, "add tests for the parser", complexity_tier="standard")
    deadline = time.monotonic() + 10
    while not _events(admin, "TaskEscalated"):
        assert time.monotonic() < deadline, "the fallback timer never fired"
        time.sleep(0.1)
    assert worker.poll(wait=1) is None  # complex cannot route it: Claude is disabled
    assert _health(admin, endpoint, True) == "healthy"
    task = worker.poll(wait=5)
    assert task is not None and task["task_id"] == task_id
    decision = task["routing_decision"]
    assert (decision["effective_tier"], decision["target_type"]) == ("standard", "ollama")
    assert not decision["fallback_used"]
    (back,) = _events(admin, "TaskDeescalated")
    assert (back["payload"]["from_tier"], back["payload"]["to_tier"]) == ("complex", "standard")
    routed = _events(admin, "TaskRouted")
    assert [r["payload"]["reason"] for r in routed] == ["tier_recovered"]
    assert worker.complete(task).status_code == 200
