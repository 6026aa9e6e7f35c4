"""``tierlog bench``: throughput of the append path and of submit→assigned.

Each figure stands beside a raw ``sqlite3`` baseline measured in the same run at the
same batch size, on a file with the same pragmas (WAL, the default synchronous),
so the ratio means something on a noisy machine. Runs repeat; medians are reported.
"""

from __future__ import annotations

import resource
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

from tierlog.adapters import bootstrap
from tierlog.adapters.runtime.clock import SystemClock
from tierlog.adapters.runtime.writer import SchedulerRuntime
from tierlog.adapters.settings import Settings
from tierlog.adapters.store.codec import EventCodec
from tierlog.adapters.tools.bench_fleet import SPECS as _SPECS
from tierlog.adapters.tools.bench_fleet import (
    fleet_on,
    submit_command,
    submit_figures,
    time_submissions,
)
from tierlog.adapters.tools.bench_postgres import bench_submit_to_assigned_postgres, with_schema
from tierlog.adapters.tools.bench_runner import bench_runner_on_mix, bench_runner_vs_writer
from tierlog.domain import events as ev

_RAW_TABLE = (
    "CREATE TABLE IF NOT EXISTS stored_events (originator_id TEXT, originator_version INTEGER, "
    "topic TEXT, state BLOB, PRIMARY KEY (originator_id, originator_version))"
)


def _raw_sqlite_rate(
    path: Path,
    rows: list[tuple[str, int, str, bytes]],
    batch: int,
    before: list[tuple[str, int, str, bytes]] | None = None,
) -> float:
    """Rows/s for plain ``executemany`` + commit per batch, on a fresh WAL file (after
    inserting ``before``, untimed)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(_RAW_TABLE)
    if before:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO stored_events VALUES (?,?,?,?)", before)
        conn.execute("COMMIT")
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO stored_events VALUES (?,?,?,?)", rows[i : i + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return len(rows) / elapsed


def log_rows(path: Path, head: int) -> tuple[list[Any], list[Any]]:
    """The rows of the SQLite log at ``path``: those up to ``head`` and those after."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT originator_id, originator_version, topic, state FROM stored_events "
            "ORDER BY rowid"
        ).fetchall()
    finally:
        conn.close()
    return rows[:head], rows[head:]


def _sample_events(count: int) -> list[ev.DomainEvent]:
    now = SystemClock().now()
    events: list[ev.DomainEvent] = []
    for _ in range(count):
        events.append(
            ev.TaskSubmitted(
                originator_id=uuid4(),
                originator_version=1,
                timestamp=now,
                description="add a retry with backoff to the HTTP client",
                priority="normal",
                needed_capabilities=("python",),
                requested_tier=None,
                file_hints=("src/client.py",),
                verification_steps=("pytest -q",),
                success_criteria=(),
                repo="acme/web",
                branch=None,
                metadata={},
                max_retries=3,
                complete_by=None,
                submitted_by="bench",
                idempotency_key=None,
            )
        )
    return events


def bench_append(workdir: Path, events: int, batch: int, repeats: int) -> dict[str, Any]:
    """Events/s through ``EventLog.append`` (encode + insert) vs raw sqlite3."""
    ours: list[float] = []
    raw: list[float] = []
    for r in range(repeats):
        sample = _sample_events(events)
        log = bootstrap.open_log(_on(workdir / f"append-{r}.db"))
        started = time.perf_counter()
        for i in range(0, len(sample), batch):
            log.append(sample[i : i + batch])
        ours.append(len(sample) / (time.perf_counter() - started))
        log.close()
        mapper = log.mapper
        rows = []
        for e in sample:
            s = mapper.to_stored_event(e)
            rows.append((str(s.originator_id), s.originator_version, s.topic, s.state))
        raw.append(_raw_sqlite_rate(workdir / f"raw-{r}.db", rows, batch))
    ratios = [o / b for o, b in zip(ours, raw, strict=True)]
    return {
        "events": events,
        "batch": batch,
        "repeats": repeats,
        "events_per_s_median": round(statistics.median(ours)),
        "raw_sqlite_rows_per_s_median": round(statistics.median(raw)),
        "ratio_median": round(statistics.median(ratios), 3),
    }


def _on(path: Path) -> Settings:
    """The settings of a bench run on a fresh SQLite log at ``path``."""
    return Settings(store=f"sqlite:///{path}")


def _fleet(path: Path, agents: int) -> SchedulerRuntime:
    """A started runtime on a fresh SQLite log with three healthy endpoints and ``agents``
    idle agents, built as ``tierlog serve`` builds it."""
    return fleet_on(_on(path), agents)


def append_only_rate(
    path: Path, codec: EventCodec, setup: list[Any], timed: list[Any], per_commit: int
) -> float:
    """Events/s appending the events of the rows ``timed`` again through ``EventLog.append``
    (encoding, the check, the hash chain, SQLite) on a fresh log at ``path`` that holds
    ``setup`` first (untimed), ``per_commit`` events per append: the run's own appends
    with no command, decision or fold in front of them."""
    events = [codec.decode(topic, bytes(state)) for _, _, topic, state in timed]
    log = bootstrap.open_log(_on(path))
    try:
        for i in range(0, len(setup), per_commit):
            log.append([codec.decode(t, bytes(s)) for _, _, t, s in setup[i : i + per_commit]])
        started = time.perf_counter()
        for i in range(0, len(events), per_commit):
            log.append(events[i : i + per_commit])
        return len(events) / (time.perf_counter() - started)
    finally:
        log.close()


def bench_submit_to_assigned(workdir: Path, tasks: int, batch: int, repeats: int) -> dict[str, Any]:
    """Tasks/s from submission to assignment, in process, with group commits of ``batch``,
    beside raw ``sqlite3`` writing as many rows per task (400-byte payloads) at the same
    batch, measured in the same run; ``ratio_median`` is the median of the runs' ratios.

    Two diagnostics beside it, each in the same run: ``raw_sqlite_same_rows_...`` is raw
    ``sqlite3`` inserting the very rows the run appended (its ids, topics and payloads),
    how much of the gap the rows themselves cost; ``append_only_...`` appends the run's
    own events again through the log (encoding, check, hash chain, SQLite) with no
    command or decision, the figure a decision that cost nothing would reach."""
    rates: list[float] = []
    events_per_task: list[float] = []
    raw: list[float] = []
    same_rows: list[float] = []
    append_only: list[float] = []
    for r in range(repeats):
        runtime = _fleet(workdir / f"submit-{r}.db", agents=tasks)
        head = runtime.log.head()
        elapsed, appended = time_submissions(runtime, tasks, batch)
        codec = runtime.log.codec
        runtime.log.close()
        rates.append(tasks / elapsed)
        per_task = appended / tasks
        events_per_task.append(per_task)
        rows = [(str(p), 1, "t", b"x" * 400) for p in range(appended)]
        raw.append(_raw_sqlite_rate(workdir / f"raw-submit-{r}.db", rows, batch * 5) / per_task)
        # A diagnostic beside the baseline: the log's own rows (its ids, topics and
        # payloads), inserted raw at the same batch after its fleet's rows, untimed.
        setup, timed = log_rows(workdir / f"submit-{r}.db", head)
        same = _raw_sqlite_rate(workdir / f"raw-same-{r}.db", timed, batch * 5, before=setup)
        same_rows.append(same / per_task)
        again = append_only_rate(
            workdir / f"append-only-{r}.db", codec, setup, timed, round(batch * per_task)
        )
        append_only.append(again / per_task)
    return {
        **submit_figures((tasks, batch, repeats), rates, raw, events_per_task, "sqlite"),
        "raw_sqlite_same_rows_tasks_per_s_median": round(statistics.median(same_rows)),
        "ratio_to_same_rows_median": _median_ratio(rates, same_rows),
        "append_only_tasks_per_s_median": round(statistics.median(append_only)),
        "append_only_ratio_median": _median_ratio(append_only, raw),
    }


def _median_ratio(ours: list[float], base: list[float]) -> float:
    """The median of the runs' ratios, each within its own run."""
    return round(statistics.median(o / b for o, b in zip(ours, base, strict=True)), 3)


def bench_submit_via_writer(
    workdir: Path, tasks: int, repeats: int, clients: int = 4
) -> dict[str, Any]:
    """Tasks/s from submission to assignment through the runtime's background writer:
    ``clients`` threads submit at once, and the writer group-commits what has queued up
    (at most its ``max_batch`` setting), as ``tierlog serve`` does."""
    rates: list[float] = []
    batches: list[float] = []
    for r in range(repeats):
        runtime = _fleet(workdir / f"writer-{r}.db", agents=tasks)
        log = runtime.log
        runtime.start_background()
        commits_before = runtime.commits
        per_client = tasks // clients

        def client(n: int, runtime: SchedulerRuntime = runtime, count: int = per_client) -> None:
            futures = [
                runtime.submit(submit_command(_SPECS[(n + i) % len(_SPECS)])) for i in range(count)
            ]
            for future in futures:
                future.result()

        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        runtime.stop()
        assigned = runtime.read(lambda s: sum(1 for t in s.tasks.values() if t.state == "assigned"))
        if assigned != per_client * clients:
            raise RuntimeError(f"bench: only {assigned} tasks were assigned")
        rates.append(assigned / elapsed)
        batches.append(assigned / max(1, runtime.commits - commits_before))
        log.close()
    return {
        "tasks": tasks,
        "clients": clients,
        "repeats": repeats,
        "mean_commands_per_commit": round(statistics.median(batches), 1),
        "tasks_per_s_median": round(statistics.median(rates)),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_bench(
    *,
    events: int = 50_000,
    batch: int = 500,
    tasks: int = 20_000,
    repeats: int = 3,
    mix_events: int = 100_000,
    workdir: str | None = None,
    progress: Callable[[str], None] | None = None,
    postgres: str | None = None,
) -> dict[str, Any]:
    """Run every core benchmark and return the figures; with ``postgres`` (a DSN), also
    submit->assigned on that server beside raw psycopg (in scratch schemas)."""
    say = progress or (lambda _: None)
    if postgres is not None:
        with_schema(postgres, "check")  # a bad DSN stops the bench before it starts
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp)
        say(f"append: {events} events in batches of {batch}, {repeats} runs")
        append = bench_append(path, events, batch, repeats)
        say(f"submit->assigned: {tasks} tasks in batches of {batch}, {repeats} runs")
        submit = bench_submit_to_assigned(path, tasks, batch, repeats)
        submit_pg = None
        if postgres is not None:
            say(f"submit->assigned on PostgreSQL: {tasks} tasks in batches of {batch}")
            submit_pg = bench_submit_to_assigned_postgres(postgres, tasks, batch, repeats)
        say(f"submit->assigned through the background writer: {tasks} tasks, {repeats} runs")
        writer = bench_submit_via_writer(path, tasks, repeats)
        say(f"read side: the runner on the writer's events, {tasks} tasks, {repeats} runs")
        runner = bench_runner_vs_writer(
            path, tasks, batch, repeats, fleet=lambda p, n: _fleet(p, agents=n), specs=_SPECS
        )
        say(f"read side on the audit bench's mix: {mix_events} events, {repeats} runs")
        mix = bench_runner_on_mix(path, mix_events, repeats)
    return {
        "append": append,
        "submit_to_assigned": submit,
        "submit_to_assigned_via_writer": writer,
        "runner": runner,
        "runner_mix": mix,
        "writer_events_per_s": runner["writer_events_per_s_median"],
        "runner_handover_events_per_s": runner["runner_handover_events_per_s_median"],
        "runner_store_events_per_s": runner["runner_store_events_per_s_median"],
        # The lower of the two workloads' same-run ratios (medians).
        "runner_to_writer_ratio": min(
            runner["runner_to_writer_ratio"], mix["runner_to_writer_ratio"]
        ),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    } | ({} if submit_pg is None else {"submit_to_assigned_postgresql": submit_pg})
