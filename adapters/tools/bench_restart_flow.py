"""The load of ``tierlog bench --restart``: the fleet's task mix, and the flow that drives
tasks through a running ``serve`` over HTTP (127.0.0.1 only), as agents and an operator
would, with a steady number of tasks live.

aiohttp, not httpx, is the client here: with httpx the bench process spent more CPU
than the server it measured (2 cores, shared), and flowed a third as many tasks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from tierlog.adapters.tools.bench_http import session
from tierlog.domain import commands as cmd

CAPABILITIES = ("python", "git", "docs")
FLOW_AGENTS = 48
SUBMITTERS = 16

_KINDS: tuple[tuple[str, cmd.RequestedTier | None], ...] = (
    ("fix typo in README", None),
    ("add tests for the parser module and document the edge cases", "standard"),
    ("refactor the storage layer", None),
    ("bump version to 2.{n}", None),
    ("write unit tests for the invoice parser found in ticket {n}", None),
    ("rename helper {n}", "trivial"),
    ("security review of the auth flow", "complex"),
)
FAIL_EVERY = 25  # one finished task in so many fails (and is requeued, with backoff)
KEY_EVERY = 10  # one submission in so many carries an idempotency key
REPEAT_KEY_EVERY = 200  # and one in so many repeats an earlier key (appends nothing)

Progress = Callable[[str], None]


def _priority(n: int) -> cmd.Priority:
    return "urgent" if n % 37 == 0 else "high" if n % 8 == 0 else "normal"


def task_body(n: int, *, trivial: bool = False) -> dict[str, Any]:
    """The fields of the ``n``-th submission: every tier, a few priorities."""
    description, tier = _KINDS[0 if trivial else n % len(_KINDS)]
    body: dict[str, Any] = {
        "description": description.format(n=n),
        "priority": _priority(n),
        "repo": f"acme/repo-{n % 7}",
        "submitted_by": "bench-restart",
    }
    if tier is not None:
        body["complexity_tier"] = tier
    if n % 3 == 0:
        body["needed_capabilities"] = [CAPABILITIES[n % len(CAPABILITIES)]]
    return body


# --- the flow ------------------------------------------------------------------------


@dataclass
class _Flow:
    """The flow's counts, shared by its coroutines (one event loop: no locks)."""

    target: int
    live: int
    outstanding: int
    submitted: int = 0
    submit_errors: int = 0
    completed: int = 0
    flow_done: int = 0
    failed: int = 0
    refused: int = 0
    poll_errors: int = 0
    repeats_answered_200: int = 0
    flow_ids: set[str] = field(default_factory=set)
    done_early: set[str] = field(default_factory=set)
    failed_ids: set[str] = field(default_factory=set)
    room: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def check(self) -> None:
        """Finished once every submission was answered and every flow task completed."""
        if self.submitted + self.submit_errors >= self.target and self.flow_done >= self.submitted:
            self.finished.set()

    def done(self, task_id: str) -> None:
        """A task completed: one place more in the live set."""
        self.completed += 1
        self.outstanding -= 1
        self.room.set()
        if task_id in self.flow_ids:
            self.flow_done += 1
        else:  # a task of the log's live set, or one whose submission is still answering
            self.done_early.add(task_id)
        self.check()


async def _call(
    http: Any, method: str, path: str, token: str | None = None, **kwargs: Any
) -> tuple[int, Any]:
    """One request (as the agent holding ``token``, else the operator): status and body."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))
    async with http.request(method, path, headers=headers, **kwargs) as answer:
        body = await answer.json() if answer.content_type == "application/json" else None
        return int(answer.status), body


async def _agent(http: Any, flow: _Flow, agent_id: str, token: str) -> None:
    """Poll for work, finish it (one task in so many fails once), until the flow ends."""
    while not flow.finished.is_set():
        status, task = await _call(
            http, "GET", f"/v1/agents/{agent_id}/assignment", token, params={"wait": 2}
        )
        if status == 204:
            continue
        if status != 200:
            flow.poll_errors += 1
            await asyncio.sleep(0.05)
            continue
        task_id, generation = task["task_id"], task["generation"]
        fail = task_id not in flow.failed_ids and UUID(task_id).int % FAIL_EVERY == 0
        verb, body = ("fail", {"error": "tests failed"}) if fail else ("complete", {})
        status, _ = await _call(
            http,
            "POST",
            f"/v1/tasks/{task_id}/{verb}",
            token,
            json={"generation": generation, **body},
        )
        if status != 200:
            flow.refused += 1  # reclaimed or cancelled meanwhile: a stale generation
        elif fail:
            flow.failed += 1
            flow.failed_ids.add(task_id)
        else:
            flow.done(task_id)


async def _submitter(http: Any, flow: _Flow, numbers: Any) -> None:
    """Submit the flow's tasks while fewer than ``flow.live`` are live."""
    for n in numbers:
        while flow.outstanding >= flow.live:
            flow.room.clear()
            await flow.room.wait()
        flow.outstanding += 1
        keyed = n % KEY_EVERY == 0
        headers = {"Idempotency-Key": f"flow-{n}"} if keyed else {}
        body = task_body(n)
        status, created = await _call(http, "POST", "/v1/tasks", json=body, headers=headers)
        if status != 201:
            flow.submit_errors += 1
            flow.outstanding -= 1
            flow.check()
            continue
        task_id = created["task_id"]
        flow.flow_ids.add(task_id)
        flow.submitted += 1
        if task_id in flow.done_early:
            flow.done_early.discard(task_id)
            flow.flow_done += 1
            flow.check()
        if keyed and n % REPEAT_KEY_EVERY == 0:  # the same key again: the same task
            status, _ = await _call(http, "POST", "/v1/tasks", json=body, headers=headers)
            flow.repeats_answered_200 += status == 200


async def _sample_rss(
    rss_mb: Callable[[], float], flow: _Flow, samples: list[float], say: Progress
) -> None:
    """Sample the server's memory four times a second; say how far the flow is."""
    step = max(1, flow.target // 10)
    next_report = step
    while not flow.finished.is_set():
        samples.append(rss_mb())
        if flow.flow_done >= next_report:
            say(f"flow: {flow.flow_done:,} of {flow.target:,} tasks, RSS {samples[-1]:.1f} MB")
            next_report += step
        await asyncio.sleep(0.25)


def _live_of(telemetry: dict[str, Any]) -> int:
    by_state = telemetry["telemetry"]["tasks_by_state_and_tier"]
    return sum(sum(by_state.get(state, {}).values()) for state in ("queued", "assigned"))


async def flow_tasks(
    url: str,
    rss_mb: Callable[[], float],
    tasks: int,
    live: int,
    agents: int,
    timeout_s: float,
    submitters: int = SUBMITTERS,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Drive ``tasks`` tasks through the running server with ``agents`` polling agents
    and about ``live`` tasks live, sampling its memory; the agents of the log leave
    first (their tasks are reclaimed), as when a fleet comes back after a restart."""
    async with session(url, agents + submitters + 4) as http:
        _, listed = await _call(http, "GET", "/v1/agents")
        for agent in listed["agents"]:
            if agent["status"] != "deregistered":
                await _call(http, "DELETE", f"/v1/agents/{agent['agent_id']}")
        tokens: dict[str, str] = {}
        for n in range(agents):
            body = {"agent_id": f"flow-agent-{n}", "capabilities": list(CAPABILITIES)}
            status, registered = await _call(http, "POST", "/v1/agents", json=body)
            if status != 201:
                raise RuntimeError(f"registering an agent answered {status}: {registered}")
            tokens[registered["agent_id"]] = registered["token"]
        initial = _live_of((await _call(http, "GET", "/v1/telemetry"))[1])
        flow = _Flow(target=tasks, live=live, outstanding=initial)
        samples: list[float] = []
        numbers = iter(range(tasks))
        started = time.perf_counter()
        workers = [
            *(asyncio.create_task(_agent(http, flow, a, t)) for a, t in tokens.items()),
            *(asyncio.create_task(_submitter(http, flow, numbers)) for _ in range(submitters)),
            asyncio.create_task(_sample_rss(rss_mb, flow, samples, progress or (lambda _: None))),
        ]
        flow.check()
        try:
            await asyncio.wait_for(flow.finished.wait(), timeout_s)
        except TimeoutError:
            raise RuntimeError(
                f"the flow did not finish within {timeout_s:g} s: {flow.flow_done} of "
                f"{tasks} tasks completed"
            ) from None
        finally:
            elapsed = time.perf_counter() - started
            flow.finished.set()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    return {
        "flow_tasks": tasks,
        "flow_agents": agents,
        "flow_live_at_start": initial,
        "flow_s": round(elapsed, 2),
        "flow_tasks_per_s": round(flow.flow_done / elapsed, 1),
        "flow_completed": flow.flow_done,
        "flow_all_completed": flow.flow_done == tasks,
        "flow_completions_total": flow.completed,
        "flow_failures": flow.failed,
        "flow_refused_finishes": flow.refused,
        "flow_submit_errors": flow.submit_errors,
        "flow_poll_errors": flow.poll_errors,
        "flow_repeated_keys_answered_200": flow.repeats_answered_200,
        "rss_samples": len(samples),
        "rss_peak_mb": round(max(samples, default=0.0), 1),
    }
