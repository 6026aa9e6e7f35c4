"""One request per error each operation of the OpenAPI document declares, made to answer
exactly that error against a real server.

``error_calls`` builds them over a fleet of its own (agents with capabilities nobody else
has, so the fuzzer's agents never take their tasks): each call is keyed by
``(METHOD, path template, status)``, the same key the declarations give, so a test can
check that the calls and the declarations are one set. 503 is left to the disk-full test
(it needs a full disk under the server).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

Key = tuple[str, str, int]
Call = Callable[[], httpx.Response]
MAX_BODY_BYTES = 1024 * 1024  # the server's default max_body_bytes
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
APPENDS_TO_SET_UP: frozenset[Key] = frozenset({("GET", "/v1/agents/{agent_id}/assignment", 404)})
"""Calls that append on the way (the agent they deregister), though the error appends nothing."""


@dataclass
class Crew:
    """Two agents of the test's own, each holding a task; a task nobody can take; the
    operator's client."""

    url: str
    admin: httpx.Client
    me: str
    my_token: str
    held: dict[str, Any]
    them: str
    their_token: str
    theirs: dict[str, Any]
    queued: str
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None) -> httpx.Client:
        """A client with ``token`` (none: no Authorization header), closed by ``close``."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        http = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        self.clients.append(http)
        return http

    def close(self) -> None:
        for http in self.clients:
            http.close()


def _register(admin: httpx.Client, agent_id: str, capability: str) -> str:
    answer = admin.post("/v1/agents", json={"agent_id": agent_id, "capabilities": [capability]})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def _submit(admin: httpx.Client, capability: str) -> str:
    body = {
        "description": "fix typo in README",
        "complexity_tier": "trivial",
        "needed_capabilities": [capability],
    }
    answer = admin.post("/v1/tasks", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["task_id"])


def _take(url: str, agent_id: str, token: str) -> dict[str, Any]:
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        answer = http.get(f"/v1/agents/{agent_id}/assignment", params={"wait": 10})
    assert answer.status_code == 200, answer.text
    task: dict[str, Any] = answer.json()
    return task


def crew(url: str, admin: httpx.Client) -> Crew:
    """Register the crew and hand each of its agents a task."""
    tag = uuid.uuid4().hex[:8]
    me, them = f"contract-me-{tag}", f"contract-them-{tag}"
    my_token, their_token = _register(admin, me, f"cap-{me}"), _register(admin, them, f"cap-{them}")
    _submit(admin, f"cap-{me}")
    _submit(admin, f"cap-{them}")
    held, theirs = _take(url, me, my_token), _take(url, them, their_token)
    queued = _submit(admin, f"cap-nobody-{tag}")
    return Crew(url, admin, me, my_token, held, them, their_token, theirs, queued)


def _drain(url: str, agent_id: str, token: str) -> None:
    """Complete whatever the queue hands the agent (tasks others submitted with no
    capability needed) until it has nothing for it."""
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        for _ in range(500):
            answer = http.get(f"/v1/agents/{agent_id}/assignment")
            if answer.status_code == 204:
                return
            task = answer.json()
            done = http.post(
                f"/v1/tasks/{task['task_id']}/complete", json={"generation": task["generation"]}
            )
            assert done.status_code == 200, done.text
    raise AssertionError("the queue kept handing out tasks")


def _deregistered_while_polling(c: Crew) -> httpx.Response:
    """An agent's long-poll answers 404 once the operator deregisters it meanwhile."""
    agent_id = f"contract-leaving-{uuid.uuid4().hex[:8]}"
    token = _register(c.admin, agent_id, f"cap-{agent_id}")
    answers: list[httpx.Response] = []
    _drain(c.url, agent_id, token)

    def poll() -> None:
        with httpx.Client(
            base_url=c.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as http:
            answers.append(http.get(f"/v1/agents/{agent_id}/assignment", params={"wait": 20}))

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.5)  # the poll is waiting
    assert c.admin.delete(f"/v1/agents/{agent_id}").status_code == 200
    poller.join(timeout=30)
    return answers[0]


def _cancelled_while_held(c: Crew) -> Call:
    """A poll that hears its task was cancelled (409 ``cancelled``): the agent, its task
    and the cancellation are made now; the poll, made later, appends nothing."""
    agent_id = f"contract-cancelled-{uuid.uuid4().hex[:8]}"
    token = _register(c.admin, agent_id, f"cap-{agent_id}")
    _drain(c.url, agent_id, token)
    _submit(c.admin, f"cap-{agent_id}")
    task = _take(c.url, agent_id, token)
    assert c.admin.post(f"/v1/tasks/{task['task_id']}/cancel").status_code == 200
    http = c.client(token)
    return lambda: http.get(f"/v1/agents/{agent_id}/assignment")


def error_calls(c: Crew) -> dict[Key, Call]:
    """Every declared (operation, error status) but 503, with a call that answers it."""
    admin, mine, theirs = c.admin, c.client(c.my_token), c.client(c.their_token)
    nobody = c.client(None)
    missing = str(uuid.uuid4())
    held, gen = c.held["task_id"], c.held["generation"]
    their_task, their_gen = c.theirs["task_id"], c.theirs["generation"]
    endpoint = "contract-gpu:11434"
    endpoint_body = {"host": "contract-gpu", "port": 11434, "models": ["llama3"]}
    assert admin.put(f"/v1/endpoints/{endpoint}", json=endpoint_body).status_code == 200

    calls: dict[Key, Call] = {}

    def add(method: str, template: str, status: int, call: Call) -> None:
        calls[(method, template, status)] = call

    # Reads every operator and viewer may make: no token 401, an agent 403, bad 422.
    for template, bad in (
        ("/v1/tasks", {"state": "sleeping"}),
        ("/v1/agents", {"min_position": -1}),
        ("/v1/endpoints", {"min_position": -1}),
        ("/v1/queue", {"limit": 0}),
        ("/v1/telemetry", {"min_position": -1}),
        ("/v1/log", {"after": -1}),
    ):
        add("GET", template, 401, lambda t=template: nobody.get(t))
        add("GET", template, 403, lambda t=template: mine.get(t))
        add("GET", template, 422, lambda t=template, q=bad: admin.get(t, params=q))
    # The dashboard's reads: the same roles; the paged ones take parameters.
    for template in ("whoami", "overview", "queue", "agents", "endpoints", "routing", "feed"):
        path = f"/v1/ui/{template}"
        add("GET", path, 401, lambda p=path: nobody.get(p))
        add("GET", path, 403, lambda p=path: mine.get(p))
    add("GET", "/v1/ui/queue", 422, lambda: admin.get("/v1/ui/queue", params={"limit": 0}))
    add("GET", "/v1/ui/feed", 422, lambda: admin.get("/v1/ui/feed", params={"after": -1}))
    story = "/v1/ui/tasks/{task_id}/story"
    add("GET", story, 401, lambda: nobody.get(f"/v1/ui/tasks/{held}/story"))
    add("GET", story, 403, lambda: mine.get(f"/v1/ui/tasks/{held}/story"))
    add("GET", story, 404, lambda: admin.get(f"/v1/ui/tasks/{missing}/story"))
    add("GET", story, 422, lambda: admin.get("/v1/ui/tasks/not-a-uuid/story"))
    add("GET", "/metrics", 401, lambda: nobody.get("/metrics"))
    add("GET", "/metrics", 403, lambda: mine.get("/metrics"))

    # One task, and its timeline: an agent reading a task it never held gets 404.
    for suffix in ("", "/timeline"):
        template = "/v1/tasks/{task_id}" + suffix
        add("GET", template, 401, lambda s=suffix: nobody.get(f"/v1/tasks/{held}{s}"))
        add("GET", template, 404, lambda s=suffix: theirs.get(f"/v1/tasks/{held}{s}"))
        add("GET", template, 422, lambda s=suffix: admin.get(f"/v1/tasks/not-a-uuid{s}"))

    # Writes with a body: no token 401; over the limit 413; not JSON 415 (each needs
    # the caller that may make it, or the token check answers first).
    bodies: list[tuple[str, str, str, httpx.Client]] = [
        ("POST", "/v1/tasks", "/v1/tasks", admin),
        ("POST", "/v1/tasks/batch", "/v1/tasks/batch", admin),
        ("POST", "/v1/tasks/{task_id}/cancel", f"/v1/tasks/{c.queued}/cancel", admin),
        ("POST", "/v1/tasks/{task_id}/retry", f"/v1/tasks/{missing}/retry", admin),
        ("POST", "/v1/tasks/{task_id}/complete", f"/v1/tasks/{held}/complete", mine),
        ("POST", "/v1/tasks/{task_id}/fail", f"/v1/tasks/{held}/fail", mine),
        ("POST", "/v1/agents", "/v1/agents", admin),
        ("POST", "/v1/agents/{agent_id}/heartbeat", f"/v1/agents/{c.me}/heartbeat", mine),
        ("POST", "/v1/agents/{agent_id}/offline", f"/v1/agents/{c.me}/offline", admin),
        ("PUT", "/v1/endpoints/{endpoint_id}", f"/v1/endpoints/{endpoint}", admin),
        ("POST", "/v1/endpoints/{endpoint_id}/health", f"/v1/endpoints/{endpoint}/health", admin),
        (
            "POST",
            "/v1/endpoints/{endpoint_id}/resources",
            f"/v1/endpoints/{endpoint}/resources",
            admin,
        ),
    ]
    too_big = b"[" + b"0," * (MAX_BODY_BYTES // 2) + b"0]"
    for method, template, path, http in bodies:
        add(method, template, 401, lambda m=method, p=path: nobody.request(m, p, json={}))
        add(
            method,
            template,
            413,
            lambda m=method, p=path, h=http: h.request(
                m, p, content=too_big, headers={"Content-Type": "application/json"}
            ),
        )
        add(
            method,
            template,
            415,
            lambda m=method, p=path, h=http: h.request(m, p, content=b"reason=x", headers=FORM),
        )

    # Operator-only writes: an agent's token is 403.
    add("POST", "/v1/tasks", 403, lambda: mine.post("/v1/tasks", json={"description": "x"}))
    add("POST", "/v1/tasks", 422, lambda: admin.post("/v1/tasks", json={}))
    batch = "/v1/tasks/batch"
    add("POST", batch, 403, lambda: mine.post(batch, json={"tasks": [{"description": "x"}]}))
    add("POST", batch, 422, lambda: admin.post(batch, json={"tasks": []}))
    add("POST", "/v1/agents", 403, lambda: mine.post("/v1/agents", json={"agent_id": "x"}))
    add("POST", "/v1/agents", 409, lambda: admin.post("/v1/agents", json={"agent_id": c.me}))
    add("POST", "/v1/agents", 422, lambda: admin.post("/v1/agents", json={}))
    for verb in ("cancel", "retry"):
        template = "/v1/tasks/{task_id}/" + verb
        add("POST", template, 403, lambda v=verb: mine.post(f"/v1/tasks/{c.queued}/{v}"))
        add("POST", template, 404, lambda v=verb: admin.post(f"/v1/tasks/{missing}/{v}"))
        add("POST", template, 422, lambda v=verb: admin.post(f"/v1/tasks/not-a-uuid/{v}"))
    # A cancelled task is not cancelled again; only a dead-lettered one is retried.
    cancelled = _submit(admin, f"cap-nobody-{uuid.uuid4().hex[:8]}")
    assert admin.post(f"/v1/tasks/{cancelled}/cancel").status_code == 200
    add(
        "POST",
        "/v1/tasks/{task_id}/cancel",
        409,
        lambda: admin.post(f"/v1/tasks/{cancelled}/cancel"),
    )
    # The same idempotency key with another body.
    key = {"Idempotency-Key": f"contract-{uuid.uuid4().hex[:8]}"}
    first = {"description": "fix typo in README", "complexity_tier": "trivial"}
    first["needed_capabilities"] = [f"cap-nobody-{uuid.uuid4().hex[:8]}"]  # type: ignore[assignment]
    assert admin.post("/v1/tasks", json=first, headers=key).status_code == 201
    add(
        "POST",
        "/v1/tasks",
        409,
        lambda: admin.post("/v1/tasks", json={**first, "priority": "high"}, headers=key),
    )
    add("POST", "/v1/tasks/{task_id}/retry", 409, lambda: admin.post(f"/v1/tasks/{c.queued}/retry"))

    # The agent's own writes: another caller 403, an unknown task 404, a stale
    # generation 409, a malformed body 422.
    finish = {"complete": {}, "fail": {"error": "it broke"}}
    for verb, extra in finish.items():
        template = "/v1/tasks/{task_id}/" + verb
        add(
            "POST",
            template,
            403,
            lambda v=verb, e=extra: mine.post(
                f"/v1/tasks/{their_task}/{v}", json={"generation": their_gen, **e}
            ),
        )
        add(
            "POST",
            template,
            404,
            lambda v=verb, e=extra: mine.post(
                f"/v1/tasks/{missing}/{v}", json={"generation": 1, **e}
            ),
        )
        add(
            "POST",
            template,
            409,
            lambda v=verb, e=extra: mine.post(
                f"/v1/tasks/{held}/{v}", json={"generation": gen + 1, **e}
            ),
        )
        add("POST", template, 422, lambda v=verb: mine.post(f"/v1/tasks/{held}/{v}", json={}))
    beat = "/v1/agents/{agent_id}/heartbeat"
    add("POST", beat, 403, lambda: theirs.post(f"/v1/agents/{c.me}/heartbeat", json={}))
    add(
        "POST",
        beat,
        404,
        lambda: mine.post(
            f"/v1/agents/{c.me}/heartbeat", json={"task_id": missing, "generation": 1}
        ),
    )
    add(
        "POST",
        beat,
        409,
        lambda: mine.post(
            f"/v1/agents/{c.me}/heartbeat", json={"task_id": held, "generation": gen + 1}
        ),
    )
    add("POST", beat, 422, lambda: mine.post(f"/v1/agents/{c.me}/heartbeat", json={}))

    # The long-poll: another agent 403, deregistered while it waits 404, a bad wait 422.
    poll = "/v1/agents/{agent_id}/assignment"
    add("GET", poll, 401, lambda: nobody.get(f"/v1/agents/{c.me}/assignment"))
    add("GET", poll, 403, lambda: theirs.get(f"/v1/agents/{c.me}/assignment"))
    add("GET", poll, 404, lambda: _deregistered_while_polling(c))
    add("GET", poll, 409, _cancelled_while_held(c))
    add("GET", poll, 422, lambda: mine.get(f"/v1/agents/{c.me}/assignment", params={"wait": -1}))

    # The operator marks an agent offline: an agent 403, unknown 404, already offline
    # 409 (an agent of its own, set up offline now), a malformed reason 422.
    offline = "/v1/agents/{agent_id}/offline"
    gone = f"contract-offline-{uuid.uuid4().hex[:8]}"
    _register(admin, gone, f"cap-{gone}")
    assert admin.post(f"/v1/agents/{gone}/offline").status_code == 200
    add("POST", offline, 403, lambda: mine.post(f"/v1/agents/{c.me}/offline"))
    add("POST", offline, 404, lambda: admin.post("/v1/agents/nobody-by-this-name/offline"))
    add("POST", offline, 409, lambda: admin.post(f"/v1/agents/{gone}/offline"))
    add("POST", offline, 422, lambda: admin.post(f"/v1/agents/{gone}/offline", json={"reason": 7}))
    # The operator removes an endpoint: an agent 403, unknown 404, not host:port 422.
    endpoint_path = "/v1/endpoints/{endpoint_id}"
    add("DELETE", endpoint_path, 401, lambda: nobody.delete(f"/v1/endpoints/{endpoint}"))
    add("DELETE", endpoint_path, 403, lambda: mine.delete(f"/v1/endpoints/{endpoint}"))
    add("DELETE", endpoint_path, 404, lambda: admin.delete("/v1/endpoints/nowhere:1"))
    add("DELETE", endpoint_path, 422, lambda: admin.delete("/v1/endpoints/not-an-endpoint"))

    # Leaving: the operator or the agent itself.
    leave = "/v1/agents/{agent_id}"
    add("DELETE", leave, 401, lambda: nobody.delete(f"/v1/agents/{c.me}"))
    add("DELETE", leave, 403, lambda: theirs.delete(f"/v1/agents/{c.me}"))
    add("DELETE", leave, 404, lambda: admin.delete("/v1/agents/nobody-by-this-name"))
    add("DELETE", leave, 422, lambda: admin.delete("/v1/agents/two%20words"))

    # Endpoints.
    add(
        "PUT",
        "/v1/endpoints/{endpoint_id}",
        403,
        lambda: mine.put(f"/v1/endpoints/{endpoint}", json=endpoint_body),
    )
    add(
        "PUT",
        "/v1/endpoints/{endpoint_id}",
        422,
        lambda: admin.put("/v1/endpoints/other:1", json=endpoint_body),
    )
    for report, bad in (("health", {}), ("resources", {"cpu_percent": 1000})):
        template = "/v1/endpoints/{endpoint_id}/" + report
        ok = {"ok": True} if report == "health" else {"cpu_percent": 10}
        add(
            "POST",
            template,
            403,
            lambda r=report, b=ok: mine.post(f"/v1/endpoints/{endpoint}/{r}", json=b),
        )
        add(
            "POST",
            template,
            404,
            lambda r=report, b=ok: admin.post(f"/v1/endpoints/nowhere:1/{r}", json=b),
        )
        add(
            "POST",
            template,
            422,
            lambda r=report, b=bad: admin.post(f"/v1/endpoints/{endpoint}/{r}", json=b),
        )
    return calls
