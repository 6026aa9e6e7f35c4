"""schemathesis against ``/openapi.json`` of a real ``tierlog serve`` on 127.0.0.1.

One server (SQLite log) for the module, seeded with an endpoint, an agent holding a
task and a few queued tasks. Every operation of the schema is fuzzed (explicit
examples, the coverage phase and bounded Hypothesis fuzzing, valid and invalid data):
once with the operator token (the agent's own token on the agent-only routes) and
once with no token at all. Every request must answer below 500, and every rejected
request (status >= 400) must leave the length of the log unchanged (``GET /healthz``
before and after it). Timers are set far in the future so nothing is appended in the
background while the fuzzer runs.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.contract_calls import APPENDS_TO_SET_UP, crew, error_calls

OPERATOR_TOKEN = "operator-secret-token"
MAX_EXAMPLES = 50
# Set to replay a run: the seed is printed at the start and the end of every run.
SEED = os.environ.get("TIERLOG_SCHEMATHESIS_SEED")
WAIT_CAP_S = 0.2
MAX_WAIT_S = 60.0  # the most ``wait`` the server accepts
QUIET_TIMERS = {
    "TIERLOG_FALLBACK_WAIT_S": "3600",
    "TIERLOG_LEASE_S": "3600",
    "TIERLOG_TASK_TTL_S": "3600",
    "TIERLOG_RESOURCE_STALE_S": "3600",
}
AGENT_ONLY = {
    ("GET", "/v1/agents/{agent_id}/assignment"),
    ("POST", "/v1/agents/{agent_id}/heartbeat"),
    ("POST", "/v1/tasks/{task_id}/complete"),
    ("POST", "/v1/tasks/{task_id}/fail"),
}
NO_TOKEN_NEEDED = {("GET", "/healthz")}
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def _e2e_conftest(config: pytest.Config) -> ModuleType:
    """``tests/e2e/conftest.py`` as pytest loaded it (``start_server``, ``stop_server``)."""
    path = Path(__file__).with_name("conftest.py")
    module = config.pluginmanager.get_plugin(str(path))
    if module is None:  # not registered under that name: load it from its file
        spec = importlib.util.spec_from_file_location("tierlog_e2e_conftest", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


@dataclass
class Fleet:
    """The running server, its seeded state, and what the fuzzer did to it."""

    url: str
    agent_id: str
    agent_token: str
    task_id: str
    probe: httpx.Client
    session: requests.Session = field(default_factory=requests.Session)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    turns: dict[str, Iterator[int]] = field(default_factory=dict)
    probes: int = 0
    seed: int | None = None

    def log_length(self) -> int:
        self.probes += 1
        return int(self.probe.get("/healthz").json()["log_head"])

    def turn(self, key: str) -> int:
        """0, 1, 0, 1 ... per operation: every other case is aimed at the seeded ids."""
        return next(self.turns.setdefault(key, itertools.cycle((0, 1))))


def _seed(url: str) -> tuple[str, str, str]:
    """An endpoint, an agent holding a task, a few queued tasks; the agent and its task."""
    admin = httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}, timeout=30
    )
    with admin:
        answer = admin.put(
            "/v1/endpoints/gpu-a:11434", json={"host": "gpu-a", "port": 11434, "models": ["llama3"]}
        )
        assert answer.status_code == 200, answer.text
        answer = admin.post("/v1/endpoints/gpu-a:11434/health", json={"ok": True})
        assert answer.status_code == 200, answer.text
        answer = admin.post(
            "/v1/agents",
            json={"agent_id": "agent-1", "capabilities": ["python"], "ollama_host": "gpu-a"},
        )
        assert answer.status_code == 201, answer.text
        token = answer.json()["token"]
        for description, fields in (
            ("fix typo in README", {"priority": "low"}),
            ("add tests for the invoice parser", {"complexity_tier": "standard"}),
            ("refactor the storage layer", {"priority": "urgent"}),
        ):
            answer = admin.post("/v1/tasks", json={"description": description, **fields})
            assert answer.status_code == 201, answer.text
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as agent:
        answer = agent.get("/v1/agents/agent-1/assignment", params={"wait": 5})
        assert answer.status_code == 200, answer.text
        task = answer.json()
    return "agent-1", token, str(task["task_id"])


@pytest.fixture(scope="module")
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    e2e = _e2e_conftest(request.config)
    workdir = tmp_path_factory.mktemp("schemathesis")
    server = e2e.start_server(f"sqlite:///{workdir / 'log.db'}", workdir, **QUIET_TIMERS)
    started = time.monotonic()
    try:
        agent_id, token, task_id = _seed(server.url)
        with httpx.Client(base_url=server.url, timeout=30) as probe:
            state = Fleet(server.url, agent_id, token, task_id, probe)
            yield state
            state.session.close()
    finally:
        e2e.stop_server(server)
    total = sum(sum(c.values()) for c in state.statuses.values())
    lines = [
        f"schemathesis: {total} fuzzed requests (+{state.probes} GET /healthz log probes) "
        f"in {time.monotonic() - started:.1f} s, seed {state.seed}"
    ]
    lines += [f"  {key}: {dict(sorted(c.items()))}" for key, c in sorted(state.statuses.items())]
    print("\n" + "\n".join(lines))


@pytest.fixture(scope="module")
def api_schema(fleet: Fleet) -> Any:
    options: dict[str, Any] = {"output": {"sanitization": {"enabled": False}}}
    if SEED:
        options["seed"] = int(SEED)
    config = schemathesis.Config.from_dict(options)
    fleet.seed = config.seed
    print(f"\nschemathesis seed {config.seed} (replay: TIERLOG_SCHEMATHESIS_SEED={config.seed})")
    return schemathesis.openapi.from_url(f"{fleet.url}/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


# Compatibility shim: without it every lazy-schema test fails at once with
# "AttributeError: 'Function' object has no attribute '_nodeid'" (schemathesis 4.32.5
# on pytest 9.2). Reporting keeps pytest's own node id; schemathesis labels subtests.
@pytest.fixture(autouse=True)
def _nodeid_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.x's lazy schemas read ``node._nodeid``, which pytest 9.2 dropped."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def _cap_wait(case: Any) -> None:
    """Keep the long-poll short: any ``wait`` the server would accept becomes ≤ 0.2 s."""
    if not isinstance(case.query, dict) or "wait" not in case.query:
        return
    try:
        wait = float(case.query["wait"])
    except (TypeError, ValueError):
        return  # not a number: the server rejects it at once
    if 0 <= wait <= MAX_WAIT_S:  # (False for NaN) out of range is rejected at once: keep it
        case.query["wait"] = min(wait, WAIT_CAP_S)


def _run(case: Any, fleet: Fleet, headers: dict[str, str], kind: str) -> Any:
    """Send the case; it must not be a 5xx, and a rejection must append nothing."""
    _cap_wait(case)
    before = fleet.log_length()
    response = case.call(base_url=fleet.url, session=fleet.session, headers=headers, timeout=30)
    fleet.statuses.setdefault(kind, Counter())[response.status_code] += 1
    # Every answer is one the document declares for the operation, with the body it
    # declares (errors included): what a generated client expects is what it gets.
    case.validate_response(response, checks=CHECKS, headers=headers)
    if response.status_code >= 400:
        after = fleet.log_length()
        assert after == before, (
            f"rejected request appended {after - before} event(s) to the log "
            f"(head {before} -> {after}): {response.status_code} {response.text[:500]}\n"
            f"    {case.as_curl_command(headers=headers)}"
        )
    return response


def _aim_at_seeded_ids(case: Any, fleet: Fleet) -> None:
    """Every other case of an agent-only route names the seeded agent and its task."""
    if not fleet.turn(f"{case.method} {case.path}"):
        return
    for container in (case.path_parameters, case.body):
        if not isinstance(container, dict):
            continue
        if "agent_id" in container:
            container["agent_id"] = fleet.agent_id
        if "task_id" in container:
            container["task_id"] = fleet.task_id


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_with_tokens_no_5xx_and_rejections_append_nothing(case: Any, fleet: Fleet) -> None:
    token = OPERATOR_TOKEN
    if (case.method.upper(), case.path) in AGENT_ONLY:
        token = fleet.agent_token
        _aim_at_seeded_ids(case, fleet)
    _run(case, fleet, {"Authorization": f"Bearer {token}"}, "with token")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_without_token_nothing_is_served_and_nothing_appended(case: Any, fleet: Fleet) -> None:
    response = _run(case, fleet, {}, "no token")
    if (case.method.upper(), case.path) in NO_TOKEN_NEEDED:
        return
    assert response.status_code >= 400, (
        f"served without a token: {response.status_code} {response.text[:500]}\n"
        f"    {case.as_curl_command()}"
    )


def _declared_errors(api_schema: Any) -> set[tuple[str, str, int]]:
    """(METHOD, path, status) for every error status every operation declares."""
    doc = api_schema.raw_schema
    return {
        (method.upper(), path, int(status))
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
        for status in operation["responses"]
        if int(status) >= 400
    }


def test_every_declared_error_is_answered_with_its_declared_body(fleet, api_schema):
    """Each operation answers each error it declares, with the body the document
    describes (and declares no error it cannot answer: every one has a call here)."""
    admin = httpx.Client(
        base_url=fleet.url, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}, timeout=30
    )
    c = crew(fleet.url, admin)
    try:
        calls = error_calls(c)
        declared = _declared_errors(api_schema)
        # 503 (the store cannot take a write) needs a full disk: test_disk_full.py.
        assert set(calls) == {key for key in declared if key[2] != 503}
        for (method, path, status), call in sorted(calls.items()):
            before = fleet.log_length()
            response = call()
            assert response.status_code == status, (method, path, status, response.text)
            api_schema[path][method].validate_response(response)
            body = response.json()
            assert set(body) == {"error", "field", "message"}, body
            if (method, path, status) not in APPENDS_TO_SET_UP:
                assert fleet.log_length() == before, (method, path, status, "appended")
    finally:
        c.close()
        admin.close()
