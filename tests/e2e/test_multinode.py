"""Several ``tierlog serve`` nodes on one PostgreSQL schema (SPEC §5.3, issue #11).

Real processes on 127.0.0.1, real load spread over every node, the leader kill -9'd
(or paused) mid-load; then the log is folded and checked against what every client was
told. Every check is collected before the test fails, so one run shows all of them,
and one summary line says what happened. Bounded: every wait has a timeout, the whole
of each test stays under about three minutes, and every process is stopped in a
``finally``.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from tests.e2e.cluster import (
    TOKEN,
    Handed,
    Load,
    LogReport,
    check_load,
    fold,
    read_log,
    wait_drained,
)
from tests.event_factories import plain_submission, sidecar_decision
from tierlog.adapters.tools.cluster_nodes import (
    FOLLOWER,
    Node,
    leader_of,
    start_nodes,
    stop_nodes,
    tierlog_exe,
    wait_caught_up,
    wait_for_leader,
)
from tierlog.domain import events as ev

ENV = {"TIERLOG_ADMIN_TOKEN": TOKEN, "TIERLOG_FALLBACK_WAIT_S": "1"}
FAILOVER_LIMIT_S = 5.0
LOAD_BETWEEN_KILLS_S = 8.0
DRAIN_S = 45.0


@dataclass
class Failover:
    """One leader death (or pause) and what followed."""

    victim: str
    at: float  # wall clock (the nodes' event timestamps use the same clock)
    healthz_s: float | None = None  # until a survivor's /healthz said leader
    new_leader: str | None = None
    election_s: float | None = None  # until the new leader's SchedulerLeaderElected
    elected: str | None = None

    def describe(self) -> str:
        def fmt(s: float | None) -> str:
            return "none" if s is None else f"{s:.2f}s"

        return (
            f"{self.victim} down: healthz leader {self.new_leader} after "
            f"{fmt(self.healthz_s)}, SchedulerLeaderElected ({self.elected}) after "
            f"{fmt(self.election_s)}"
        )


def _after_election(failover: Failover, report: LogReport) -> None:
    later = [e for e in report.elections if e.timestamp.timestamp() > failover.at]
    if later:
        failover.election_s = later[0].timestamp.timestamp() - failover.at
        failover.elected = f"{later[0].node_id} epoch {later[0].epoch}"


def _audit(store: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tierlog_exe(), "audit", "--store", store], capture_output=True, text=True, timeout=120
    )


def _restart(node: Node, problems: list[str]) -> None:
    """Start a killed node again (same name, port and log); a node that cannot start is
    a finding, and the run goes on with the others (the clients skip a dead URL)."""
    node.start()
    try:
        node.wait_ready()
    except RuntimeError as exc:
        problems.append(f"restart of {node.name}: {str(exc)[-600:]}")


def _failover_problems(failovers: list[Failover]) -> list[str]:
    problems = []
    for f in failovers:
        if f.healthz_s is None or f.healthz_s >= FAILOVER_LIMIT_S:
            problems.append(f"no surviving node said leader within 5 s: {f.describe()}")
        if f.election_s is None or f.election_s >= FAILOVER_LIMIT_S:
            problems.append(f"no SchedulerLeaderElected within 5 s: {f.describe()}")
    return problems


def _common_checks(store: str, load: Load, report: LogReport, drained: bool) -> list[str]:
    problems = list(report.problems) + check_load(report, load)
    if not drained:
        problems.append("not every acknowledged task completed within the drain time")
    if load.unexpected:
        problems.append(f"{len(load.unexpected)} unexpected answers, e.g. {load.unexpected[:3]}")
    if len(load.acknowledged) < 50:
        problems.append(f"the load made little progress: {len(load.acknowledged)} tasks")
    audit = _audit(store)
    if audit.returncode != 0:
        problems.append(f"audit exit {audit.returncode}: {(audit.stdout + audit.stderr)[-800:]}")
    return problems


def _summary(load: Load, report: LogReport, failovers: list[Failover]) -> str:
    stale = sum(1 for h in load.handed if h.stale)
    return (
        f"multinode: {len(load.acknowledged)} acknowledged tasks ({report.submitted} in the "
        f"log), {sum(report.completions.values())} completions, {len(load.handed)} "
        f"assignments seen ({stale} re-handed after their completion), timers "
        f"{report.timers_started} started / {report.timers_fired} fired / "
        f"{report.timers_cancelled} cancelled, {len(report.elections)} elections, "
        f"{len(load.unexpected)} unexpected answers, {load.gave_up} requests given up; "
        + "; ".join(f.describe() for f in failovers)
    )


@pytest.mark.slow
@pytest.mark.postgres
def test_three_nodes_lose_their_leader_twice_under_load(pg_url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    nodes = start_nodes(pg_url, 3, tmp_path, ENV)
    load = Load([node.url for node in nodes])
    marks: list[str] = []

    def mark(what: str) -> None:
        marks.append(f"{what} {time.monotonic() - started:.1f}s")

    mark("started")
    failovers: list[Failover] = []
    problems: list[str] = []
    drained = False
    try:
        if wait_for_leader(nodes, 15.0) is None:
            problems.append("no node says it leads (no role in /healthz, or no election)")
        position = load.register_agents(34)
        mark("registered")
        if not wait_caught_up(nodes, position, 15.0):
            problems.append(f"not every node reached position {position} of the registrations")
        mark("caught up")
        # 34 agents, 12 submitters, 2 endpoint flappers, 2 readers: 50 clients.
        load.start(submitters=12, flappers=2, readers=2, pause_s=0.3)
        for _ in range(2):
            time.sleep(LOAD_BETWEEN_KILLS_S)
            victim = leader_of(nodes) or next(n for n in nodes if n.alive)
            failover = Failover(victim.name, time.time())
            mark(f"kill {victim.name}")
            victim.kill()
            found = wait_for_leader([n for n in nodes if n is not victim], 15.0)
            if found is not None:
                failover.new_leader, failover.healthz_s = found[0].name, found[1]
            failovers.append(failover)
            _restart(victim, problems)
            mark(f"restarted {victim.name}")
        time.sleep(4.0)
        load.stop_submitting.set()
        mark("submitters stopped")
        drained = wait_drained(pg_url, load, DRAIN_S)
        mark("drained")
    finally:
        load.finish()
        stop_nodes(nodes)
    report = read_log(pg_url)
    for failover in failovers:
        _after_election(failover, report)
    problems += _failover_problems(failovers)
    problems += _common_checks(pg_url, load, report, drained)
    mark("checked")
    print(_summary(load, report, failovers) + "; " + ", ".join(marks))
    assert not problems, "\n".join(problems[:40])


def _wait_deposed(node: Node, epoch: int | None, timeout_s: float) -> float | None:
    """Seconds until ``node`` says follower under ``epoch`` (or later), or None."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        status = node.node_status()
        if status is not None and status.get("role") == FOLLOWER:
            seen = status.get("epoch")
            if epoch is None or seen is None or seen >= epoch:
                return time.monotonic() - started
        time.sleep(0.05)
    return None


@pytest.mark.slow
@pytest.mark.postgres
def test_a_paused_leader_is_deposed_and_commits_nothing(pg_url: str, tmp_path: Path) -> None:
    """SIGSTOP the leader past its lease (the other node takes over), SIGCONT it, keep
    the load on both throughout. What a test can observe (events carry no node id):
    the old node turns follower; the new leader's SchedulerLeaderElected lies inside the
    pause with a higher epoch; no event after an election was decided before it (a batch
    the old leader decided before the pause and appended after would be); and every
    invariant of the kill test holds, including for what the old node acknowledged
    after it woke."""
    started = time.monotonic()
    nodes = start_nodes(pg_url, 2, tmp_path, ENV)
    load = Load([node.url for node in nodes])
    problems: list[str] = []
    drained = False
    deposed_s: float | None = None
    old = nodes[0]
    pause = Failover(old.name, 0.0)
    fenced: object = None
    try:
        elected = wait_for_leader(nodes, 15.0)
        old = elected[0] if elected is not None else nodes[0]
        other = next(node for node in nodes if node is not old)
        old_epoch = (old.node_status() or {}).get("epoch")
        position = load.register_agents(8)
        wait_caught_up(nodes, position, 15.0)
        load.start(submitters=4, flappers=1, readers=1, pause_s=0.1)
        time.sleep(3.0)
        pause = Failover(old.name, time.time())
        old.signal(signal.SIGSTOP)
        found = wait_for_leader([other], 7.5)
        if found is not None:
            pause.new_leader, pause.healthz_s = found[0].name, found[1]
        time.sleep(max(0.0, 8.0 - (time.time() - pause.at)))
        new_epoch = (other.node_status() or {}).get("epoch")
        resumed_at = time.time()
        old.signal(signal.SIGCONT)
        deposed_s = _wait_deposed(old, new_epoch, 10.0)
        fenced = (old.node_status() or {}).get("fenced")
        time.sleep(3.0)  # the old node serves (as a follower) under load
        load.stop_submitting.set()
        drained = wait_drained(pg_url, load, DRAIN_S)
    finally:
        load.finish()
        stop_nodes(nodes)
    report = read_log(pg_url)
    _after_election(pause, report)
    problems += _failover_problems([pause])
    if deposed_s is None:
        problems.append(f"{old.name} did not say follower within 10 s of SIGCONT")
    new = [e for e in report.elections if pause.at < e.timestamp.timestamp() < resumed_at]
    if not new or new[0].node_id == old.name:
        problems.append(f"no election of another node during the pause: {report.elections}")
    elif old_epoch is not None and new[0].epoch <= old_epoch:
        problems.append(f"the new epoch {new[0].epoch} is not above the old {old_epoch}")
    problems += _common_checks(pg_url, load, report, drained)
    print(
        _summary(load, report, [pause])
        + f"; {old.name} follower {deposed_s and round(deposed_s, 2)}s after SIGCONT, "
        + f"fenced appends {fenced}; "
        + f"{time.monotonic() - started:.0f}s in all"
    )
    assert not problems, "\n".join(problems[:40])


@dataclass
class SchedulerLeaderElected:
    """Stands in for the event (matched by name) in releases that lack it."""

    originator_id: UUID
    timestamp: datetime
    node_id: str
    epoch: int


def _at(seconds: float) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


def _assigned(task: UUID, generation: int, seconds: float) -> ev.TaskAssigned:
    return ev.TaskAssigned(
        originator_id=task,
        originator_version=2,
        timestamp=_at(seconds),
        agent_id="a",
        generation=generation,
        decision=sidecar_decision(_at(seconds)),
        lease_expires_at=_at(seconds + 300),
    )


def _timer(kind: str, task: UUID, seconds: float) -> Any:
    fields: dict[str, Any] = {
        "originator_id": uuid4(),
        "originator_version": 1,
        "timestamp": _at(seconds),
        "task_id": task,
        "original_tier": "standard",
        "fallback_tier": "complex",
        "reason": "no_healthy_ollama_endpoints",
    }
    if kind == "started":
        return ev.FallbackTimerStarted(**fields, fires_at=_at(seconds + 1))
    return ev.FallbackTimerFired(**fields, wait_ms=1000)


def _fold_all(*events: Any) -> LogReport:
    report = LogReport()
    states: dict[str, str] = {}
    pending: set[str] = set()
    for position, event in enumerate(events, start=1):
        fold(report, states, pending, position, event)
    return report


def test_the_log_checks_find_what_they_look_for() -> None:
    """The checks the multi-node tests rely on flag crafted violations, and only those."""
    task = uuid4()
    clean = _fold_all(
        plain_submission(task, 1, _at(0)),
        _timer("started", task, 1),
        _timer("fired", task, 2),
        _assigned(task, 1, 2),
        SchedulerLeaderElected(uuid4(), _at(3), "n2", 2),
        ev.TaskCompleted(
            originator_id=task,
            originator_version=3,
            timestamp=_at(4),
            agent_id="a",
            generation=1,
            result=None,
        ),
    )
    assert clean.problems == [] and clean.completions[str(task)] == 1
    assert [(e.node_id, e.epoch) for e in clean.elections] == [("n2", 2)]

    late_timer = _fold_all(
        plain_submission(task, 1, _at(0)), _assigned(task, 1, 1), _timer("started", task, 2)
    )
    assert any("timer started" in p for p in late_timer.problems)
    fired_unstarted = _fold_all(plain_submission(task, 1, _at(0)), _timer("fired", task, 1))
    assert any("timer fired" in p for p in fired_unstarted.problems)
    twice = _fold_all(
        plain_submission(task, 1, _at(0)), _assigned(task, 1, 1), _assigned(task, 1, 2)
    )
    assert any("assigned twice" in p for p in twice.problems)
    stale = _fold_all(
        SchedulerLeaderElected(uuid4(), _at(5), "n1", 1),
        SchedulerLeaderElected(uuid4(), _at(9), "n2", 2),
        plain_submission(task, 1, _at(6)),  # decided before the election it follows
        SchedulerLeaderElected(uuid4(), _at(10), "n3", 2),  # epoch not above
    )
    assert any("before the election" in p for p in stale.problems)
    assert any("epoch 2 after epoch 2" in p for p in stale.problems)

    load = Load([])
    load.acknowledged = {str(task): "k", str(uuid4()): "k2"}
    load.handed = [Handed("b", str(task), 1, "n1", stale=False)]
    found = check_load(clean, load)
    assert len(found) == 2, found  # one never completed; one handed to the wrong agent
