"""``POST /v1/tasks/batch`` on two nodes sharing a PostgreSQL log: the leader commits a
batch at once; a follower forwards each entry to the leader and answers per entry just
the same (idempotency keys and refusals included)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.cluster import TOKEN
from tierlog.adapters.tools.cluster_nodes import start_nodes, stop_nodes, wait_for_leader

ENV = {"TIERLOG_ADMIN_TOKEN": TOKEN}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_a_batch_on_the_leader_and_on_a_follower(pg_url: str, tmp_path: Path) -> None:
    nodes = start_nodes(pg_url, 2, tmp_path, ENV)
    try:
        elected = wait_for_leader(nodes, 15.0)
        assert elected is not None, "no leader"
        leader = elected[0]
        follower = next(node for node in nodes if node is not leader)
        tasks = [
            {"description": "fix typo", "idempotency_key": "cluster-1"},
            {"description": ""},
            {"description": "refactor the parser"},
        ]
        answers = {}
        for name, node in (("leader", leader), ("follower", follower)):
            with httpx.Client(base_url=node.url, headers=AUTH, timeout=30) as http:
                answer = http.post("/v1/tasks/batch", json={"tasks": tasks})
                assert answer.status_code == 200, (name, answer.text)
                answers[name] = answer.json()
        for name, body in answers.items():
            statuses = [r["status"] for r in body["results"]]
            assert body["results"][1]["error"]["field"] == "description", name
            if name == "leader":
                assert statuses == [201, 422, 201]
            else:  # the key names the leader's task: the same body, the same task
                assert statuses == [200, 422, 201]
        assert (
            answers["follower"]["results"][0]["task_id"]
            == answers["leader"]["results"][0]["task_id"]
        )
        with httpx.Client(base_url=leader.url, headers=AUTH, timeout=30) as http:
            position = answers["follower"]["position"]
            for entry in (answers["leader"]["results"][2], answers["follower"]["results"][2]):
                task = http.get(f"/v1/tasks/{entry['task_id']}", params={"min_position": position})
                assert task.status_code == 200, task.text
    finally:
        stop_nodes(nodes)
