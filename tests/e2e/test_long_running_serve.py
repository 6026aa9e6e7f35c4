"""serve keeps only live work in memory: what left it is answered from the store, over
HTTP, the same before and after a restart (which starts from a checkpoint)."""

from __future__ import annotations

from conftest import stop_server

# Settled records leave memory at the next event: every answer below comes from the store.
AT_ONCE = {"TIERLOG_SETTLED_GRACE_S": "0", "TIERLOG_SETTLED_MAX": "0"}


def _done_task(admin, agent, key: str) -> tuple[str, int]:
    created = admin.post(
        "/v1/tasks",
        json={"description": "fix typo", "complexity_tier": "trivial"},
        headers={"Idempotency-Key": key},
    )
    assert created.status_code == 201, created.text
    task = agent.get("/v1/agents/a1/assignment", params={"wait": 5}).json()
    assert task["task_id"] == created.json()["task_id"]
    done = agent.post(
        f"/v1/tasks/{task['task_id']}/complete",
        json={"generation": task["generation"], "result": {"ok": True}},
    )
    assert done.status_code == 200, done.text
    return task["task_id"], task["generation"]


def test_answers_for_tasks_that_left_memory_and_after_a_restart(sqlite_url, server_factory):
    server = server_factory(sqlite_url, **AT_ONCE)
    with server.client() as admin:
        token = admin.post("/v1/agents", json={"agent_id": "a1"}).json()["token"]
        with server.client(token) as agent:
            task_id, generation = _done_task(admin, agent, "order-1")
            _done_task(admin, agent, "order-2")  # its events let order-1 go
        health = admin.get("/healthz").json()["scheduler"]
        assert health["tasks"] == 0  # neither is held in memory any more
    answers = _answers(server, token, task_id, generation)
    assert answers["late complete"][0] == 409
    assert answers["late complete"][1]["error"] == "invalid_transition"
    assert "completed" in answers["late complete"][1]["message"]
    assert answers["stale heartbeat"][0] == 409
    assert answers["same key"][0] == 200
    assert answers["same key"][1]["task_id"] == task_id
    assert answers["task"][0] == 200
    assert answers["task"][1]["task"]["state"] == "completed"

    head = server.log_length()
    stop_server(server)  # SIGTERM: the last checkpoint is written at the head
    restarted = server_factory(sqlite_url, **AT_ONCE)
    with restarted.client() as admin:
        checkpoints = admin.get("/healthz").json()["scheduler"]["checkpoints"]
        metrics = admin.get("/metrics").text
    assert 'tierlog_scheduler_records{kind="tasks"} 0.0' in metrics
    assert "tierlog_checkpoints_ignored 0.0" in metrics
    assert checkpoints["restored_from"] == head
    assert checkpoints["ignored"] == []
    again = _answers(restarted, token, task_id, generation)
    assert {what: code for what, (code, _) in again.items()} == {
        what: code for what, (code, _) in answers.items()
    }
    assert again["same key"][1]["task_id"] == task_id
    assert restarted.log_length() == head  # the answers appended nothing


def _answers(server, token: str, task_id: str, generation: int) -> dict[str, tuple[int, dict]]:
    with server.client() as admin, server.client(token) as agent:
        late = agent.post(
            f"/v1/tasks/{task_id}/complete", json={"generation": generation, "result": {}}
        )
        beat = agent.post(
            "/v1/agents/a1/heartbeat", json={"task_id": task_id, "generation": generation + 1}
        )
        same = admin.post(
            "/v1/tasks",
            json={"description": "fix typo", "complexity_tier": "trivial"},
            headers={"Idempotency-Key": "order-1"},
        )
        # Read models follow the log (in another process): read at the last write's
        # position, as a client reading its own writes does.
        task = admin.get(f"/v1/tasks/{task_id}", params={"min_position": same.json()["position"]})
    return {
        "late complete": (late.status_code, late.json()),
        "stale heartbeat": (beat.status_code, beat.json()),
        "same key": (same.status_code, same.json()),
        "task": (task.status_code, task.json()),
    }
