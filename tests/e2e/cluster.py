"""The multi-node tests' load and log checks (nodes themselves: adapters/tools/cluster_nodes.py).

``Load`` runs client threads spread over every node: agents that long-poll, heartbeat
and complete; submitters; endpoint flappers that make fallback timers start and fire;
readers. Every client retries on connection errors and 503 (on the next node, after
``Retry-After``) and records only what a node acknowledged. ``check_log`` folds the log
in order and lists every broken rule.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import events as ev

TOKEN = "operator-secret-token"
ENDPOINT_MODELS = ["llama3"]
RETRY_AFTER_CAP_S = 1.0


@dataclass
class Handed:
    """An assignment a long-poll answered: who got which task at which generation."""

    agent_id: str
    task_id: str
    generation: int
    node: str
    stale: bool  # the agent's completion of it had already been acknowledged


class Load:
    """Client threads over every node's URL; what the nodes acknowledged."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.stop_submitting = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acknowledged: dict[str, str] = {}  # task id -> idempotency key (answered 2xx)
        self.completed: set[tuple[str, int]] = set()  # (task, generation) answered 200
        self.handed: list[Handed] = []
        self.unexpected: list[str] = []
        self.gave_up = 0
        self.tokens: dict[str, str] = {}
        self.threads: list[threading.Thread] = []

    # --- one request, retried over the nodes -------------------------------------------

    def call(
        self,
        http: httpx.Client,
        home: int,
        method: str,
        path: str,
        *,
        give_up: threading.Event | None = None,
        deadline_s: float = 30.0,
        **kwargs: Any,
    ) -> tuple[httpx.Response, str] | None:
        """The first answer that is neither a connection error nor a 503 (and the URL
        that gave it), or None when ``give_up`` is set or ``deadline_s`` passes."""
        give_up = give_up or self.stop
        deadline = time.monotonic() + deadline_s
        for attempt in itertools.count():
            if give_up.is_set() or time.monotonic() > deadline:
                with self.lock:
                    self.gave_up += 1
                return None
            url = self.urls[(home + attempt) % len(self.urls)]
            try:
                answer = http.request(method, url + path, **kwargs)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            if answer.status_code == 503:
                retry_after = float(answer.headers.get("Retry-After", "0.2") or 0.2)
                time.sleep(min(RETRY_AFTER_CAP_S, max(0.05, retry_after)))
                continue
            return answer, url
        return None  # unreachable: the loop returns

    def note(self, text: str) -> None:
        """An answer no client expected."""
        with self.lock:
            self.unexpected.append(text)

    # --- the clients --------------------------------------------------------------------

    def register_agents(self, count: int) -> int:
        """Register ``count`` agents (round robin over the nodes); the last position."""
        position = 0
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as http:
            for i in range(count):
                got = self.call(http, i, "POST", "/v1/agents", json={"agent_id": f"agent-{i}"})
                assert got is not None and got[0].status_code == 201, got and got[0].text
                body = got[0].json()
                self.tokens[f"agent-{i}"] = body["token"]
                position = max(position, int(body["position"]))
        return position

    def agent(self, index: int, agent_id: str) -> None:
        """Long-poll, heartbeat once, complete; until ``stop``."""
        token = self.tokens[agent_id]
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=8) as http:
            while not self.stop.is_set():
                got = self.call(
                    http, index, "GET", f"/v1/agents/{agent_id}/assignment", params={"wait": 2}
                )
                if got is None or got[0].status_code == 204:
                    continue
                answer, url = got
                if answer.status_code != 200:
                    self.note(f"poll {agent_id} at {url}: {answer.status_code} {answer.text}")
                    time.sleep(0.2)
                    continue
                task = answer.json()
                key = (task["task_id"], int(task["generation"]))
                with self.lock:
                    self.handed.append(
                        Handed(agent_id, key[0], key[1], url, stale=key in self.completed)
                    )
                self._finish(http, index, agent_id, task, key)

    def _finish(
        self,
        http: httpx.Client,
        index: int,
        agent_id: str,
        task: dict[str, Any],
        key: tuple[str, int],
    ) -> None:
        beat = {"task_id": task["task_id"], "generation": task["generation"]}
        got = self.call(http, index, "POST", f"/v1/agents/{agent_id}/heartbeat", json=beat)
        if got is not None and got[0].status_code not in (200, 409):
            self.note(f"heartbeat {got[0].status_code}: {got[0].text}")
        done = {"generation": task["generation"], "result": {"ok": True}}
        got = self.call(http, index, "POST", f"/v1/tasks/{task['task_id']}/complete", json=done)
        if got is None:
            return
        if got[0].status_code == 200:
            with self.lock:
                self.completed.add(key)
        elif got[0].status_code != 409:  # 409: applied before a lost answer, or stale
            self.note(f"complete {got[0].status_code}: {got[0].text}")

    def submitter(self, index: int, pause_s: float) -> None:
        """Submit a mix of tiers (standard ones need an endpoint), each with an
        idempotency key so a retry after a lost answer is the same task."""
        tiers = ["standard", "trivial", "standard", "complex", "trivial"]
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5) as http:
            for n in itertools.count():
                if self.stop_submitting.is_set():
                    return
                key = f"s{index}-{n}-{uuid.uuid4().hex[:6]}"
                body = {"description": f"task {key}", "complexity_tier": tiers[n % len(tiers)]}
                got = self.call(
                    http,
                    index,
                    "POST",
                    "/v1/tasks",
                    json=body,
                    headers={"Idempotency-Key": key},
                    give_up=self.stop_submitting,
                )
                if got is not None and got[0].status_code in (200, 201):
                    with self.lock:
                        self.acknowledged[got[0].json()["task_id"]] = key
                elif got is not None:
                    self.note(f"submit {got[0].status_code}: {got[0].text}")
                time.sleep(pause_s)

    def flapper(self, index: int, port: int, healthy_s: float, unhealthy_s: float) -> None:
        """An endpoint healthy for ``healthy_s``, then unhealthy (two failed checks) for
        ``unhealthy_s``, and so on: while every endpoint is down, standard tasks start
        fallback timers, which fire or are cancelled when one recovers."""
        endpoint = f"127.0.0.1:{port}"
        body = {"host": "127.0.0.1", "port": port, "models": ENDPOINT_MODELS}
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5) as http:
            self._expect(http, index, "PUT", f"/v1/endpoints/{endpoint}", body)
            while not self.stop_submitting.is_set():
                self._expect(http, index, "POST", f"/v1/endpoints/{endpoint}/health", {"ok": True})
                self.stop_submitting.wait(healthy_s)
                for _ in range(2):
                    self._expect(
                        http, index, "POST", f"/v1/endpoints/{endpoint}/health", {"ok": False}
                    )
                self.stop_submitting.wait(unhealthy_s)
            # Healthy at the end, so what still waits for the tier can drain.
            self._expect(http, index, "POST", f"/v1/endpoints/{endpoint}/health", {"ok": True})

    def _expect(self, http: httpx.Client, index: int, method: str, path: str, body: Any) -> None:
        got = self.call(http, index, method, path, json=body)
        if got is not None and got[0].status_code != 200:
            self.note(f"{method} {path} {got[0].status_code}: {got[0].text}")

    def reader(self, index: int) -> None:
        """An operator's dashboard: the queue and telemetry, twice a second."""
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5) as http:
            for n in itertools.count():
                if self.stop.is_set():
                    return
                path = "/v1/queue" if n % 2 else "/v1/telemetry"
                got = self.call(http, index + n, "GET", path)
                if got is not None and got[0].status_code != 200:
                    self.note(f"read {path} {got[0].status_code}: {got[0].text}")
                time.sleep(0.5)

    def start(self, *, submitters: int, flappers: int, readers: int, pause_s: float) -> None:
        """Start every client thread (the agents already registered)."""
        targets: list[tuple[Any, tuple[Any, ...]]] = []
        targets += [(self.agent, (i, a)) for i, a in enumerate(self.tokens)]
        targets += [(self.submitter, (i, pause_s)) for i in range(submitters)]
        periods = [(2.0, 3.0), (2.5, 2.5), (3.0, 2.0)]
        targets += [(self.flapper, (i, 11434 + i, *periods[i % 3])) for i in range(flappers)]
        targets += [(self.reader, (i,)) for i in range(readers)]
        for target, args in targets:
            thread = threading.Thread(target=target, args=args, daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self, timeout_s: float = 20.0) -> None:
        """Stop every client and wait for it (bounded)."""
        self.stop_submitting.set()
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))


# --- what the log says ------------------------------------------------------------------

RETURNING = "returning"  # failed or reclaimed: requeued or dead-lettered next


@dataclass
class Election:
    """A ``SchedulerLeaderElected`` event."""

    position: int
    node_id: str
    epoch: int
    timestamp: datetime


@dataclass
class LogReport:
    """The log folded in order: counts, elections, and every broken rule."""

    events: int = 0
    head: int = 0
    submitted: int = 0
    completions: Counter[str] = field(default_factory=Counter)
    assigned: dict[tuple[str, int], str] = field(default_factory=dict)
    timers_started: int = 0
    timers_fired: int = 0
    timers_cancelled: int = 0
    elections: list[Election] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        """A broken rule (the first 200 are kept)."""
        if len(self.problems) < 200:
            self.problems.append(text)


_STATE_AFTER: dict[type[ev.DomainEvent], str] = {
    ev.TaskSubmitted: "queued",
    ev.TaskAssigned: "assigned",
    ev.TaskCompleted: "completed",
    ev.TaskFailed: RETURNING,
    ev.TaskReclaimed: RETURNING,
    ev.TaskRequeued: "queued",
    ev.TaskRetried: "queued",
    ev.TaskDeadLettered: "dead_lettered",
    ev.TaskCancelled: "cancelled",
}


def read_log(store: str) -> LogReport:
    """Fold the log (opened read-only) and check what holds event by event: each
    (task, generation) assigned once; a timer starts only for a queued task without a
    pending one and fires only for a queued task with one; election epochs go up; and
    no event after an election was decided before it (its timestamp earlier than the
    election's: a batch a deposed leader decided, appended after it lost the lease)."""
    report = LogReport()
    states: dict[str, str] = {}
    pending: set[str] = set()
    log = EventLog(store, read_only=True)
    try:
        for position, event in log.iter_events():
            report.events += 1
            report.head = position
            fold(report, states, pending, position, event)
    finally:
        log.close()
    return report


def fold(
    report: LogReport, states: dict[str, str], pending: set[str], position: int, e: Any
) -> None:
    """Check one event against the log so far (see ``read_log``), then fold it in."""
    task = str(e.originator_id)
    last = report.elections[-1] if report.elections else None
    if last is not None and e.timestamp < last.timestamp:
        report.problem(
            f"{position} {type(e).__name__} decided at {e.timestamp.isoformat()}, before the "
            f"election at {last.position} (epoch {last.epoch}, {last.timestamp.isoformat()})"
        )
    # By name: the event exists only in releases with leader election.
    if type(e).__name__ == "SchedulerLeaderElected":
        if last is not None and e.epoch <= last.epoch:
            report.problem(f"{position}: epoch {e.epoch} after epoch {last.epoch}")
        report.elections.append(Election(position, e.node_id, e.epoch, e.timestamp))
    elif isinstance(e, ev.TaskSubmitted):
        report.submitted += 1
    elif isinstance(e, ev.TaskAssigned):
        key = (task, e.generation)
        if key in report.assigned:
            report.problem(f"{position}: {task} generation {e.generation} assigned twice")
        report.assigned[key] = e.agent_id
    elif isinstance(e, ev.TaskCompleted):
        report.completions[task] += 1
    elif isinstance(e, ev.FallbackTimerStarted):
        report.timers_started += 1
        timer_task = str(e.task_id)
        if states.get(timer_task) != "queued" or timer_task in pending:
            report.problem(
                f"{position}: timer started for {timer_task} "
                f"({states.get(timer_task)}, pending={timer_task in pending})"
            )
        pending.add(timer_task)
    elif isinstance(e, ev.FallbackTimerFired):
        report.timers_fired += 1
        timer_task = str(e.task_id)
        if states.get(timer_task) != "queued" or timer_task not in pending:
            report.problem(
                f"{position}: timer fired for {timer_task} "
                f"({states.get(timer_task)}, pending={timer_task in pending})"
            )
        pending.discard(timer_task)
    elif isinstance(e, ev.FallbackTimerCancelled):
        report.timers_cancelled += 1
        pending.discard(str(e.task_id))
    state = _STATE_AFTER.get(type(e))
    if state is not None:
        states[task] = state


def check_load(report: LogReport, load: Load) -> list[str]:
    """What the clients were told against the log: every acknowledged task completed
    exactly once, every assignment a poll handed out is in the log for that agent at
    that generation."""
    problems = []
    for task_id in load.acknowledged:
        if report.completions[task_id] != 1:
            problems.append(
                f"acknowledged task {task_id} completed {report.completions[task_id]} times"
            )
    for task_id, count in report.completions.items():
        if count > 1 and task_id not in load.acknowledged:
            problems.append(f"task {task_id} completed {count} times")
    for handed in load.handed:
        logged = report.assigned.get((handed.task_id, handed.generation))
        if logged != handed.agent_id:
            problems.append(
                f"{handed.node} handed {handed.task_id} generation {handed.generation} to "
                f"{handed.agent_id}; the log assigned it to {logged}"
            )
    return problems


def wait_drained(store: str, load: Load, timeout_s: float) -> bool:
    """Wait until the log holds a completion of every acknowledged task."""
    deadline = time.monotonic() + timeout_s
    done: set[str] = set()
    after = 0
    while time.monotonic() < deadline:
        log = EventLog(store, read_only=True)
        try:
            for position, event in log.iter_events(after=after):
                after = position
                if isinstance(event, ev.TaskCompleted):
                    done.add(str(event.originator_id))
        finally:
            log.close()
        with load.lock:
            if set(load.acknowledged) <= done:
                return True
        time.sleep(1.0)
    return False
