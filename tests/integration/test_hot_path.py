"""The hot path (``tierlog.adapters.http.hot_path``) answers exactly as FastAPI's way does.

Two apps over two real SQLite logs, one with the hot path and one without, get the same
requests in the same order: the submissions, polls, heartbeats and completions it
serves, and every way to get them wrong (no token, another role or agent, a body that is
not JSON or not valid, a query it does not expect, a stale generation). Each answer's
status, body (ids, times and digests aside) and content type are the same.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tierlog.adapters import bootstrap
from tierlog.adapters.settings import Settings

TOKEN = "admin-token-for-the-hot-path"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
_IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIMES = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?")


class Twin:
    """One app of the pair, with the agent tokens it issued."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.tokens: dict[str, str] = {}
        self.tasks: list[str] = []


@pytest.fixture
def twins(tmp_path: Path) -> Iterator[tuple[Twin, Twin]]:
    systems, clients = [], []
    for hot in (True, False):
        store = f"sqlite:///{tmp_path / ('hot' if hot else 'long')}.db"
        system = bootstrap.build_system(Settings(store=store, long_poll_max_s=5))
        system.start_background()
        systems.append(system)
        app, _ = bootstrap.build_app(system, TOKEN, hot_path=hot)
        clients.append(TestClient(app).__enter__())
    try:
        yield Twin(clients[0]), Twin(clients[1])
    finally:
        for client in clients:
            client.__exit__(None, None, None)
        for system in systems:
            system.close()


def _same(twins: tuple[Twin, Twin], method: str, path: str, **kwargs: Any) -> Any:
    """Make the request on both apps (``{agent:NAME}``, ``{task:N}`` and ``{token:NAME}``
    filled in per app); assert the answers match; the hot app's decoded body."""
    answers = []
    for twin in twins:
        answers.append(twin.client.request(method, _fill(path, twin), **_fill_kwargs(kwargs, twin)))
    hot, long = answers
    assert hot.status_code == long.status_code, (method, path, hot.text, long.text)
    assert hot.headers.get("content-type") == long.headers.get("content-type"), (method, path)
    assert _normal(hot.content) == _normal(long.content), (method, path, hot.text, long.text)
    return hot.json() if hot.content else None


def _fill(text: str, twin: Twin) -> str:
    text = re.sub(r"\{task:(\d+)\}", lambda m: twin.tasks[int(m.group(1))], text)
    return re.sub(r"\{token:([\w-]+)\}", lambda m: twin.tokens[m.group(1)], text)


def _fill_kwargs(kwargs: dict[str, Any], twin: Twin) -> dict[str, Any]:
    filled = dict(kwargs)
    if "headers" in kwargs:
        filled["headers"] = {k: _fill(v, twin) for k, v in kwargs["headers"].items()}
    if "json" in kwargs:
        filled["json"] = json.loads(_fill(json.dumps(kwargs["json"]), twin))
    return filled


def _normal(content: bytes) -> Any:
    if not content:
        return None
    text = _TIMES.sub("<time>", _IDS.sub("<id>", content.decode()))
    text = re.sub(r'"token_sha256": ?"[0-9a-f]{64}"', '"token_sha256": "<digest>"', text)
    text = re.sub(r'"scoring_duration_us": ?\d+', '"scoring_duration_us": 0', text)
    try:
        return json.loads(text)
    except ValueError:
        return text


def _agent(twins: tuple[Twin, Twin], agent_id: str, capability: str) -> None:
    for twin in twins:
        body = {"agent_id": agent_id, "capabilities": [capability]}
        answer = twin.client.post("/v1/agents", json=body, headers=ADMIN)
        assert answer.status_code == 201, answer.text
        twin.tokens[agent_id] = answer.json()["token"]


def _bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {{token:{name}}}"}


def test_submissions_answer_the_same_either_way(twins):
    _agent(twins, "viewer-like", "nothing")
    good = {"description": "refactor the parser", "priority": "high"}
    for twin in twins:
        answer = twin.client.post("/v1/tasks", json=good, headers=ADMIN)
        assert answer.status_code == 201
        twin.tasks.append(answer.json()["task_id"])
    _same(twins, "POST", "/v1/tasks", json=good, headers=ADMIN)
    keyed = {**ADMIN, "Idempotency-Key": "k-1"}
    _same(twins, "POST", "/v1/tasks", json={"description": "x"}, headers=keyed)
    _same(twins, "POST", "/v1/tasks", json={"description": "x"}, headers=keyed)  # 200
    _same(twins, "POST", "/v1/tasks", json={"description": "y"}, headers=keyed)  # 409
    _same(
        twins,
        "POST",
        "/v1/tasks",
        json={"description": "x", "idempotency_key": "k-2"},
        headers=ADMIN,
    )
    _same(
        twins,
        "POST",
        "/v1/tasks",
        json={"description": "x", "idempotency_key": "k-2"},
        headers=ADMIN,
    )
    _same(
        twins,
        "POST",
        "/v1/tasks",
        json={"description": "z", "idempotency_key": "k-2"},
        headers=ADMIN,
    )
    bad_bodies: list[bytes] = [
        b"",
        b"{",
        b"[]",
        b"null",
        b'{"description": ""}',
        b'{"description": "x", "max_retries": "3"}',
        b'{"description": "x", "max_retries": 1.0}',
        b'{"description": "x", "unknown": 1}',
        b'{"description": "x", "metadata": {"a": NaN}}',
        b'{"description": "x", "complete_by": "tomorrow"}',
        b'{"description": "x", "complexity_tier": "huge"}',
        b'{"description": "\\ud800"}',
        b'{"description": "x", "metadata": {"n": 123456789012345678901234567890}}',
        b"\xff\xfe",
        b'{"description": "x", "metadata": {"d": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    ]
    for body in bad_bodies:
        _same(twins, "POST", "/v1/tasks", content=body, headers={**ADMIN, **JSON})
    form = {**ADMIN, "Content-Type": "application/x-www-form-urlencoded"}
    _same(twins, "POST", "/v1/tasks", content=b"description=x", headers=form)
    _same(twins, "POST", "/v1/tasks", json=good)  # no token
    _same(twins, "POST", "/v1/tasks", json=good, headers={"Authorization": "Bearer nobody"})
    _same(twins, "POST", "/v1/tasks", json=good, headers=_bearer("viewer-like"))  # an agent
    _same(twins, "POST", "/v1/tasks?extra=1", json=good, headers=ADMIN)
    _same(
        twins,
        "POST",
        "/v1/tasks",
        json={"description": "x"},
        headers={**ADMIN, "Idempotency-Key": ""},
    )
    big = b'{"description": "' + b"d" * (1024 * 1024) + b'"}'
    _same(twins, "POST", "/v1/tasks", content=big, headers={**ADMIN, **JSON})
    for twin in twins:  # both logs hold the same story
        log = twin.client.get("/v1/log", params={"limit": 1000}, headers=ADMIN).json()
        twin.tasks.append(str(len(log["events"])))
    assert twins[0].tasks[-1] == twins[1].tasks[-1]


def test_an_agents_poll_heartbeat_and_completion_answer_the_same_either_way(twins):
    _agent(twins, "worker", "hot")
    _agent(twins, "other", "cold")
    me = _bearer("worker")
    _same(twins, "GET", "/v1/agents/worker/assignment", headers=me)  # 204 at once
    for query in ("wait=abc", "wait=-1", "wait=61", "wait=1e1", "wait=0&x=1", "wait=0&wait=1"):
        _same(twins, "GET", f"/v1/agents/worker/assignment?{query}", headers=me)
    _same(twins, "GET", "/v1/agents/worker/assignment", headers=_bearer("other"))
    _same(twins, "GET", "/v1/agents/worker/assignment", headers=ADMIN)
    _same(twins, "GET", "/v1/agents/nobody/assignment", headers=me)
    _same(twins, "GET", "/v1/agents/worker/assignment")
    body = {"description": "fix typo", "complexity_tier": "trivial", "needed_capabilities": ["hot"]}
    for twin in twins:
        answer = twin.client.post("/v1/tasks", json=body, headers=ADMIN)
        twin.tasks.append(answer.json()["task_id"])
    task = _same(twins, "GET", "/v1/agents/worker/assignment?wait=2", headers=me)
    assert task["generation"] == 1 and task["description"] == "fix typo"
    beat = "/v1/agents/worker/heartbeat"
    _same(twins, "POST", beat, json={"task_id": "{task:0}", "generation": 1}, headers=me)
    _same(twins, "POST", beat, json={"task_id": "{task:0}", "generation": 2}, headers=me)
    _same(twins, "POST", beat, json={"task_id": "{task:0}", "generation": "1"}, headers=me)
    _same(twins, "POST", beat, json={"task_id": "nope", "generation": 1}, headers=me)
    _same(twins, "POST", beat, json={"task_id": "{task:0}"}, headers=me)
    _same(
        twins, "POST", beat, json={"task_id": "{task:0}", "generation": 1}, headers=_bearer("other")
    )
    _same(twins, "POST", beat, json={"task_id": "{task:0}", "generation": 1}, headers=ADMIN)
    _same(twins, "POST", beat, content=b"task_id=x", headers={**me, "Content-Type": "text/plain"})
    done = "/v1/tasks/{task:0}/complete"
    _same(twins, "POST", done, json={"generation": 1}, headers=_bearer("other"))  # not yours
    _same(twins, "POST", done, json={"generation": 3}, headers=me)  # stale
    _same(
        twins,
        "POST",
        done,
        json={"generation": 1, "result": {"a": [1, 2.5, None]}, "x": 1},
        headers=me,
    )
    _same(twins, "POST", done, json={"generation": 1}, headers=ADMIN)
    _same(twins, "POST", "/v1/tasks/not-a-uuid/complete", json={"generation": 1}, headers=me)
    upper = "/v1/tasks/{task:0}/complete".upper().replace("/V1/TASKS/", "/v1/tasks/")
    upper = upper.replace("/COMPLETE", "/complete")
    _same(twins, "POST", upper, json={"generation": 1, "result": {"ok": True}}, headers=me)
    _same(twins, "POST", done, json={"generation": 1}, headers=me)  # already completed
    _same(twins, "GET", "/v1/tasks/{task:0}", headers=ADMIN)
