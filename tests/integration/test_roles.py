"""Least privilege (SPEC §5.2): every route × every kind of caller, on a real app over a
real SQLite log (in process), and no token digest in any answer.

The roles: the operator (admin), the read-only viewer (``viewer_token``), the agent that
holds the task and is named in the path (self), another agent (other), no token, a
token nobody holds. An agent reading a task it never held gets 404, the answer it gets
for a task that does not exist.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from fastapi.testclient import TestClient

from tierlog.adapters import bootstrap
from tierlog.adapters.settings import Settings
from tierlog.domain.errors import ConfigurationError

ADMIN_TOKEN = "admin-token-for-the-role-matrix"
VIEWER_TOKEN = "viewer-token-for-the-role-matrix"
ROLES = ("none", "bad", "viewer", "other", "self", "admin")
ENDPOINT = "gpu-1:11434"


@dataclass
class Fleet:
    """A served fleet: agent ``self`` holds ``held``, ``other`` holds ``theirs``,
    ``queued`` waits for a capability nobody has."""

    http: TestClient
    tokens: dict[str, str | None]
    held: dict[str, Any]
    theirs: dict[str, Any]
    queued: str
    answers: list[httpx.Response] = field(default_factory=list)

    def call(self, role: str, method: str, path: str, body: Any = None) -> httpx.Response:
        token = self.tokens[role]
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        answer = self.http.request(method, path, json=body, headers=headers)
        self.answers.append(answer)
        return answer

    def digests(self) -> set[str]:
        """The digests of every agent token handed out."""
        return {
            hashlib.sha256(t.encode()).hexdigest()
            for role, t in self.tokens.items()
            if role in ("self", "other") and t is not None
        }


def _register(http: TestClient, agent_id: str, capability: str) -> str:
    answer = http.post(
        "/v1/agents",
        json={"agent_id": agent_id, "capabilities": [capability]},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def _work(http: TestClient, agent_id: str, token: str, capability: str) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = {"description": "fix typo in README", "needed_capabilities": [capability]}
    assert http.post("/v1/tasks", json=body, headers=admin).status_code == 201
    answer = http.get(
        f"/v1/agents/{agent_id}/assignment",
        params={"wait": 5},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text
    task: dict[str, Any] = answer.json()
    return task


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    settings = Settings(store=f"sqlite:///{tmp_path / 'log.db'}", viewer_token=VIEWER_TOKEN)
    system = bootstrap.build_system(settings)
    system.start_background()
    try:
        app, _ = bootstrap.build_app(system, ADMIN_TOKEN)
        with TestClient(app) as http:
            me, them = _register(http, "me", "mine"), _register(http, "them", "theirs")
            held, theirs = _work(http, "me", me, "mine"), _work(http, "them", them, "theirs")
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            body = {"description": "fix typo", "needed_capabilities": ["nobody"]}
            queued = http.post("/v1/tasks", json=body, headers=admin).json()["task_id"]
            tokens = {
                "none": None,
                "bad": "not-a-token",
                "viewer": VIEWER_TOKEN,
                "other": them,
                "self": me,
                "admin": ADMIN_TOKEN,
            }
            yield Fleet(http, tokens, held, theirs, queued)
    finally:
        system.close()


def _expect(allowed: dict[str, int], denied: int = 403, public: bool = False) -> dict[str, int]:
    """The status for every role: ``allowed`` as given, 401 without a known token (unless
    the route is public), ``denied`` for any other role."""
    unknown = {} if public else {"none": 401, "bad": 401}
    return {role: allowed.get(role, unknown.get(role, denied)) for role in ROLES}


READ_ALL = {"admin": 200, "viewer": 200}


def _matrix(f: Fleet) -> list[tuple[str, str, Any, dict[str, int]]]:
    """(method, path, body, status by role), in the order they run: reads first, then
    writes whose allowed callers change state last."""
    held_id, gen = f.held["task_id"], f.held["generation"]
    missing = str(uuid4())
    own_task = {"admin": 200, "viewer": 200, "self": 200, "other": 404}
    return [
        ("GET", "/healthz", None, _expect({r: 200 for r in ROLES}, public=True)),
        ("GET", "/openapi.json", None, _expect({r: 200 for r in ROLES}, public=True)),
        ("GET", "/v1/tasks", None, _expect(READ_ALL)),
        ("GET", f"/v1/tasks/{held_id}", None, _expect(own_task)),
        ("GET", f"/v1/tasks/{held_id}/timeline", None, _expect(own_task)),
        ("GET", f"/v1/tasks/{f.queued}", None, _expect(READ_ALL, denied=404)),
        ("GET", f"/v1/tasks/{missing}", None, _expect({}, denied=404)),
        ("GET", f"/v1/tasks/{missing}/timeline", None, _expect({}, denied=404)),
        ("GET", "/v1/agents", None, _expect(READ_ALL)),
        ("GET", "/v1/endpoints", None, _expect(READ_ALL)),
        ("GET", "/v1/queue", None, _expect(READ_ALL)),
        ("GET", "/v1/telemetry", None, _expect(READ_ALL)),
        ("GET", "/metrics", None, _expect(READ_ALL)),
        ("GET", "/v1/log?limit=1000", None, _expect(READ_ALL)),
        ("GET", "/v1/agents/me/assignment", None, _expect({"self": 200})),
        (
            "POST",
            "/v1/agents/me/heartbeat",
            {"task_id": held_id, "generation": gen},
            _expect({"self": 200}),
        ),
        ("POST", "/v1/tasks", {"description": "x"}, _expect({"admin": 201})),
        (
            "POST",
            "/v1/agents",
            {"agent_id": "newcomer", "capabilities": []},
            _expect({"admin": 201}),
        ),
        (
            "PUT",
            f"/v1/endpoints/{ENDPOINT}",
            {"host": "gpu-1", "port": 11434, "models": ["llama3:8b"]},
            _expect({"admin": 200}),
        ),
        ("POST", f"/v1/endpoints/{ENDPOINT}/health", {"ok": True}, _expect({"admin": 200})),
        (
            "POST",
            f"/v1/endpoints/{ENDPOINT}/resources",
            {"cpu_percent": 12.5},
            _expect({"admin": 200}),
        ),
        ("DELETE", f"/v1/endpoints/{ENDPOINT}", None, _expect({"admin": 200})),
        ("POST", f"/v1/tasks/{f.queued}/retry", None, _expect({"admin": 409})),
        ("POST", f"/v1/tasks/{f.queued}/cancel", None, _expect({"admin": 200})),
        # A write on another agent's task: the domain refuses it (403 not_your_task).
        (
            "POST",
            f"/v1/tasks/{f.theirs['task_id']}/fail",
            {"generation": f.theirs["generation"], "error": "x"},
            _expect({"other": 200}),
        ),
        (
            "POST",
            f"/v1/tasks/{held_id}/complete",
            {"generation": gen, "result": {"ok": True}},
            _expect({"self": 200}),
        ),
        ("POST", "/v1/agents/newcomer/offline", None, _expect({"admin": 200})),
        ("DELETE", "/v1/agents/newcomer", None, _expect({"admin": 200})),
        ("DELETE", "/v1/agents/me", None, _expect({"self": 200, "admin": 404})),
    ]


def test_every_route_answers_every_role_as_declared(fleet):
    wrong = []
    for method, path, body, expected in _matrix(fleet):
        # The callers let through go last: their write would change what the others meet.
        for role in sorted(ROLES, key=lambda r: expected[r] not in (401, 403)):
            answer = fleet.call(role, method, path, body)
            if answer.status_code != expected[role]:
                wrong.append(f"{method} {path} as {role}: {answer.status_code} {answer.text}")
    assert not wrong, "\n".join(wrong)
    assert fleet.digests() and not _leaks(fleet.answers, fleet.digests())


def _leaks(answers: list[httpx.Response], digests: set[str]) -> list[str]:
    return [f"{a.request.url}: {d}" for a in answers for d in digests if d in a.text]


def test_another_agents_task_is_as_missing_as_a_task_that_does_not_exist(fleet):
    theirs, missing = fleet.theirs["task_id"], str(uuid4())
    for suffix in ("", "/timeline"):
        foreign = fleet.call("self", "GET", f"/v1/tasks/{theirs}{suffix}").json()
        absent = fleet.call("self", "GET", f"/v1/tasks/{missing}{suffix}").json()
        assert foreign == {**absent, "message": f"no task {theirs}"}
        assert foreign["error"] == "not_found"


def test_an_agent_reads_the_tasks_it_held_and_their_whole_timeline(fleet):
    held = fleet.held["task_id"]
    task = fleet.call("self", "GET", f"/v1/tasks/{held}").json()["task"]
    assert task["assigned_to"] == "me"
    events = fleet.call("self", "GET", f"/v1/tasks/{held}/timeline").json()["events"]
    assert [e["type"] for e in events][:2] == ["TaskSubmitted", "TaskClassified"]
    assert "TaskAssigned" in [e["type"] for e in events]


def test_token_digests_are_redacted_from_the_log_for_everyone(fleet):
    for role in ("admin", "viewer"):
        events = fleet.call(role, "GET", "/v1/log?limit=1000").json()["events"]
        registered = [e for e in events if e["type"] == "AgentRegistered"]
        assert {e["payload"]["agent_id"] for e in registered} == {"me", "them"}
        assert all(e["payload"]["token_sha256"] == "[redacted]" for e in registered)
    assert not _leaks(fleet.answers, fleet.digests())


def test_the_openapi_document_names_the_roles_of_every_operation(fleet):
    doc = fleet.call("none", "GET", "/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    needs = {
        f"{method.upper()} {path}": operation.get("security")
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
    }
    assert needs.pop("GET /healthz") is None
    reads = [{"bearer": ["admin", "viewer"]}]
    assert needs["GET /v1/log"] == needs["GET /v1/queue"] == needs["GET /v1/tasks"] == reads
    assert needs["POST /v1/tasks"] == [{"bearer": ["admin"]}]
    assert needs["GET /v1/tasks/{task_id}"] == [{"bearer": ["admin", "viewer", "agent:own-task"]}]
    assert needs["GET /v1/agents/{agent_id}/assignment"] == [{"bearer": ["agent:self"]}]
    assert needs["DELETE /v1/agents/{agent_id}"] == [{"bearer": ["admin", "agent:self"]}]
    assert needs["POST /v1/agents/{agent_id}/offline"] == [{"bearer": ["admin"]}]
    assert needs["DELETE /v1/endpoints/{endpoint_id}"] == [{"bearer": ["admin"]}]
    assert all(needs.values())  # every other operation names its roles


def test_a_viewer_token_equal_to_the_operator_token_is_refused(tmp_path):
    settings = Settings(store=f"sqlite:///{tmp_path / 'log.db'}", viewer_token=ADMIN_TOKEN)
    system = bootstrap.build_system(settings)
    try:
        with pytest.raises(ConfigurationError, match="viewer token must differ"):
            bootstrap.build_app(system, ADMIN_TOKEN)
    finally:
        system.close()
