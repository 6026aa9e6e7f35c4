"""The dashboard's page, files and reads (``/``, ``/ui``, ``/v1/ui/...``) on a real app
over a real log (SQLite and PostgreSQL), in process: who may read them, what they
answer, and that bad input is refused and appends nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tierlog.adapters import bootstrap
from tierlog.adapters.settings import Settings
from tierlog.domain.config import SchedulerConfig

ADMIN = "admin-token-for-the-dashboard-routes"
VIEWER = "viewer-token-for-the-dashboard-routes"
READS = (
    "/v1/ui/whoami",
    "/v1/ui/overview",
    "/v1/ui/queue",
    "/v1/ui/agents",
    "/v1/ui/endpoints",
    "/v1/ui/routing",
    "/v1/ui/feed",
)


class Api:
    """The app under a client, with a header per role."""

    def __init__(self, http: TestClient, agent_token: str) -> None:
        self.http = http
        self.tokens = {"admin": ADMIN, "viewer": VIEWER, "agent": agent_token}

    def get(self, path: str, role: str = "viewer", **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role != "none" else {}
        return self.http.get(path, params=params, headers=headers)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        answer = self.http.request(
            method, path, json=body, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert answer.status_code < 300, answer.text
        return answer.json()

    def head(self) -> int:
        return int(self.http.get("/healthz").json()["log_head"])

    def caught_up(self) -> None:
        deadline = time.monotonic() + 10
        while any(p["lag"] for p in self.http.get("/healthz").json()["projections"].values()):
            assert time.monotonic() < deadline
            time.sleep(0.01)


@pytest.fixture
def api(store_url: str) -> Iterator[Api]:
    settings = Settings(
        store=store_url,
        viewer_token=VIEWER,
        scheduler=SchedulerConfig(fallback_wait_s=3600),
    )
    system = bootstrap.build_system(settings)
    system.start_background()
    try:
        app, _ = bootstrap.build_app(system, ADMIN)
        with TestClient(app) as http:
            headers = {"Authorization": f"Bearer {ADMIN}"}
            agent = http.post("/v1/agents", json={"agent_id": "agent-1"}, headers=headers)
            yield Api(http, agent.json()["token"])
    finally:
        system.close()


def test_the_page_and_its_files_are_public_and_talk_only_to_this_server(api: Api) -> None:
    for path in ("/", "/ui"):
        page = api.http.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "/ui/js/main.js" in page.text and "http" not in page.text.split("<body>")[0]
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    for name in ("style.css", "js/main.js", "js/api.js", "js/charts.js"):
        asset = api.http.get(f"/ui/{name}")
        assert asset.status_code == 200, name
        assert "://" not in asset.text.replace("http://www.w3.org/2000/svg", ""), name
    assert api.http.get("/ui/js/main.js").headers["content-type"].startswith("text/javascript")
    for missing in ("/ui/nothing.js", "/ui/..%2fpyproject.toml", "/ui/%2e%2e/app.py", "/ui/"):
        assert api.http.get(missing).status_code == 404, missing
    # A client that resolves the dots itself asks for /pyproject.toml: not public.
    assert api.http.get("/ui/../pyproject.toml").status_code == 401


def test_every_dashboard_read_is_for_the_operator_and_the_viewer_only(api: Api) -> None:
    for path in READS:
        assert api.get(path, "admin").status_code == 200, path
        assert api.get(path, "viewer").status_code == 200, path
        assert api.get(path, "agent").status_code == 403, path
        assert api.get(path, "none").status_code == 401, path
    assert api.get("/v1/ui/whoami", "admin").json() == {"role": "admin"}
    assert api.get("/v1/ui/whoami", "viewer").json() == {"role": "viewer"}
    doc = api.http.get("/openapi.json").json()["paths"]
    assert "/" not in doc and "/ui" not in doc
    assert doc["/v1/ui/feed"]["get"]["security"] == [{"bearer": ["admin", "viewer"]}]


def test_bad_input_is_refused_and_appends_nothing(api: Api) -> None:
    head = api.head()
    for path, params in [
        ("/v1/ui/queue", {"limit": 0}),
        ("/v1/ui/queue", {"limit": 201}),
        ("/v1/ui/queue", {"offset": -1}),
        ("/v1/ui/feed", {"after": -1}),
        ("/v1/ui/feed", {"limit": 1001}),
        ("/v1/ui/feed", {"wait": 61}),
        ("/v1/ui/feed", {"wait": "soon"}),
        ("/v1/ui/tasks/not-a-uuid/story", {}),
    ]:
        answer = api.get(path, **params)
        assert (answer.status_code, answer.json()["error"]) == (422, "validation_error"), params
    missing = api.get("/v1/ui/tasks/00000000-0000-4000-8000-000000000000/story")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert api.head() == head


def test_the_queue_pages_in_queue_order_with_why_each_task_waits(api: Api) -> None:
    ids = []
    for i, priority in enumerate(["low", "normal", "urgent", "high", "normal"]):
        body = {"description": f"fix typo {i}", "priority": priority, "needed_capabilities": ["x"]}
        ids.append(api.admin("POST", "/v1/tasks", body)["task_id"])
    api.caught_up()
    first = api.get("/v1/ui/queue", limit=2).json()
    assert first["total"] == 5 and first["offset"] == 0
    assert [t["task_id"] for t in first["tasks"]] == [ids[2], ids[3]]
    rest = api.get("/v1/ui/queue", offset=2, limit=200).json()
    assert [t["task_id"] for t in rest["tasks"]] == [ids[1], ids[4], ids[0]]
    assert all(t["waiting_reason"].startswith("waiting for an idle agent") for t in rest["tasks"])
    assert api.get("/v1/ui/queue", offset=5).json()["tasks"] == []
    overview = api.get("/v1/ui/overview").json()
    assert sum(r["count"] for r in overview["queue"]) == 5
    assert {r["priority"] for r in overview["queue"]} == {"low", "normal", "urgent", "high"}
    assert overview["agents"] == {"idle": 1} and overview["log_head"] == api.head()
    assert set(overview["projection_lag"]) >= {"tasks", "queue"}


def _standard_waits_on_a_timer(api: Api) -> str:
    """An unhealthy endpoint, a healthy one, and a standard task with no candidate."""
    for host in ("gpu-1", "gpu-2"):
        api.admin(
            "PUT", f"/v1/endpoints/{host}:11434", {"host": host, "port": 11434, "models": ["m"]}
        )
    api.admin("POST", "/v1/endpoints/gpu-1:11434/health", {"ok": True})
    api.admin("POST", "/v1/endpoints/gpu-1:11434/resources", {"cpu_percent": 20.0})
    api.caught_up()  # the rows come from the read models, which follow the log
    scored = api.get("/v1/ui/endpoints").json()
    assert scored["standard_target"] == "ollama"
    scores = {e["endpoint_id"]: e["score"] for e in scored["endpoints"]}
    assert scores["gpu-1:11434"] == pytest.approx(0.8 * 0.9) and scores["gpu-2:11434"] is None
    for _ in range(2):
        api.admin("POST", "/v1/endpoints/gpu-1:11434/health", {"ok": False})
    body = {"description": "refactor the parser", "complexity_tier": "standard"}
    return str(api.admin("POST", "/v1/tasks", body)["task_id"])


def test_a_waiting_standard_task_shows_its_timer_and_its_story(api: Api) -> None:
    task_id = _standard_waits_on_a_timer(api)
    api.caught_up()
    (row,) = [t for t in api.get("/v1/ui/queue").json()["tasks"] if t["task_id"] == task_id]
    assert row["timer_fires_at"] and row["timer_fallback_tier"] == "complex"
    assert "no_healthy_ollama_endpoints" in row["waiting_reason"]
    assert api.get("/v1/ui/overview").json()["timers_pending"] == 1
    story = api.get(f"/v1/ui/tasks/{task_id}/story").json()
    assert story["task"]["state"] == "queued"
    events = [line["event"] for line in story["story"]]
    assert events == ["TaskSubmitted", "TaskClassified", "FallbackTimerStarted"]
    assert "no_healthy_ollama_endpoints" in story["story"][-1]["detail"]


def test_the_feed_gives_every_event_once_in_order_and_waits_for_the_next(api: Api) -> None:
    for i in range(3):
        api.admin(
            "POST", "/v1/tasks", {"description": f"fix typo {i}", "needed_capabilities": ["x"]}
        )
    head = api.head()
    last = api.get("/v1/ui/feed", limit=3).json()
    assert [e["position"] for e in last["events"]] == [head - 2, head - 1, head]
    assert last["next_after"] == head
    everything = api.get("/v1/ui/feed", after=0, limit=1000).json()["events"]
    assert [e["position"] for e in everything] == list(range(1, head + 1))
    registered = [e for e in everything if e["type"] == "AgentRegistered"]
    assert registered and "agent_id=agent-1" in registered[0]["line"]
    assert "token_sha256" not in registered[0]["line"]

    def submit_soon() -> None:
        time.sleep(0.3)
        api.admin("POST", "/v1/tasks", {"description": "fix typo", "needed_capabilities": ["x"]})

    threading.Thread(target=submit_soon).start()
    began = time.monotonic()
    woken = api.get("/v1/ui/feed", after=head, wait=10).json()
    assert time.monotonic() - began < 5
    assert woken["events"][0]["position"] == head + 1
    assert woken["events"][0]["type"] == "TaskSubmitted"
    assert woken["events"][0]["task_id"] and "fix typo" in woken["events"][0]["line"]
    quiet = api.get("/v1/ui/feed", after=api.head(), wait=0.2).json()
    assert quiet["events"] == [] and quiet["next_after"] == api.head()


def test_the_routing_series_counts_decisions_by_tier_and_target(api: Api) -> None:
    token = api.tokens["agent"]
    for i in range(3):
        api.admin("POST", "/v1/tasks", {"description": f"fix typo {i}"})
        answer = api.http.get(
            "/v1/agents/agent-1/assignment",
            params={"wait": 5},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        api.http.post(
            f"/v1/tasks/{answer['task_id']}/complete",
            json={"generation": answer["generation"], "result": None},
            headers={"Authorization": f"Bearer {token}"},
        )
    series = api.get("/v1/ui/routing").json()
    assert series["bucket_s"] == 10
    assert sum(b["counts"].get("trivial->sidecar", 0) for b in series["buckets"]) == 3
    # A second read costs only the new events and counts nothing twice.
    again = api.get("/v1/ui/routing").json()
    assert again["buckets"] == series["buckets"]
    api.caught_up()
    agents = api.get("/v1/ui/agents").json()["agents"]
    assert agents[0]["agent_id"] == "agent-1" and agents[0]["status"] == "idle"
    assert agents[0]["last_seen"]
