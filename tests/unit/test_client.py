"""The client library's decisions, over an in-memory HTTP transport that answers as the
server does: typed errors, backoff, a result retried with its generation until it is
acknowledged, a cancelled task's work dropped, registering again, the runner's pieces."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tierlog.adapters.client import agent_base, runner
from tierlog.adapters.client import errors as client_errors
from tierlog.adapters.tools import client_views as views
from tierlog.client import (
    Agent,
    AsyncAgent,
    Backoff,
    BadRequest,
    Operator,
    ServerUnavailable,
    Task,
    TaskCancelled,
    ValidationFailed,
)

ROOT = Path(__file__).resolve().parents[2]
FAST = Backoff(base_s=0.001, cap_s=0.002)
TASK_ID = "6f1c2a9e-0000-4000-8000-000000000001"


def _assignment(lease_s: float = 300.0, generation: int = 2) -> dict[str, Any]:
    expires = datetime.now(UTC) + timedelta(seconds=lease_s)
    return {
        "task_id": TASK_ID,
        "generation": generation,
        "description": "add tests for the parser",
        "metadata": {"k": 1},
        "routing_decision": {
            "effective_tier": "standard",
            "selected_endpoint": "gpu1:11434",
            "selected_model": "llama3",
        },
        "lease_expires_at": expires.isoformat(),
    }


def _error(status: int, code: str, message: str, field: str | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "field": field, "message": message})


class FakeServer:
    """Answers each request by path with the next scripted answer (an
    ``httpx.Response``, or an exception to raise as if the network failed)."""

    def __init__(self, script: dict[str, list[Any]]) -> None:
        self.script = script
        self.requests: list[tuple[str, str, Any, str | None]] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        key = request.url.path.rsplit("/", 1)[-1] if request.method != "DELETE" else "leave"
        with self.lock:
            self.requests.append((request.method, key, body, request.headers.get("authorization")))
            answers = self.script.get(key) or [httpx.Response(204)]
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            result: httpx.Response = answer()
            return result
        return answer

    def sent(self, key: str) -> list[Any]:
        return [body for _, k, body, _ in self.requests if k == key]


def _agent(server: FakeServer, **kw: Any) -> Agent:
    kw.setdefault("token", "agent-token")
    return Agent(
        "http://tierlog.test", "a1", transport=httpx.MockTransport(server), backoff=FAST, **kw
    )


# --- errors and backoff ----------------------------------------------------------------


def test_an_error_answer_becomes_its_typed_exception_with_the_servers_body() -> None:
    error = client_errors.error_for(409, {"error": "cancelled", "field": None, "message": "gone"})
    assert isinstance(error, TaskCancelled) and error.status == 409 and error.problem == "gone"
    invalid = client_errors.error_for(
        422, {"error": "validation_error", "field": "priority", "message": "bad"}
    )
    assert isinstance(invalid, ValidationFailed) and invalid.field == "priority"
    assert str(invalid) == "422 validation_error (priority): bad"
    assert isinstance(client_errors.error_for(503, {}), ServerUnavailable)
    assert client_errors.transient(client_errors.error_for(503, {}))
    odd = client_errors.error_for(418, "teapot")
    assert (
        isinstance(odd, BadRequest) and odd.message == "teapot" and not client_errors.transient(odd)
    )


def test_backoff_grows_exponentially_up_to_its_cap_with_jitter() -> None:
    backoff = Backoff(base_s=0.1, cap_s=1.0)
    for attempt, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (60, 1.0)]:
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(ceiling * 0.5 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered


def test_what_an_answer_to_complete_means() -> None:
    down = client_errors.ServerUnreachable("no answer")
    settled = client_errors.error_for(409, {"error": "invalid_transition", "message": "done"})
    too_big = client_errors.error_for(413, {"error": "body_too_large", "message": "big"})
    stale = client_errors.error_for(409, {"error": "stale_generation", "message": "old"})
    assert agent_base.settle(down, False, True) is agent_base.Settle.RETRY
    assert agent_base.settle(settled, True, True) is agent_base.Settle.ACKNOWLEDGED
    assert agent_base.settle(settled, False, True) is agent_base.Settle.VOID
    assert agent_base.settle(too_big, False, True) is agent_base.Settle.REFUSED_RESULT
    assert agent_base.settle(too_big, False, False) is agent_base.Settle.VOID
    assert agent_base.settle(stale, True, True) is agent_base.Settle.VOID


def test_a_task_reads_its_routing_decision() -> None:
    task = Task.from_assignment(_assignment())
    assert (task.tier, task.model, task.endpoint) == ("standard", "llama3", "gpu1:11434")
    assert task.metadata == {"k": 1} and task.lease_expires_at is not None
    called: list[str] = []
    task.on_stop(lambda: called.append("first"))
    task.stop("cancelled")
    task.stop("again")
    task.on_stop(lambda: called.append("late"))
    assert called == ["first", "late"] and task.cancelled and task.stop_reason == "cancelled"
    assert 90 < agent_base.beat_interval(task.lease_expires_at) <= 100


def test_an_agent_needs_a_token_or_the_operator_token() -> None:
    with pytest.raises(ValueError, match="needs its own token"):
        Agent("http://tierlog.test", "a1")


# --- the sync agent ------------------------------------------------------------------------


def test_a_result_is_retried_with_its_generation_until_acknowledged() -> None:
    down = httpx.ConnectError("refused")
    server = FakeServer(
        {
            "assignment": [httpx.Response(200, json=_assignment())],
            "complete": [down, httpx.Response(503, json={}), down, httpx.Response(200, json={})],
        }
    )
    stats = _agent(server).run(lambda task: {"answer": task.description}, max_tasks=1)
    sent = server.sent("complete")
    assert len(sent) == 4
    assert all(
        body == {"generation": 2, "result": {"answer": "add tests for the parser"}} for body in sent
    )
    assert (stats.completed, stats.failed, stats.abandoned) == (1, 0, 0)


def test_a_lost_answer_to_complete_is_acknowledged_by_the_409_that_follows() -> None:
    settled = _error(409, "invalid_transition", f"task {TASK_ID} is completed, not assigned")
    server = FakeServer(
        {
            "assignment": [httpx.Response(200, json=_assignment())],
            "complete": [httpx.ReadTimeout("lost"), settled],
        }
    )
    stats = _agent(server).run(lambda task: 42, max_tasks=1)
    assert len(server.sent("complete")) == 2 and stats.completed == 1


def test_an_exception_fails_the_task_with_its_text_and_a_refused_result_fails_it_too() -> None:
    server = FakeServer(
        {
            # Each run polls twice: its task, then (at max_tasks) for one assigned since.
            "assignment": [httpx.Response(200, json=_assignment()), httpx.Response(204)] * 3,
            "complete": [_error(422, "validation_error", "result: too deep", "result")],
            "fail": [httpx.Response(200, json={})],
        }
    )

    def boom(task: Task) -> None:
        raise RuntimeError("the parser exploded")

    stats = _agent(server).run(boom, max_tasks=1)
    assert server.sent("fail") == [{"generation": 2, "error": "RuntimeError: the parser exploded"}]
    stats = _agent(server).run(lambda task: {"deep": "x"}, max_tasks=1)
    assert server.sent("fail")[-1] == {
        "generation": 2,
        "error": "the server refused the result: result: too deep",
    }
    assert stats.failed == 1
    stats = _agent(server).run(lambda task: {1, 2}, max_tasks=1)  # not JSON
    assert server.sent("fail")[-1]["error"].startswith("the handler's result is not JSON")


def test_a_task_cancelled_under_the_handler_stops_its_work_and_the_agent_moves_on() -> None:
    server = FakeServer(
        {
            # The task, then nothing more (the poll at max_tasks finds no task to hand back).
            "assignment": [
                httpx.Response(200, json=_assignment(lease_s=0.3)),
                httpx.Response(204),
            ],
            "heartbeat": [_error(409, "cancelled", f"task {TASK_ID} was cancelled")],
        }
    )
    stopped: list[str | None] = []

    def slow(task: Task) -> str:
        task.stopped.wait(10)
        stopped.append(task.stop_reason)
        return "too late"

    stats = _agent(server).run(slow, max_tasks=1)
    assert (stats.abandoned, stats.completed) == (1, 0)
    assert server.sent("complete") == [] and server.sent("fail") == []
    assert len(server.sent("heartbeat")) == 1
    _wait_for(lambda: stopped == ["cancelled"])


def test_an_agent_whose_lease_ran_out_registers_again_before_it_polls() -> None:
    server = FakeServer(
        {
            "assignment": [
                httpx.Response(200, json=_assignment(lease_s=0.3)),
                httpx.Response(200, json=_assignment(generation=4)),
            ],
            "heartbeat": [_error(409, "stale_generation", "generation 2 is stale")],
            "agents": [httpx.Response(201, json={"agent_id": "a1", "token": "t2", "position": 9})],
            "complete": [httpx.Response(200, json={})],
        }
    )
    calls = iter([True, False])

    def handler(task: Task) -> str:
        if next(calls):
            task.stopped.wait(10)
        return "ok"

    stats = _agent(server, operator_token="op").run(handler, max_tasks=2)
    assert (stats.abandoned, stats.completed) == (1, 1)
    order = [key for _, key, _, _ in server.requests]
    # At max_tasks an agent that can register again leaves (a task assigned since goes back).
    assert order == ["assignment", "heartbeat", "agents", "assignment", "complete", "leave"]
    assert server.sent("complete") == [{"generation": 4, "result": "ok"}]


def test_heartbeats_come_at_a_third_of_the_lease_and_ride_out_an_outage() -> None:
    lease = datetime.now(UTC) + timedelta(seconds=0.6)
    beat = httpx.Response(200, json={"detail": {"lease_expires_at": lease.isoformat()}})
    server = FakeServer(
        {
            "assignment": [httpx.Response(200, json=_assignment(lease_s=0.6))],
            "heartbeat": [httpx.ConnectError("down"), beat],
            "complete": [httpx.Response(200, json={})],
        }
    )
    done = threading.Event()

    def handler(task: Task) -> str:
        done.wait(0.8)
        return "ok"

    stats = _agent(server).run(handler, max_tasks=1)
    assert stats.completed == 1 and len(server.sent("heartbeat")) >= 2


def test_an_unknown_token_registers_again_with_the_operator_token() -> None:
    server = FakeServer(
        {
            "assignment": [
                _error(401, "unauthorized", "this token was replaced"),
                httpx.Response(200, json=_assignment()),
            ],
            "agents": [httpx.Response(201, json={"agent_id": "a1", "token": "new", "position": 9})],
            "complete": [httpx.Response(200, json={})],
        }
    )
    kept: list[str] = []
    agent = _agent(server, operator_token="op", on_token=kept.append)
    agent.run(lambda task: 1, max_tasks=1)
    assert kept == ["new"] and agent.token == "new"
    auth = [(key, who) for _, key, _, who in server.requests]
    assert ("agents", "Bearer op") in auth
    assert auth[-2:] == [("complete", "Bearer new"), ("leave", "Bearer new")]


def test_a_stop_hands_the_task_back_by_leaving_the_fleet() -> None:
    server = FakeServer(
        {
            "assignment": [httpx.Response(200, json=_assignment())],
            "leave": [httpx.Response(200, json={"position": 5})],
        }
    )
    agent = _agent(server, operator_token="op")
    started = threading.Event()

    def handler(task: Task) -> None:
        started.set()
        task.stopped.wait(10)

    thread = threading.Thread(target=agent.run, args=(handler,))
    thread.start()
    assert started.wait(5)
    agent.stop()
    thread.join(5)
    assert not thread.is_alive() and agent.stats.handed_back == 1
    assert [key for _, key, _, _ in server.requests][-1] == "leave"
    assert server.sent("complete") == [] and server.sent("fail") == []


# --- the async agent -----------------------------------------------------------------------


def _async_agent(server: FakeServer, **kw: Any) -> AsyncAgent:
    return AsyncAgent(
        "http://tierlog.test",
        "a1",
        token="agent-token",
        transport=httpx.MockTransport(server),
        backoff=FAST,
        **kw,
    )


def test_the_async_agent_retries_its_result_and_cancels_a_cancelled_coroutine() -> None:
    down = httpx.ConnectError("refused")
    server = FakeServer(
        {
            "assignment": [httpx.Response(200, json=_assignment())],
            "complete": [down, down, httpx.Response(200, json={})],
        }
    )

    async def answer(task: Task) -> dict[str, str]:
        await asyncio.sleep(0)
        return {"tier": str(task.tier)}

    stats = asyncio.run(_async_agent(server).run(answer, max_tasks=1))
    assert server.sent("complete") == [{"generation": 2, "result": {"tier": "standard"}}] * 3
    assert stats.completed == 1

    cancelled = FakeServer(
        {
            "assignment": [httpx.Response(200, json=_assignment(lease_s=0.3))],
            "heartbeat": [_error(409, "stale_generation", "generation 2 is stale")],
        }
    )
    outcome: list[str] = []

    async def forever(task: Task) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    stats = asyncio.run(_async_agent(cancelled).run(forever, max_tasks=1))
    assert stats.abandoned == 1 and cancelled.sent("complete") == []
    assert outcome == ["cancelled"]


def test_the_async_agent_runs_a_plain_function_in_a_thread_and_stops_at_once() -> None:
    server = FakeServer(
        {"assignment": [httpx.Response(204)], "leave": [httpx.Response(200, json={})]}
    )
    agent = _async_agent(server, operator_token="op", poll_wait_s=30)

    async def scenario() -> None:
        job = asyncio.ensure_future(agent.run(lambda task: 1))
        await asyncio.sleep(0.05)
        agent.stop()
        await asyncio.wait_for(job, 5)

    asyncio.run(scenario())
    assert [key for _, key, _, _ in server.requests][-1] == "leave"


# --- the operator -----------------------------------------------------------------------


def test_the_operator_reads_its_own_writes_and_retries_only_what_is_safe() -> None:
    seen: list[tuple[str, str, dict[str, str]]] = []
    answers = {
        ("POST", "/v1/tasks"): [
            httpx.Response(503, json={"error": "storage_unavailable", "message": "full"}),
            httpx.Response(
                201, json={"task_id": TASK_ID, "state": "queued", "created": True, "position": 17}
            ),
        ],
        ("GET", f"/v1/tasks/{TASK_ID}"): [httpx.Response(200, json={"task": {"task_id": TASK_ID}})],
        ("POST", f"/v1/tasks/{TASK_ID}/cancel"): [httpx.Response(503, json={})],
    }

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, dict(request.url.params)))
        queue = answers[(request.method, request.url.path)]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    op = Operator("http://tierlog.test", "op", transport=httpx.MockTransport(answer), backoff=FAST)
    with pytest.raises(ServerUnavailable):
        op.submit("fix typo")  # no idempotency key: a 503 is not sent again
    done = op.submit("fix typo", idempotency_key="k1")
    assert done.task_id == TASK_ID and op.position == 17
    assert op.get(TASK_ID) == {"task_id": TASK_ID}
    assert seen[-1] == ("GET", f"/v1/tasks/{TASK_ID}", {"min_position": "17"})
    with pytest.raises(ServerUnavailable):
        op.cancel(TASK_ID)
    assert [s[:2] for s in seen].count(("POST", f"/v1/tasks/{TASK_ID}/cancel")) == 1
    op.close()


# --- the runner and the views --------------------------------------------------------------


def test_the_runner_reads_output_and_keeps_tokens(tmp_path: Path) -> None:
    assert runner.parse_output(' {"a": 1}\n') == {"a": 1}
    assert runner.parse_output("plain words") == "plain words"
    assert runner.parse_output("\n") is None
    env = runner.task_environment(Task.from_assignment(_assignment()))
    assert env == {
        "TIERLOG_TASK_ID": TASK_ID,
        "TIERLOG_GENERATION": "2",
        "TIERLOG_TIER": "standard",
        "TIERLOG_MODEL": "llama3",
        "TIERLOG_ENDPOINT": "gpu1:11434",
    }
    os.environ["TIERLOG_TOKEN"] = "secret"
    try:
        assert "TIERLOG_TOKEN" not in runner.inherited_environment()
    finally:
        del os.environ["TIERLOG_TOKEN"]
    assert runner.agent_ids("w", 1) == ["w"] and runner.agent_ids("w", 2) == ["w-1", "w-2"]
    bare = tmp_path / "bare"
    bare.write_text("tok\n")
    assert runner.TokenFile(bare).token_for("w-1", first=True) == "tok"
    assert runner.TokenFile(bare).token_for("w-2", first=False) is None
    kept = runner.TokenFile(tmp_path / "tokens")
    kept.keep("w-1", "t1")
    kept.keep("w-2", "t2")
    assert kept.read() == {"w-1": "t1", "w-2": "t2"}
    assert oct((tmp_path / "tokens").stat().st_mode & 0o777) == "0o600"
    assert runner.TokenFile(None).token_for("w", first=True) is None


def test_status_counts_and_event_lines() -> None:
    summary = views.status_summary(
        {"status": "ok", "log_head": 40, "projections": {"tasks": {"position": 38, "lag": 2}}},
        {
            "telemetry": {
                "tasks_by_state_and_tier": {"queued": {"standard": 2}, "completed": {"trivial": 3}},
                "timers": {"started": 4, "fired": 1, "cancelled": {"assigned": 1}},
            }
        },
        [{"status": "idle"}, {"status": "busy"}, {"status": "idle"}],
        [{"endpoint_id": "gpu1:11434", "status": "healthy"}],
    )
    assert summary["queue_by_tier"] == {"standard": 2}
    assert summary["tasks_by_state"] == {"queued": 2, "completed": 3}
    assert summary["agents_by_state"] == {"idle": 2, "busy": 1}
    assert summary["timers_pending"] == 2 and summary["lag"] == {"tasks": 2}
    line = views.event_line(
        {
            "position": 7,
            "timestamp": "2026-12-01T10:00:00.123456+00:00",
            "type": "TaskAssigned",
            "aggregate_id": TASK_ID,
            "payload": {
                "agent_id": "a1",
                "generation": 1,
                "decision": {"effective_tier": "trivial", "target_type": "sidecar"},
            },
        }
    )
    assert line.split() == [
        "7",
        "2026-12-01T10:00:00.123",
        "TaskAssigned",
        TASK_ID[-8:],
        "agent_id=a1",
        "generation=1",
        "tier=trivial",
        "target=sidecar",
    ]


def test_the_ollama_example_compiles_and_answers_a_trivial_task_itself() -> None:
    path = ROOT / "examples" / "ollama_agent.py"
    spec = importlib.util.spec_from_file_location("ollama_agent", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trivial = Task.from_assignment(
        {**_assignment(), "routing_decision": {"effective_tier": "trivial"}}
    )
    assert module.handle(trivial) == {"answer": "done: add tests for the parser"}


def _wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        done.wait(0.01)
    raise AssertionError("timed out")
