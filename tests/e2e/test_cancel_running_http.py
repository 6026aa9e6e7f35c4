"""Issue #13 over HTTP against a real ``tierlog serve``: cancelling a running task (the
agent hears ``cancelled`` at its heartbeat, complete, fail and, once, its poll, and is
free for the next task) and an ``Idempotency-Key`` reused with another body (409)."""

from __future__ import annotations

from typing import Any

import httpx
from conftest import stop_server


def _register(admin: httpx.Client, agent_id: str) -> str:
    answer = admin.post("/v1/agents", json={"agent_id": agent_id, "capabilities": []})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def _submit(admin: httpx.Client, description: str, **headers: str) -> httpx.Response:
    return admin.post(
        "/v1/tasks",
        json={"description": description, "complexity_tier": "trivial"},
        headers=headers,
    )


def _log(admin: httpx.Client) -> list[dict[str, Any]]:
    page = admin.get("/v1/log", params={"after": 0, "limit": 1000}).json()
    return list(page["events"])


def _cancelled(answer: httpx.Response, task_id: str) -> None:
    assert answer.status_code == 409, answer.text
    body = answer.json()
    assert (body["error"], body["field"]) == ("cancelled", "task_id")
    assert task_id in body["message"] and "stop the work" in body["message"]


def test_cancelling_a_running_task_over_http(store_url, server_factory):
    server = server_factory(store_url)
    with server.client() as admin:
        worker = server.client(_register(admin, "worker"))
        task_id = _submit(admin, "fix typo in the README").json()["task_id"]
        held = worker.get("/v1/agents/worker/assignment", params={"wait": 5})
        assert held.status_code == 200, held.text
        task = held.json()
        assert (task["task_id"], task["generation"]) == (task_id, 1)

        cancel = admin.post(f"/v1/tasks/{task_id}/cancel", json={"reason": "not needed"})
        assert cancel.status_code == 200, cancel.text
        head = server.log_length()

        # The agent learns it: at its heartbeat, and a late complete or fail is refused.
        beat = {"task_id": task_id, "generation": 1}
        _cancelled(worker.post("/v1/agents/worker/heartbeat", json=beat), task_id)
        _cancelled(
            worker.post(f"/v1/tasks/{task_id}/complete", json={"generation": 1, "result": {}}),
            task_id,
        )
        _cancelled(
            worker.post(f"/v1/tasks/{task_id}/fail", json={"generation": 1, "error": "x"}),
            task_id,
        )
        # At its poll too, once; then the poll waits for work as usual.
        _cancelled(worker.get("/v1/agents/worker/assignment"), task_id)
        assert worker.get("/v1/agents/worker/assignment").status_code == 204
        assert server.log_length() == head  # the refusals appended nothing

        cancelled = [e for e in _log(admin) if e["type"] == "TaskCancelled"]
        assert [(e["payload"]["agent_id"], e["payload"]["generation"]) for e in cancelled] == [
            ("worker", 1)
        ]
        assert cancelled[0]["payload"]["reason"] == "not needed"
        at = {"min_position": head}
        row = admin.get(f"/v1/tasks/{task_id}", params=at).json()["task"]
        assert (row["state"], row["assigned_to"]) == ("cancelled", None)
        agents = admin.get("/v1/agents", params=at).json()["agents"]
        assert [(a["agent_id"], a["status"], a["task_id"]) for a in agents] == [
            ("worker", "idle", None)
        ]

        # Free at once: the next task goes to it.
        next_id = _submit(admin, "bump version to 2.1").json()["task_id"]
        again = worker.get("/v1/agents/worker/assignment", params={"wait": 5})
        assert again.status_code == 200 and again.json()["task_id"] == next_id
        done = worker.post(f"/v1/tasks/{next_id}/complete", json={"generation": 1, "result": {}})
        assert done.status_code == 200, done.text
        # Cancelling what already finished is still a conflict.
        assert admin.post(f"/v1/tasks/{next_id}/cancel").json()["error"] == "invalid_transition"
        worker.close()


def test_an_idempotency_key_with_another_body_is_a_conflict(sqlite_url, server_factory):
    server = server_factory(sqlite_url)
    with server.client() as admin:
        first = _submit(admin, "fix typo in the README", **{"Idempotency-Key": "order-42"})
        assert first.status_code == 201, first.text
        task_id = first.json()["task_id"]
        head = server.log_length()

        same = _submit(admin, "fix typo in the README", **{"Idempotency-Key": "order-42"})
        assert same.status_code == 200, same.text
        assert (same.json()["task_id"], same.json()["created"]) == (task_id, False)

        other = _submit(admin, "fix typo in the CHANGELOG", **{"Idempotency-Key": "order-42"})
        assert other.status_code == 409, other.text
        body = other.json()
        assert (body["error"], body["field"]) == ("idempotency_conflict", "idempotency_key")
        assert "'order-42'" in body["message"] and task_id in body["message"]

        # The key in the body is the same key: a different body there conflicts too.
        in_body = admin.post(
            "/v1/tasks",
            json={
                "description": "fix typo in the README",
                "complexity_tier": "trivial",
                "priority": "urgent",
                "idempotency_key": "order-42",
            },
        )
        assert in_body.status_code == 409 and in_body.json()["error"] == "idempotency_conflict"
        assert server.log_length() == head  # neither appended anything


# Settled records leave memory at the next event: the answers below come from the store.
AT_ONCE = {"TIERLOG_SETTLED_GRACE_S": "0", "TIERLOG_SETTLED_MAX": "0"}
KEYED = {"Idempotency-Key": "order-7"}


def test_the_answers_hold_after_the_task_left_memory_and_after_a_restart(
    sqlite_url, server_factory
):
    server = server_factory(sqlite_url, **AT_ONCE)
    with server.client() as admin:
        token = _register(admin, "a1")
        with server.client(token) as agent:
            task_id = _submit(admin, "fix typo in the README", **KEYED).json()["task_id"]
            assert agent.get("/v1/agents/a1/assignment", params={"wait": 5}).status_code == 200
            assert admin.post(f"/v1/tasks/{task_id}/cancel").status_code == 200
            other = _submit(admin, "bump version to 3").json()["task_id"]  # lets it go
            assert agent.get("/v1/agents/a1/assignment").json()["task_id"] == other
        assert admin.get("/healthz").json()["scheduler"]["tasks"] == 1  # only the other
    answers = _late_answers(server, token, task_id)
    assert answers == {
        "late complete": (409, "cancelled"),
        "late heartbeat": (409, "cancelled"),
        "same body": (200, "cancelled"),
        "other body": (409, "idempotency_conflict"),
    }

    head = server.log_length()
    stop_server(server)  # SIGTERM: a checkpoint at the head, restored from below
    restarted = server_factory(sqlite_url, **AT_ONCE)
    assert _late_answers(restarted, token, task_id) == answers
    assert restarted.log_length() == head  # the answers appended nothing


def _late_answers(server, token: str, task_id: str) -> dict[str, tuple[int, str]]:
    with server.client() as admin, server.client(token) as agent:
        late = agent.post(f"/v1/tasks/{task_id}/complete", json={"generation": 1, "result": {}})
        beat = agent.post("/v1/agents/a1/heartbeat", json={"task_id": task_id, "generation": 1})
        same = _submit(admin, "fix typo in the README", **KEYED)
        other = _submit(admin, "fix typo in the CHANGELOG", **KEYED)
    return {
        "late complete": (late.status_code, late.json()["error"]),
        "late heartbeat": (beat.status_code, beat.json()["error"]),
        "same body": (same.status_code, same.json()["state"]),
        "other body": (other.status_code, other.json()["error"]),
    }
