"""``tierlog serve`` on a copy of the log release 0.1.0 wrote (``tests/data/README.md``):
it serves the old tasks, takes new work stored under the new topics, and the result
audits clean with ``tierlog audit``."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

LEGACY = Path(__file__).parents[1] / "data" / "log-0.1.0.db"
LEGACY_EVENTS = 440


def _topics(path: Path) -> list[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return [t for (t,) in db.execute("SELECT topic FROM stored_events ORDER BY rowid")]


def test_serve_reads_and_extends_the_legacy_log_and_it_audits_clean(tmp_path, server_factory):
    path = tmp_path / "legacy.db"
    shutil.copyfile(LEGACY, path)
    store = f"sqlite:///{path}"
    server = server_factory(store)
    with server.client() as admin:
        listed = admin.get(
            "/v1/tasks", params={"limit": 1000, "min_position": LEGACY_EVENTS}
        ).json()["tasks"]
        assert len(listed) == 46  # every task the legacy log submitted
        assert {"completed", "cancelled", "dead_lettered"} <= {t["state"] for t in listed}
        done = next(t["task_id"] for t in listed if t["state"] == "completed")
        timeline = admin.get(f"/v1/tasks/{done}/timeline").json()["events"]
        assert [e["type"] for e in (timeline[0], timeline[-1])] == [
            "TaskSubmitted",
            "TaskCompleted",
        ]
        # Old and new rows are shown under one name per type: the stored name.
        assert all(e["topic"] == e["type"] for e in timeline)
        # The legacy idempotency key still finds its task, with the body it was submitted
        # with (issue #13: another body under the key is a conflict, also for old tasks).
        legacy_body = {
            "description": "fix typo in docs",
            "needed_capabilities": ["rare"],
            "max_retries": 1,
            "idempotency_key": "legacy-rare",
        }
        again = admin.post("/v1/tasks", json=legacy_body)
        assert again.status_code == 200 and again.json()["created"] is False
        other = admin.post("/v1/tasks", json={**legacy_body, "max_retries": 3})
        assert other.status_code == 409 and other.json()["error"] == "idempotency_conflict"

        token = admin.post(
            "/v1/agents", json={"agent_id": "after-upgrade", "capabilities": ["upgrade"]}
        ).json()["token"]
        created = admin.post(
            "/v1/tasks", json={"description": "fix typo", "needed_capabilities": ["upgrade"]}
        )
        assert created.status_code == 201, created.text
        task_id = created.json()["task_id"]
        with server.client(token) as agent:
            work = agent.get("/v1/agents/after-upgrade/assignment", params={"wait": 10}).json()
            assert work["task_id"] == task_id
            answer = agent.post(
                f"/v1/tasks/{task_id}/complete",
                json={"generation": work["generation"], "result": {"ok": True}},
            )
            assert answer.status_code == 200, answer.text
        position = answer.json()["position"]
        task = admin.get(f"/v1/tasks/{task_id}", params={"min_position": position}).json()
        assert task["task"]["state"] == "completed"
        log = admin.get("/v1/log", params={"after": LEGACY_EVENTS - 2, "limit": 1000}).json()
        assert [e["position"] for e in log["events"]][:3] == [439, 440, 441]
        assert all(e["topic"] == e["type"] for e in log["events"])
    server.process.terminate()  # stopped, so nothing is appended while it is audited
    assert server.process.wait(timeout=15) == 0
    stored = _topics(path)
    assert stored[:LEGACY_EVENTS] == _topics(LEGACY)  # the old rows are as they were
    assert all(t.startswith("domain.events:") for t in stored[:LEGACY_EVENTS])
    new = stored[LEGACY_EVENTS:]
    assert {"AgentRegistered", "TaskSubmitted", "TaskCompleted"} <= set(new)
    assert not any(":" in t for t in new)

    exe = shutil.which("tierlog") or str(Path(sys.executable).with_name("tierlog"))
    audit = subprocess.run(
        [exe, "audit", "--json", "--store", store],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    report = json.loads(audit.stdout)
    assert report["clean"] is True and report["events"] == len(stored)
    assert any("compared by digest" in part for part in report["checked"])
