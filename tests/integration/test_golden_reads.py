"""The HTTP reads answer byte for byte what they answered when the goldens were
recorded, for the same log (issue #16: the read models' storage may change, their
answers may not).

The log is the demo's, stopped with work in flight (``tests/fixtures/golden/``). The
test copies it, builds the read models from position 0 as ``serve`` does
(``bootstrap.build_system``), and GETs every read route through the real app. The
scheduler's clock is a virtual one frozen at the log's last event, so every "now" an
answer holds (waiting reasons, the dashboard's clock, scores) is the same on every run,
and the writer is not started, so nothing is appended (checked). A server process on
127.0.0.1 would read the wall clock, which no setting freezes.

To record the answers again (only when an answer is meant to change, and say why in
the commit): ``TIERLOG_UPDATE_GOLDEN=1 pytest tests/integration/test_golden_reads.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tierlog.adapters import bootstrap
from tierlog.adapters.readside.read_store import ReadStore
from tierlog.adapters.readside.row_cache import RowCache
from tierlog.adapters.settings import Settings
from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.tools.demo import POLICY
from tierlog.domain.clock import VirtualClock
from tierlog.projections.base import Fold
from tierlog.projections.registry import all_projections

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "golden"
LOG = FIXTURES / "demo-172s.db"
ANSWERS = FIXTURES / "answers"
ADMIN = "golden-admin-token"
VIEWER = "golden-viewer-token"
UPDATE = os.environ.get("TIERLOG_UPDATE_GOLDEN") == "1"


class Reads:
    """The app under a client: each GET's body, recorded by name."""

    def __init__(self, http: TestClient) -> None:
        self.http = http
        self.bodies: dict[str, bytes] = {}

    def get(self, name: str | None, path: str, token: str = ADMIN, **params: Any) -> Any:
        """GET ``path``; its body is recorded under ``name`` (None: not recorded)."""
        answer = self.http.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, (path, answer.text)
        if name is not None:
            assert name not in self.bodies, name
            self.bodies[name] = answer.content
        return answer.json() if "json" in answer.headers["content-type"] else None


@pytest.fixture
def reads(tmp_path: Path) -> Iterator[Reads]:
    log_path = tmp_path / "demo.db"
    shutil.copyfile(LOG, log_path)
    store = f"sqlite:///{log_path}"
    probe = EventLog(store)
    head = probe.head()
    last = probe.read(head - 1, 1)[0][1].timestamp
    probe.close()
    settings = Settings(store=store, viewer_token=VIEWER, scheduler=POLICY, checkpoints=False)
    system = bootstrap.build_system(settings, clock=VirtualClock(last))
    try:
        system.start()  # the read models fold the log from 0; the writer is not started
        assert system.runtime.state.position == head, "starting appended events"
        assert system.runner.committed_position == head
        app, _ = bootstrap.build_app(system, ADMIN)
        with TestClient(app) as http:
            yield Reads(http)
        assert system.log.head() == head, "the reads appended events"
    finally:
        system.close()


def _metrics_without_process_lines(body: bytes) -> bytes:
    # The app registers no process collector today; should one appear, its figures
    # (memory, CPU, start time) are this process's, not the log's.
    lines = body.decode().splitlines(keepends=True)
    return "".join(
        line for line in lines if not re.match(r"^(# (HELP|TYPE) )?(process|python)_", line)
    ).encode()


def _visit(api: Reads) -> None:
    """Every read route, with filters and pages."""
    listed = api.get("tasks", "/v1/tasks")
    assert listed["next_cursor"] is not None
    api.get("tasks-page2", "/v1/tasks", cursor=listed["next_cursor"])
    api.get("tasks-limit7", "/v1/tasks", limit=7)
    # (Pages of 20 below: the two pages above hold every task already.)
    tasks: dict[str, list[dict[str, Any]]] = {}
    for state in ("queued", "assigned", "completed", "dead_lettered", "cancelled"):
        tasks[state] = api.get(f"tasks-{state}", "/v1/tasks", state=state, limit=20)["tasks"]
    for tier in ("trivial", "standard", "complex"):
        api.get(f"tasks-tier-{tier}", "/v1/tasks", tier=tier, limit=20)
    api.get("tasks-queued-complex", "/v1/tasks", state="queued", tier="complex", limit=5)
    after = tasks["completed"][3]["submit_position"]
    api.get("tasks-completed-cursor", "/v1/tasks", state="completed", cursor=str(after), limit=20)
    assert all(tasks[s] for s in ("queued", "assigned", "completed", "dead_lettered"))
    everything = api.get(None, "/v1/tasks", limit=1000)["tasks"]
    escalated = [t for t in everything if t["effective_tier"] != t["tier"]]
    failed = [t for t in everything if t["last_error"] is not None]
    picks = {
        "queued": tasks["queued"][0],
        "queued-last": tasks["queued"][-1],
        "assigned": tasks["assigned"][0],
        "completed": tasks["completed"][0],
        "dead-lettered": tasks["dead_lettered"][0],
        "escalated": escalated[0],
        "failed": failed[0],
    }
    for name, task in picks.items():
        task_id = task["task_id"]
        api.get(f"task-{name}", f"/v1/tasks/{task_id}")
        api.get(f"timeline-{name}", f"/v1/tasks/{task_id}/timeline")
        api.get(f"story-{name}", f"/v1/ui/tasks/{task_id}/story")
    api.get("queue", "/v1/queue")
    api.get("queue-limit5", "/v1/queue", limit=5)
    api.get("agents", "/v1/agents")
    api.get("endpoints", "/v1/endpoints")
    api.get("telemetry", "/v1/telemetry")
    api.get("metrics", "/metrics")
    api.bodies["metrics"] = _metrics_without_process_lines(api.bodies["metrics"])
    api.get("healthz", "/healthz")
    api.get("log", "/v1/log")
    api.get("log-after-1300", "/v1/log", after=1300, limit=1000)
    api.get("ui-whoami", "/v1/ui/whoami", token=VIEWER)
    api.get("ui-overview", "/v1/ui/overview")
    api.get("ui-queue", "/v1/ui/queue")
    api.get("ui-queue-page2", "/v1/ui/queue", offset=50, limit=50)
    api.get("ui-agents", "/v1/ui/agents")
    api.get("ui-endpoints", "/v1/ui/endpoints")
    api.get("ui-routing", "/v1/ui/routing")
    api.get("ui-feed", "/v1/ui/feed")
    api.get("ui-feed-after", "/v1/ui/feed", after=1000, limit=50)


def test_every_read_answers_as_recorded(reads: Reads) -> None:
    _visit(reads)
    if UPDATE:
        shutil.rmtree(ANSWERS, ignore_errors=True)
        ANSWERS.mkdir()
        for name, body in reads.bodies.items():
            (ANSWERS / f"{name}.txt").write_bytes(body)
        pytest.skip(f"recorded {len(reads.bodies)} answers in {ANSWERS}")
    recorded = {p.stem for p in ANSWERS.glob("*.txt")}
    assert recorded == set(reads.bodies), "the routes visited are not the ones recorded"
    differing = [
        name
        for name, body in reads.bodies.items()
        if (ANSWERS / f"{name}.txt").read_bytes() != body
    ]
    assert not differing, f"answers differ from the recorded ones: {differing}"


def test_the_answers_hold_what_they_are_meant_to_pin() -> None:
    # The recorded log has work in flight: an empty queue or no timer would make the
    # comparison above pin little.
    queue = json.loads((ANSWERS / "queue.txt").read_bytes())
    assert queue["total"] > 50
    assert any(t["timer_fires_at"] for t in queue["tasks"])
    agents = json.loads((ANSWERS / "agents.txt").read_bytes())["agents"]
    assert {"busy", "offline"} <= {a["status"] for a in agents}
    story = json.loads((ANSWERS / "timeline-escalated.txt").read_bytes())
    assert any(e["type"] == "FallbackTimerFired" for e in story["events"])


def _fold_into(store: ReadStore, events: list[tuple[int, Any]]) -> dict[str, list[Any]]:
    """The demo log's events folded into ``store``'s read models, 500 to a batch, and
    every table as the answers show it, in key order."""
    projections = all_projections()
    tables = [t for p in projections for t in p.tables]
    store.create([s for t in tables for s in t.ddl])
    fold = Fold([(p, 0, None) for p in projections])
    for start in range(0, len(events), 500):
        with store.transaction() as db:
            rows = RowCache(tables, db)
            fold.apply(rows, events[start : start + 500])
            rows.flush()
    return {
        t.name: store.fetch(f"SELECT * FROM {t.name} ORDER BY {', '.join(t.key)}") for t in tables
    }


def test_postgres_reads_the_demo_rows_as_sqlite_does(tmp_path: Path, pg_url: str) -> None:
    # The answers are recorded on SQLite; PostgreSQL holds the same typed values (bytea
    # ids, bigint times and counters, integer codes) and reads them back the same.
    shutil.copyfile(LOG, tmp_path / "demo.db")
    demo = EventLog(f"sqlite:///{tmp_path / 'demo.db'}")
    events = demo.read(0, demo.head())
    pg_log = EventLog(pg_url)
    stores = [ReadStore(demo, sqlite_path=tmp_path / "read.db"), ReadStore(pg_log)]
    try:
        on_sqlite, on_postgres = (_fold_into(store, events) for store in stores)
    finally:
        for closing in (*stores, demo, pg_log):
            closing.close()
    assert on_sqlite["rm_tasks"] and on_sqlite["rm_tel_counters"]
    for name, rows in on_sqlite.items():
        assert on_postgres[name] == rows, name
