"""``tierlog bench --restart``: how fast ``serve`` comes back on a large log, how much
memory it holds once up, and how much that grows while work flows through it.

The log is generated in process (a fleet with a steady live set: failures and requeues,
idempotency keys), then a real ``tierlog serve`` is started once on it so its read
models (and whatever else it keeps beside the log) exist, and stopped. The measured
restarts start it again and poll ``/healthz`` until every read model's lag is 0; its
resident memory is ``VmRSS`` of its process. Then agents and a submitter drive tasks
through its HTTP API on 127.0.0.1 while its memory is sampled. Every phase is bounded
in time and the server is always stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from uuid import UUID

import httpx

from tierlog.adapters import bootstrap
from tierlog.adapters.settings import Settings
from tierlog.adapters.tools.bench_http import ADMIN, free_port
from tierlog.adapters.tools.bench_restart_flow import (
    CAPABILITIES,
    FAIL_EVERY,
    FLOW_AGENTS,
    KEY_EVERY,
    REPEAT_KEY_EVERY,
    flow_tasks,
    task_body,
)
from tierlog.domain import commands as cmd
from tierlog.domain.errors import TierlogError, ValidationError
from tierlog.domain.service import SubmitResult

LOG_NAME = "restart.db"
MARKER = "bench-restart.json"
"""Beside a kept log: what it was generated with, so a later run can reuse it."""
GEN_AGENTS = 32
_ENDPOINTS = ("gpu-a", "gpu-b", "gpu-c")
_READY_POLL_S = 0.01

Progress = Callable[[str], None]


# --- the log -------------------------------------------------------------------------


@dataclass
class _Fleet:
    """What the generator knows of its fleet: the live task ids and the counts."""

    live: set[UUID] = field(default_factory=set)
    submitted: int = 0
    created: int = 0
    completed: int = 0
    failed: int = 0
    dead_lettered: int = 0
    rejected: int = 0


def _submission(n: int, trivial: bool) -> cmd.SubmitTask:
    key: str | None = None
    if n % REPEAT_KEY_EVERY == 0 and n >= REPEAT_KEY_EVERY and not trivial:
        # A request sent before, resent as it was (key and body): no new task. Not in
        # the trivial tail, whose bodies differ from the ones sent before it.
        n = n - REPEAT_KEY_EVERY + KEY_EVERY
        key = f"gen-{n}"
    elif n % KEY_EVERY == 0:
        key = f"gen-{n}"
    return cmd.SubmitTask(**task_body(n, trivial=trivial), idempotency_key=key)


def _round(runtime: Any, fleet: _Fleet, target_live: int, trivial: bool) -> None:
    """One group commit: every busy agent finishes (a few fail), and new submissions
    bring the live set back to ``target_live``."""
    held = [
        (a.agent_id, a.task_id, a.generation)
        for a in runtime.state.agents.values()
        if a.status == "busy" and a.task_id is not None and a.generation is not None
    ]
    finishers: list[cmd.Command] = []
    for agent_id, task_id, generation in held:
        ids = {"agent_id": agent_id, "task_id": task_id, "generation": generation}
        fail = (fleet.completed + fleet.failed + len(finishers)) % FAIL_EVERY == 0
        finishers.append(
            cmd.FailTask(**ids, error="tests failed") if fail else cmd.CompleteTask(**ids)
        )
    # Completions free places in the live set in this same commit.
    room = target_live - len(fleet.live) + sum(isinstance(f, cmd.CompleteTask) for f in finishers)
    submissions = [_submission(fleet.submitted + i, trivial) for i in range(max(0, room))]
    fleet.submitted += len(submissions)
    results = runtime.execute_batch([*finishers, *submissions])
    for command, result in zip([*finishers, *submissions], results, strict=True):
        if isinstance(result, TierlogError):
            fleet.rejected += 1
        elif isinstance(command, cmd.CompleteTask):
            fleet.completed += 1
            fleet.live.discard(command.task_id)
        elif isinstance(command, cmd.FailTask):
            fleet.failed += 1
            if result == "dead_lettered":
                fleet.dead_lettered += 1
                fleet.live.discard(command.task_id)
        elif isinstance(result, SubmitResult) and result.created:
            fleet.created += 1
            fleet.live.add(result.task_id)


def _untimed_live(runtime: Any, fleet: _Fleet) -> int:
    """Live tasks that a queue wait can dead-letter (all but trivial ones)."""
    tasks = runtime.state.tasks
    return sum(1 for t in fleet.live if t in tasks and tasks[t].route_tier != "trivial")


def generate_log(
    url: str, events: int, live: int, agents: int = GEN_AGENTS, progress: Progress | None = None
) -> dict[str, Any]:
    """Fill a fresh log at ``url`` until it holds about ``events`` events, keeping about
    ``live`` tasks queued or assigned, on the wall clock (so the log's times are those
    of a server that just stopped). The last stretch submits only trivial tasks, so the
    live set left behind is one no time-to-live dead-letters however long the log is
    kept: a restart then replays the log, not a burst of expiries."""
    say = progress or (lambda _: None)
    settings = Settings(store=url)
    log = bootstrap.open_log(settings)
    try:
        runtime = bootstrap.build_runtime(settings, log)
        runtime.start()
        setup: list[cmd.Command] = [
            *(cmd.RegisterEndpoint(host=h, models=("llama3:8b",)) for h in _ENDPOINTS),
            *(cmd.ReportHealth(endpoint_id=f"{h}:11434", ok=True) for h in _ENDPOINTS),
            *(
                cmd.RegisterAgent(agent_id=f"gen-agent-{n}", capabilities=CAPABILITIES)
                for n in range(agents)
            ),
        ]
        runtime.execute_batch(setup)
        fleet = _Fleet()
        tail_from = max(0, events - 8 * live)
        head, next_report = log.head(), 0
        while head < tail_from or (head < events) or _untimed_live(runtime, fleet):
            _round(runtime, fleet, live, trivial=head >= tail_from)
            head = log.head()
            if head >= next_report:
                say(f"generate: {head:,} of {events:,} events, {len(fleet.live)} live")
                next_report = head + max(events // 10, 1)
        return {
            "log_events": head,
            "tasks_created": fleet.created,
            "tasks_completed": fleet.completed,
            "failures": fleet.failed,
            "dead_lettered": fleet.dead_lettered,
            "rejected_commands": fleet.rejected,
            "live_at_end": len(fleet.live),
        }
    finally:
        log.close()


# --- the server ----------------------------------------------------------------------


@dataclass
class Server:
    """A ``tierlog serve`` process of this bench, on 127.0.0.1."""

    proc: subprocess.Popen[bytes]
    url: str
    output: Path
    spawned: float

    def rss_mb(self) -> float:
        """Its resident memory now, in MB: ``VmRSS`` of serve and of the processes it
        started (the read models' process) added up, so pages they share count twice."""
        return sum(self.rss_by_process())

    def rss_by_process(self) -> list[float]:
        """``VmRSS`` of serve, then of each process it started, in MB."""
        sizes = [vm_rss_mb(self.proc.pid)]
        for child in descendants(self.proc.pid):
            with contextlib.suppress(FileNotFoundError, RuntimeError):  # it ended meanwhile
                sizes.append(vm_rss_mb(child))
        return sizes

    def tail(self) -> str:
        """The last lines it wrote, to say why it failed."""
        try:
            return " | ".join(self.output.read_text(errors="replace").strip().splitlines()[-5:])
        except OSError:
            return ""


def descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (from ``/proc/<pid>/stat``)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The parent's pid is the second field after the ")" that ends the name.
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # it ended meanwhile
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def vm_rss_mb(pid: int) -> float:
    """The resident set size of process ``pid`` from ``/proc/<pid>/status``, in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_serve(
    store_dir: Path, name: str = "serve", settings: Mapping[str, str] | None = None
) -> Server:
    """Spawn ``tierlog serve`` on the log in ``store_dir`` (its output to a file there),
    with ``settings`` as ``TIERLOG_*`` environment variables (and nothing else's)."""
    port = free_port()
    exe = shutil.which("tierlog") or str(Path(sys.executable).with_name("tierlog"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERLOG_")}
    env["TIERLOG_ADMIN_TOKEN"] = ADMIN
    env.update(settings or {})
    output = store_dir / f"{name}.out"
    store = f"sqlite:///{store_dir / LOG_NAME}"
    with output.open("ab") as sink:
        spawned = time.perf_counter()
        proc = subprocess.Popen(
            [exe, "serve", "--host", "127.0.0.1", "--port", str(port), "--store", store],
            cwd=store_dir,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return Server(proc, f"http://127.0.0.1:{port}", output, spawned)


def caught_up(health: dict[str, Any]) -> bool:
    """Whether a ``/healthz`` answer says the server is up with every read model at lag 0."""
    projections = health.get("projections") or {}
    return (
        health.get("status") == "ok"
        and bool(projections)
        and all(p.get("lag") == 0 for p in projections.values())
    )


def read_side_settled(health: dict[str, Any]) -> bool:
    """Whether the read models' own process (if serve has one) runs and has said it
    stands at the log's head: its memory is then counted whole."""
    status = health.get("read_models") or {}
    if status.get("in") != "process":
        return True
    return (
        status.get("pid") is not None
        and status.get("reported") is True
        and status.get("position") == health.get("log_head")
    )


def wait_caught_up(
    server: Server, timeout_s: float, ready: Callable[[dict[str, Any]], bool] = caught_up
) -> float:
    """Poll ``/healthz`` every 10 ms until ``ready`` holds of its answer (by default:
    lag 0 everywhere); the seconds since the process was spawned."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=server.url, timeout=2) as http:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {server.proc.returncode}: {server.tail()}")
            try:
                answer = http.get("/healthz")
                if answer.status_code == 200 and ready(answer.json()):
                    return time.perf_counter() - server.spawned
            except httpx.HTTPError:
                pass
            time.sleep(_READY_POLL_S)
    raise RuntimeError(f"serve was not caught up within {timeout_s:g} s: {server.tail()}")


def stop_serve(server: Server, timeout_s: float = 60) -> float:
    """SIGTERM, wait for it to stop (SIGKILL after ``timeout_s``); the seconds it took."""
    started = time.perf_counter()
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)
            raise RuntimeError(f"serve did not stop within {timeout_s:g} s of SIGTERM") from None
    return time.perf_counter() - started


def timed_start(
    store_dir: Path, timeout_s: float, name: str, settings: Mapping[str, str] | None = None
) -> tuple[float, float]:
    """Start serve, wait until caught up, read its memory, stop it: (seconds, MB)."""
    server = start_serve(store_dir, name, settings)
    try:
        seconds = wait_caught_up(server, timeout_s)
        wait_caught_up(server, timeout_s, read_side_settled)
        return seconds, server.rss_mb()
    finally:
        stop_serve(server)


# --- the whole bench -----------------------------------------------------------------


def _prepare(
    base: Path, keep: Path | None, events: int, live: int, say: Progress
) -> tuple[Path, dict[str, Any]]:
    """The working directory holding a generated log (without read models), and what
    its generation took: generated there, or copied from ``keep`` (generated into it
    first when it holds none)."""
    if keep is None:
        started = time.perf_counter()
        made = generate_log(f"sqlite:///{base / LOG_NAME}", events, live, progress=say)
        return base, {**made, "generate_s": round(time.perf_counter() - started, 1)}
    keep.mkdir(parents=True, exist_ok=True)
    marker = keep / MARKER
    if marker.exists():
        made = json.loads(marker.read_text())
        if (made.get("requested_events"), made.get("live")) != (events, live):
            raise ValidationError(
                f"{keep} holds a log made with --log-events {made.get('requested_events')} "
                f"--live {made.get('live')}: use another --keep directory",
                field="keep",
            )
        if not (keep / LOG_NAME).exists():
            raise ValidationError(f"{keep} has {MARKER} but no {LOG_NAME}", field="keep")
        made["reused_kept_log"] = True
    elif (keep / LOG_NAME).exists():
        raise ValidationError(f"{keep} holds a {LOG_NAME} this bench did not make", field="keep")
    else:
        started = time.perf_counter()
        made = generate_log(f"sqlite:///{keep / LOG_NAME}", events, live, progress=say)
        made.update(generate_s=round(time.perf_counter() - started, 1))
        made.update(requested_events=events, live=live)
        marker.write_text(json.dumps(made, indent=2))
        made["reused_kept_log"] = False
    started = time.perf_counter()
    for name in (LOG_NAME, f"{LOG_NAME}-wal"):  # the log, and its WAL if one was left
        if (keep / name).exists():
            shutil.copy2(keep / name, base / name)
    made["copy_s"] = round(time.perf_counter() - started, 1)
    return base, made


@contextmanager
def _terminated_as_exit() -> Iterator[None]:
    """While the bench runs, SIGTERM ends it as an exception does, so its ``finally``
    blocks still stop the server and remove the working copy (the default action
    would leave both behind)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def run_restart_bench(
    *,
    log_events: int = 1_000_000,
    flow_tasks_count: int = 200_000,
    live: int = 1000,
    repeats: int = 1,
    keep: str | None = None,
    agents: int = FLOW_AGENTS,
    start_timeout_s: float = 1800.0,
    flow_timeout_s: float | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Generate (or reuse) the log, start serve once to build what it keeps beside the
    log, then restart it ``repeats`` times (medians reported) and drive the flow through
    the last one. Targets (issue #12): restart under 2 s, 150 MB after start, growth
    under 20 MB."""
    say = progress or (lambda _: None)
    began = time.perf_counter()
    keep_dir = Path(keep).resolve() if keep is not None else None
    if keep_dir is not None:  # the working copy goes beside it, on the same disk
        keep_dir.mkdir(parents=True, exist_ok=True)
    with (
        _terminated_as_exit(),
        tempfile.TemporaryDirectory(prefix="bench-restart-", dir=keep_dir) as tmp,
    ):
        work, made = _prepare(Path(tmp), keep_dir, log_events, live, say)
        say(f"first start on {made['log_events']:,} events (builds the read models)")
        first_s, first_rss = timed_start(work, start_timeout_s, "first-start")
        restarts: list[float] = []
        rss_after: list[float] = []
        server: Server | None = None
        flow: dict[str, Any] = {}
        try:
            for n in range(repeats):
                say(f"restart {n + 1} of {repeats}")
                server = start_serve(work, f"restart-{n + 1}")
                restarts.append(wait_caught_up(server, start_timeout_s))
                wait_caught_up(server, start_timeout_s, read_side_settled)
                by_process = server.rss_by_process()  # one reading: the sum and its parts
                rss_after.append(sum(by_process))
                if n + 1 < repeats:
                    stop_serve(server)
                    server = None
            assert server is not None
            say(f"flow: {flow_tasks_count:,} tasks, {live} live, {agents} agents")
            timeout = flow_timeout_s or 120 + flow_tasks_count / 20
            flow = asyncio.run(
                flow_tasks(
                    server.url, server.rss_mb, flow_tasks_count, live, agents, timeout, progress=say
                )
            )
            wait_caught_up(server, 120)  # memory once the read side has caught up too
            end_by_process = server.rss_by_process()
            rss_end = sum(end_by_process)
        finally:
            stop_s = stop_serve(server) if server is not None else 0.0
    growth = rss_end - rss_after[-1]
    return {
        **{k: v for k, v in made.items() if k not in ("requested_events", "live")},
        "live": live,
        "first_start_s": round(first_s, 3),
        "first_start_rss_mb": round(first_rss, 1),
        "restart_s": _median(restarts),
        "restart_s_runs": [round(s, 3) for s in restarts],
        "rss_after_start_mb": round(statistics.median(rss_after), 1),
        "rss_after_start_mb_runs": [round(r, 1) for r in rss_after],
        **flow,
        "rss_flow_start_mb": round(rss_after[-1], 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_growth_mb": round(growth, 1),
        # serve's, then each of its processes' (the read models'), at the flow's two ends.
        "rss_flow_start_mb_by_process": [round(r, 1) for r in by_process],
        "rss_end_mb_by_process": [round(r, 1) for r in end_by_process],
        "stop_s": round(stop_s, 2),
        "bench_s": round(time.perf_counter() - began, 1),
        "targets": {"restart_s": 2.0, "rss_after_start_mb": 150.0, "rss_growth_mb": 20.0},
        "meets_targets": {
            "restart_s": statistics.median(restarts) < 2.0,
            "rss_after_start_mb": statistics.median(rss_after) < 150.0,
            "rss_growth_mb": growth < 20.0,
        },
    }


def print_restart(figures: dict[str, Any]) -> None:
    """The figures of ``run_restart_bench`` in a few lines, each beside its target."""
    met = {True: "ok", False: "over target"}
    ok = figures["meets_targets"]
    print(
        f"log: {figures['log_events']:,} events, {figures['live']} live; generated in "
        f"{figures['generate_s']} s; first start {figures['first_start_s']} s"
    )
    print(
        f"restart to /healthz lag 0: {figures['restart_s']} s (median of "
        f"{len(figures['restart_s_runs'])}; target < 2 s: {met[ok['restart_s']]})"
    )
    print(
        f"RSS after start: {figures['rss_after_start_mb']} MB "
        f"(target < 150 MB: {met[ok['rss_after_start_mb']]})"
    )
    print(
        f"flow: {figures['flow_completed']:,} of {figures['flow_tasks']:,} tasks in "
        f"{figures['flow_s']} s ({figures['flow_tasks_per_s']}/s); RSS grew "
        f"{figures['rss_growth_mb']} MB (target < 20 MB: {met[ok['rss_growth_mb']]}), "
        f"peak {figures['rss_peak_mb']} MB"
    )
