"""A whole fleet over HTTP against a real ``tierlog serve`` (SQLite, and PostgreSQL)."""

from __future__ import annotations

import time
from typing import Any

import httpx

FALLBACK_WAIT_S = 0.5


class Agent:
    """A sidecar as a real one would talk to tierlog."""

    def __init__(self, server: Any, agent_id: str, caps: list[str], host: str | None = None):
        with server.client() as admin:
            answer = admin.post(
                "/v1/agents", json={"agent_id": agent_id, "capabilities": caps, "ollama_host": host}
            )
        assert answer.status_code == 201, answer.text
        self.id = agent_id
        self.http = server.client(answer.json()["token"])

    def poll(self, wait: float = 5.0) -> dict[str, Any] | None:
        answer = self.http.get(f"/v1/agents/{self.id}/assignment", params={"wait": wait})
        assert answer.status_code in (200, 204), answer.text
        return answer.json() if answer.status_code == 200 else None

    def heartbeat(self, task: dict[str, Any]) -> httpx.Response:
        return self.http.post(
            f"/v1/agents/{self.id}/heartbeat",
            json={"task_id": task["task_id"], "generation": task["generation"]},
        )

    def complete(self, task: dict[str, Any]) -> httpx.Response:
        return self.http.post(
            f"/v1/tasks/{task['task_id']}/complete",
            json={"generation": task["generation"], "result": {"ok": True}},
        )

    def fail(self, task: dict[str, Any]) -> httpx.Response:
        return self.http.post(
            f"/v1/tasks/{task['task_id']}/fail",
            json={"generation": task["generation"], "error": "tests failed"},
        )


def _first_to_get_work(*agents: Agent) -> tuple[Agent, dict[str, Any]]:
    for _ in range(3):
        for agent in agents:
            task = agent.poll(wait=1)
            if task is not None:
                return agent, task
    raise AssertionError("no agent got work")


def _submit(admin: httpx.Client, description: str, **fields: Any) -> str:
    answer = admin.post("/v1/tasks", json={"description": description, **fields})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["task_id"])


def _health(admin: httpx.Client, endpoint: str, ok: bool) -> str:
    answer = admin.post(f"/v1/endpoints/{endpoint}/health", json={"ok": ok})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["detail"]["status"])


def _log(admin: httpx.Client) -> list[dict[str, Any]]:
    events, after = [], 0
    while True:
        page = admin.get("/v1/log", params={"after": after, "limit": 1000}).json()
        events += page["events"]
        if not page["events"]:
            return events
        after = page["next_after"]


def test_a_fleet_works_end_to_end_over_http(store_url, server_factory):
    server = server_factory(
        store_url,
        TIERLOG_FALLBACK_WAIT_S=str(FALLBACK_WAIT_S),
        TIERLOG_DEFAULT_MODEL="llama3",
        # A failure's retry waits its backoff (issue #13): short here, so the polls
        # below see the retry (test_retry_liveness_http.py tests the wait itself).
        TIERLOG_RETRY_BACKOFF_S="0.5",
    )
    admin = server.client()
    endpoint = "gpu-a:11434"
    put = admin.put(
        f"/v1/endpoints/{endpoint}", json={"host": "gpu-a", "port": 11434, "models": ["llama3"]}
    )
    assert put.status_code == 200, put.text
    assert _health(admin, endpoint, True) == "healthy"
    assert (
        admin.post(
            f"/v1/endpoints/{endpoint}/resources",
            json={"cpu_percent": 20, "ram_total_bytes": 32 * 2**30},
        ).status_code
        == 200
    )
    py = Agent(server, "agent-py", ["python"], host="gpu-a")
    anyone = Agent(server, "agent-any", [])

    # Every tier: trivial -> sidecar, standard -> ollama (beside gpu-a), complex -> claude.
    expected = {
        _submit(admin, "fix typo in README", priority="low"): "sidecar",
        _submit(
            admin,
            "add tests for the invoice parser",
            complexity_tier="standard",
            needed_capabilities=["python"],
        ): "ollama",
        _submit(admin, "refactor the storage layer", priority="urgent"): "claude",
    }
    seen: dict[str, str] = {}
    for _ in range(3):
        for agent in (py, anyone):
            task = agent.poll(wait=2)
            if task is None:
                continue
            seen[task["task_id"]] = task["routing_decision"]["target_type"]
            assert agent.heartbeat(task).status_code == 200
            assert agent.complete(task).status_code == 200
    assert seen == expected
    ollama_task = next(t for t, target in seen.items() if target == "ollama")
    at = {"min_position": server.log_length()}
    decision = admin.get(f"/v1/tasks/{ollama_task}", params=at).json()["task"]["routing_decision"]
    assert decision["selected_endpoint"] == endpoint and decision["selected_model"] == "llama3"

    # A failure requeues the task under a new generation; a stale complete is a 409.
    failing = _submit(admin, "fix typo in docs")
    owner, task = _first_to_get_work(anyone, py)
    assert task["task_id"] == failing
    assert owner.fail(task).json()["detail"]["state"] == "queued"
    assert owner.complete(task).status_code == 409
    holder, again = _first_to_get_work(owner, py if owner is anyone else anyone)
    assert again["task_id"] == failing and again["generation"] == task["generation"] + 2
    assert holder.complete(again).status_code == 200

    # No healthy endpoint: a standard task waits, then falls back to complex.
    assert _health(admin, endpoint, False) == "healthy"  # one failure is not enough
    assert _health(admin, endpoint, False) == "unhealthy"
    started = time.monotonic()
    submitted = admin.post(
        "/v1/tasks",
        json={
            "description": "write the migration notes for the billing service",
            "complexity_tier": "standard",
        },
    ).json()
    waiting = submitted["task_id"]
    # Read your own write: the queue at (at least) the submission's position.
    queue = admin.get("/v1/queue", params={"min_position": submitted["position"]}).json()["tasks"]
    assert [t["task_id"] for t in queue] == [waiting]
    assert queue[0]["timer_fallback_tier"] == "complex"
    task = anyone.poll(wait=5)
    assert task is not None and task["task_id"] == waiting
    assert time.monotonic() - started >= FALLBACK_WAIT_S * 0.9
    decision = task["routing_decision"]
    assert (decision["effective_tier"], decision["target_type"]) == ("complex", "claude")
    assert decision["fallback_used"] and decision["fallback_from_tier"] == "standard"
    assert decision["fallback_reason"] == "no_healthy_ollama_endpoints"
    assert anyone.complete(task).status_code == 200

    # The endpoint recovers inside the wait: the task goes to ollama, the timer is cancelled.
    recovering = _submit(
        admin, "document the cursor parameter of the list endpoint", complexity_tier="standard"
    )
    assert _health(admin, endpoint, True) == "healthy"
    task = py.poll(wait=5)
    assert task is not None and task["task_id"] == recovering
    assert task["routing_decision"]["target_type"] == "ollama"
    assert not task["routing_decision"]["fallback_used"]
    assert py.complete(task).status_code == 200
    time.sleep(FALLBACK_WAIT_S * 1.5)
    events = _log(admin)
    timer_events = [
        e
        for e in events
        if e["type"].startswith("FallbackTimer") and e["payload"]["task_id"] == recovering
    ]
    assert [e["type"] for e in timer_events] == ["FallbackTimerStarted", "FallbackTimerCancelled"]
    assert timer_events[1]["payload"]["reason"] == "assigned"

    # Reads reflect the writes, and the telemetry counts them.
    head = server.log_length()
    telemetry = admin.get("/v1/telemetry", params={"min_position": head}).json()
    assert telemetry["position"] == head
    counts = telemetry["telemetry"]
    assert counts["timers"]["fired"] == 1 and counts["timers"]["cancelled"] == {"assigned": 1}
    assert counts["tasks_by_state_and_tier"]["completed"] == {
        "complex": 2,
        "standard": 2,
        "trivial": 2,
    }
    metrics = admin.get("/metrics").text
    fired = (
        'tierlog_fallback_timers_total{outcome="fired",reason="no_healthy_ollama_endpoints"} 1.0'
    )
    assert fired in metrics
    assert admin.delete(f"/v1/agents/{anyone.id}").status_code == 200
    assert anyone.http.get("/v1/queue").status_code == 401  # a removed agent's token is void


def test_auth_missing_wrong_and_foreign_tokens_append_nothing(sqlite_url, server_factory):
    server = server_factory(sqlite_url)
    admin = server.client()
    one, two = Agent(server, "one", []), Agent(server, "two", [])
    task_id = _submit(admin, "fix typo in README")
    holder, task = _first_to_get_work(one, two)
    other = two if holder is one else one
    head = server.log_length()
    anonymous = httpx.Client(base_url=server.url)
    wrong = server.client("not-a-token")
    checks = [
        (anonymous.post("/v1/tasks", json={"description": "x"}), 401),
        (wrong.post("/v1/tasks", json={"description": "x"}), 401),
        (anonymous.get("/v1/queue"), 401),
        (other.http.post("/v1/tasks", json={"description": "x"}), 403),
        (other.complete(task), 403),
        (other.fail(task), 403),
        (
            other.http.post(
                f"/v1/agents/{holder.id}/heartbeat",
                json={"task_id": task_id, "generation": task["generation"]},
            ),
            403,
        ),
        (other.http.get(f"/v1/agents/{holder.id}/assignment"), 403),
        (other.http.delete(f"/v1/agents/{holder.id}"), 403),
        (admin.post(f"/v1/tasks/{task_id}/complete", json={"generation": 1}), 403),
    ]
    for answer, status in checks:
        assert answer.status_code == status, answer.text
        assert answer.json()["error"] in ("unauthorized", "forbidden", "not_your_task")
    assert checks[0][0].headers["www-authenticate"] == "Bearer"
    assert server.log_length() == head
    assert holder.complete(task).status_code == 200
