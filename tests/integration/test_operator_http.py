"""The operator's view over HTTP, on a real app over a real SQLite log with a virtual
clock: timers by reason and the routing histograms in ``/metrics``, timer events in a
task's timeline, the queue's waiting reason on the injected clock, the submit defaults,
and the admin routes that mark an agent offline and deregister an endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tierlog.adapters import bootstrap
from tierlog.adapters.bootstrap import System
from tierlog.adapters.settings import Settings
from tierlog.domain import commands as cmd
from tierlog.domain.clock import VirtualClock
from tierlog.domain.config import SchedulerConfig

ADMIN_TOKEN = "admin-token-for-the-operator-routes"
VIEWER_TOKEN = "viewer-token-for-the-operator-routes"
# Years before any wall clock this runs on: a deadline past on the wall clock is still
# ahead on this one.
T0 = datetime(2020, 1, 1, tzinfo=UTC)
ENDPOINT = "gpu-a:11434"


@dataclass
class Served:
    """An app on a started system whose clock moves only when told."""

    http: TestClient
    system: System
    clock: VirtualClock

    def call(self, method: str, path: str, body: Any = None, token: str = ADMIN_TOKEN) -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        return self.http.request(method, path, json=body, headers=headers)

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        answer = self.call(method, path, body)
        assert answer.status_code == status, answer.text
        return answer.json()

    def advance(self, seconds: float) -> None:
        """Move the clock, then have the writer run a pass at the new time."""
        self.clock.advance(seconds)
        self.system.runtime.call(cmd.RunSchedulingPass())

    def head(self) -> int:
        return self.system.log.head()

    def read(self, path: str, **params: Any) -> Any:
        """A read once the read models reflect every event appended so far."""
        answer = self.http.get(
            path,
            params={"min_position": self.head(), **params},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert answer.status_code == 200, answer.text
        return answer

    def submit(self, tier: str, **body: Any) -> str:
        body = {"description": "implement the feature", "complexity_tier": tier, **body}
        return str(self.ok("POST", "/v1/tasks", body, status=201)["task_id"])

    def agent(self, agent_id: str) -> str:
        body = {"agent_id": agent_id}
        return str(self.ok("POST", "/v1/agents", body, status=201)["token"])

    def endpoint(self) -> None:
        self.ok(
            "PUT",
            f"/v1/endpoints/{ENDPOINT}",
            {"host": "gpu-a", "port": 11434, "models": ["llama3"]},
        )
        self.ok("POST", f"/v1/endpoints/{ENDPOINT}/health", {"ok": True})

    def refused(self, method: str, path: str, status: int, body: Any = None) -> dict[str, Any]:
        """A request that must be refused with ``status`` and append nothing."""
        before = self.head()
        answer = self.call(method, path, body)
        assert answer.status_code == status, answer.text
        assert self.head() == before
        error: dict[str, Any] = answer.json()
        return error


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    settings = Settings(
        store=f"sqlite:///{tmp_path / 'log.db'}",
        viewer_token=VIEWER_TOKEN,
        scheduler=SchedulerConfig(fallback_wait_s=5.0),
    )
    clock = VirtualClock(T0)
    system = bootstrap.build_system(settings, clock=clock)
    system.start_background()
    try:
        app, _ = bootstrap.build_app(system, ADMIN_TOKEN)
        with TestClient(app) as http:
            yield Served(http, system, clock)
    finally:
        system.close()


def _fallback_then_recovery(s: Served) -> tuple[str, str]:
    """A standard task that waits out its timer and falls back to Claude, then one
    whose tier recovers inside the wait."""
    s.agent("a1")
    falls_back = s.submit("standard")  # no Ollama endpoint: a timer starts
    s.advance(5)  # it fires: escalated to complex, routed to Claude, assigned to a1
    s.agent("a2")
    recovers = s.submit("standard")
    s.endpoint()  # the tier recovers: routed to Ollama, the timer cancelled
    return falls_back, recovers


# --- /metrics -------------------------------------------------------------------------


def test_metrics_count_timers_by_reason_and_sum_the_routing_measurements(served):
    _fallback_then_recovery(served)
    served.read("/v1/telemetry")
    metrics = served.read("/metrics").text
    reason = "no_healthy_ollama_endpoints"
    for line in (
        f'tierlog_fallback_timers_total{{outcome="started",reason="{reason}"}} 2.0',
        f'tierlog_fallback_timers_total{{outcome="fired",reason="{reason}"}} 1.0',
        'tierlog_fallback_timers_total{outcome="cancelled",reason="assigned"} 1.0',
        'tierlog_routing_decisions_total{target="claude",tier="complex"} 1.0',
        'tierlog_routing_decisions_total{target="ollama",tier="standard"} 1.0',
        # Claude counts as one candidate, and so does the one Ollama endpoint.
        'tierlog_routing_candidates_bucket{le="0"} 0.0',
        'tierlog_routing_candidates_bucket{le="1"} 2.0',
        "tierlog_routing_candidates_count 2.0",
        "tierlog_routing_candidates_sum 2.0",
        "tierlog_routing_scoring_seconds_count 2.0",
        'tierlog_routing_scoring_seconds_bucket{le="+Inf"} 2.0',
        'tierlog_fallback_wait_seconds_bucket{le="1"} 0.0',
        'tierlog_fallback_wait_seconds_bucket{le="5"} 1.0',
        "tierlog_fallback_wait_seconds_sum 5.0",
    ):
        assert line in metrics, line
    assert 'reason=""' not in metrics
    scoring_bounds = [
        line.split('le="')[1].split('"')[0]
        for line in metrics.splitlines()
        if line.startswith("tierlog_routing_scoring_seconds_bucket")
    ]
    # 10 µs to 100 ms, in seconds as Prometheus has it.
    assert scoring_bounds[0] == "1e-05" and scoring_bounds[-2:] == ["0.1", "+Inf"]
    telemetry = served.read("/v1/telemetry").json()["telemetry"]
    assert telemetry["timers"]["started_by_reason"] == {reason: 2}
    assert telemetry["routing_candidates"]["count"] == 2


# --- the timeline ---------------------------------------------------------------------


def test_the_timeline_holds_the_tasks_timer_events_in_log_order(served):
    falls_back, recovers = _fallback_then_recovery(served)
    answer = served.read(f"/v1/tasks/{falls_back}/timeline").json()
    assert answer["read_position"] == served.head()
    events = answer["events"]
    assert [e["type"] for e in events] == [
        "TaskSubmitted",
        "TaskClassified",
        "FallbackTimerStarted",
        "FallbackTimerFired",
        "TaskEscalated",
        "TaskRouted",
        "TaskAssigned",
    ]
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    timers = [e for e in events if e["type"].startswith("FallbackTimer")]
    assert {e["payload"]["task_id"] for e in timers} == {falls_back}
    assert all(e["aggregate_id"] != falls_back for e in timers)  # the scheduler's stream
    fired = next(e for e in timers if e["type"] == "FallbackTimerFired")
    assert fired["payload"]["wait_ms"] == 5000
    other = served.read(f"/v1/tasks/{recovers}/timeline").json()["events"]
    other_timers = [e for e in other if e["type"].startswith("FallbackTimer")]
    assert [e["type"] for e in other_timers] == ["FallbackTimerStarted", "FallbackTimerCancelled"]
    assert other_timers[1]["payload"]["reason"] == "assigned"


def test_a_timeline_without_timers_is_the_tasks_own_stream(served):
    served.agent("a1")
    task = served.submit("trivial", description="fix typo in README")
    events = served.read(f"/v1/tasks/{task}/timeline").json()["events"]
    assert [e["type"] for e in events] == [
        "TaskSubmitted",
        "TaskClassified",
        "TaskRouted",
        "TaskAssigned",
    ]
    assert {e["aggregate_id"] for e in events} == {task}


# --- the queue's waiting reason -------------------------------------------------------


def test_the_queue_says_why_a_task_waits_by_the_injected_clock(served):
    due = T0 + timedelta(seconds=60)
    task = served.submit("trivial", description="fix typo in README", complete_by=due.isoformat())
    # No agent: the task waits. The wall clock is years past ``due``; the scheduler's is not.
    row = next(t for t in served.read("/v1/queue").json()["tasks"] if t["task_id"] == task)
    assert row["waiting_reason"] == "waiting for an idle agent (or a candidate) at tier trivial"
    before = served.head()
    served.clock.advance(61)  # no pass: the same log position, another moment
    queued = served.http.get("/v1/queue", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    rows = [t for t in queued.json()["tasks"] if t["task_id"] == task]
    if served.head() == before:  # (a pass that settles overdue work would append)
        # The page cached at this position went stale when the clock passed the deadline.
        assert [r["waiting_reason"][:8] for r in rows] == ["overdue:"]


# --- submit defaults ------------------------------------------------------------------


def test_a_submission_that_names_nothing_gets_the_documented_defaults(served):
    task = served.ok("POST", "/v1/tasks", {"description": "fix typo in README"}, status=201)
    events = served.read(f"/v1/tasks/{task['task_id']}/timeline").json()["events"]
    submitted = events[0]["payload"]
    assert submitted["priority"] == "normal"
    assert submitted["max_retries"] == 3
    assert submitted["submitted_by"] == "unknown"
    row = served.read(f"/v1/tasks/{task['task_id']}").json()["task"]
    assert row["priority"] == "normal"


# --- POST /v1/agents/{id}/offline -----------------------------------------------------


def _agent(s: Served, agent_id: str) -> dict[str, Any] | None:
    agents = s.read("/v1/agents").json()["agents"]
    return next((a for a in agents if a["agent_id"] == agent_id), None)


def test_marking_an_agent_offline_gives_it_no_work(served):
    served.agent("a1")
    done = served.ok("POST", "/v1/agents/a1/offline", {"reason": "maintenance"})
    assert done["position"] == served.head()
    assert _agent(served, "a1")["status"] == "offline"
    log = served.read("/v1/log", after=done["position"] - 1).json()["events"]
    assert [(e["type"], e["payload"]["reason"]) for e in log] == [
        ("AgentWentOffline", "maintenance")
    ]
    task = served.submit("trivial", description="fix typo in README")
    assert served.read(f"/v1/tasks/{task}").json()["task"]["state"] == "queued"


def test_marking_a_busy_agent_offline_reclaims_its_task(served):
    served.agent("a1")
    task = served.submit("trivial", description="fix typo in README")
    assert served.read(f"/v1/tasks/{task}").json()["task"]["state"] == "assigned"
    served.ok("POST", "/v1/agents/a1/offline")  # no body: reason "operator"
    events = served.read(f"/v1/tasks/{task}/timeline").json()["events"]
    reclaimed = next(e for e in events if e["type"] == "TaskReclaimed")
    assert reclaimed["payload"]["reason"] == "agent_gone"
    assert served.read(f"/v1/tasks/{task}").json()["task"]["state"] == "queued"
    gone = served.read("/v1/log", after=served.head() - 10).json()["events"]
    offline = [e for e in gone if e["type"] == "AgentWentOffline"]
    assert offline[-1]["payload"]["reason"] == "operator"


def test_marking_offline_refuses_unknown_gone_and_offline_agents(served):
    error = served.refused("POST", "/v1/agents/nobody/offline", 404)
    assert error == {
        "error": "not_found",
        "field": "agent_id",
        "message": "no registered agent nobody",
    }
    served.agent("a1")
    served.ok("POST", "/v1/agents/a1/offline")
    error = served.refused("POST", "/v1/agents/a1/offline", 409)
    assert error["error"] == "invalid_transition" and "already offline" in error["message"]
    served.agent("a2")
    served.ok("DELETE", "/v1/agents/a2")
    served.refused("POST", "/v1/agents/a2/offline", 404)
    served.refused("POST", "/v1/agents/a1/offline", 422, {"reason": "x", "extra": 1})
    served.refused("POST", "/v1/agents/a1/offline", 422, {"reason": "x" * 5000})
    served.refused("POST", "/v1/agents/%20/offline", 422)


# --- DELETE /v1/endpoints/{id} --------------------------------------------------------


def _endpoint(s: Served) -> dict[str, Any] | None:
    endpoints = s.read("/v1/endpoints").json()["endpoints"]
    return next((e for e in endpoints if e["endpoint_id"] == ENDPOINT), None)


def test_deregistering_an_endpoint_takes_it_out_of_routing(served):
    served.endpoint()
    served.agent("a1")
    served.ok("DELETE", f"/v1/endpoints/{ENDPOINT}")
    assert _endpoint(served)["status"] == "deregistered"
    task = served.submit("standard")
    events = served.read(f"/v1/tasks/{task}/timeline").json()["events"]
    # No Ollama candidate left: the task waits for its tier, with a timer.
    assert "FallbackTimerStarted" in [e["type"] for e in events]
    assert "TaskAssigned" not in [e["type"] for e in events]
    served.endpoint()  # registering it again brings it back
    assert _endpoint(served)["status"] == "healthy"


def test_deregistering_refuses_unknown_and_gone_endpoints(served):
    error = served.refused("DELETE", "/v1/endpoints/nowhere:11434", 404)
    assert error == {
        "error": "not_found",
        "field": "endpoint_id",
        "message": "no registered endpoint nowhere:11434",
    }
    served.endpoint()
    served.ok("DELETE", f"/v1/endpoints/{ENDPOINT}")
    served.refused("DELETE", f"/v1/endpoints/{ENDPOINT}", 404)
    served.refused("DELETE", "/v1/endpoints/not-host-and-port", 422)


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/agents/a1/offline"), ("DELETE", f"/v1/endpoints/{ENDPOINT}")],
)
def test_the_new_admin_routes_refuse_the_viewer_and_no_token(served, method, path):
    served.agent("a1")
    served.endpoint()
    before = served.head()
    assert served.call(method, path, token=VIEWER_TOKEN).status_code == 403
    assert served.http.request(method, path).status_code == 401
    assert served.call(method, path, token="not-a-token").status_code == 401
    assert served.head() == before
