"""``tierlog bench``: its flags and what it prints (the benches are in their own modules)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from tierlog.adapters.cli_errors import positive
from tierlog.domain.errors import ValidationError


def add_command(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``tierlog bench`` on the CLI's subparsers (``add_common``: the flags every
    command has, ``--store`` and ``--json``)."""
    bench: argparse.ArgumentParser = sub.add_parser(
        "bench", help="measure throughput against raw sqlite3"
    )
    add_common(bench)
    bench.add_argument("--events", type=positive, default=50_000)
    bench.add_argument("--tasks", type=positive, default=10_000)
    bench.add_argument("--batch", type=positive, default=500)
    bench.add_argument(
        "--repeats", type=positive, default=None, help="runs (default 5; --restart: 3 restarts)"
    )
    bench.add_argument(
        "--http",
        action="store_true",
        help="the HTTP part: long-poll wake, queue reads, submissions (loopback)",
    )
    bench.add_argument("--submissions", type=positive, default=5000, help="HTTP submissions")
    bench.add_argument(
        "--poll-agents", type=positive, default=1000, help="long-polling agents for --http"
    )
    bench.add_argument(
        "--batch-tasks",
        type=positive,
        default=100_000,
        help="tasks submitted through POST /v1/tasks/batch for --http (batches of 1000)",
    )
    bench.add_argument(
        "--clients",
        action="store_true",
        help="tasks/s end to end with the client library's Agents beside bare httpx calls",
    )
    bench.add_argument("--agents", type=positive, default=100, help="agents for --clients")
    bench.add_argument("--client-tasks", type=positive, default=3000, help="tasks for --clients")
    bench.add_argument(
        "--postgres",
        default=None,
        metavar="DSN",
        help="also measure submit->assigned on this PostgreSQL (in schemas made and dropped)",
    )
    bench.add_argument(
        "--mix-events",
        type=positive,
        default=100_000,
        help="size of the audit-mix log the read side is also measured on (default 100,000)",
    )
    bench.add_argument(
        "--audit",
        action="store_true",
        help="audit throughput and memory, and `at` latency, on a large log",
    )
    bench.add_argument(
        "--log-events",
        type=positive,
        default=1_000_000,
        help="size of the generated log for --audit, --first-start and --restart"
        " (default 1,000,000)",
    )
    bench.add_argument(
        "--first-start",
        action="store_true",
        help="serve's first start on a large log without read models, with and without"
        " the read-model worker (--repeats rounds, default 3)",
    )
    bench.add_argument(
        "--restart",
        action="store_true",
        help="serve's restart time and memory on a large log, then while tasks flow",
    )
    bench.add_argument(
        "--flow-tasks",
        type=positive,
        default=200_000,
        help="tasks driven through the restarted server for --restart (default 200,000)",
    )
    bench.add_argument(
        "--live", type=positive, default=1000, help="tasks live at once for --restart"
    )
    bench.add_argument(
        "--keep",
        default=None,
        metavar="DIR",
        help="for --restart: keep the generated log in DIR and reuse it on later runs",
    )
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure the append path and submit→assigned against raw sqlite3."""
    from tierlog.adapters.tools.bench import run_bench

    if args.store is not None:  # silently ignoring it would measure another store
        raise ValidationError(
            "bench makes its own temporary logs: it takes no --store", field="store"
        )
    progress = None if args.json else (lambda line: print(line, file=sys.stderr))
    if args.restart:
        return _bench_restart(args, progress)
    one_part = _one_part(args, progress)
    if one_part is not None:
        print(json.dumps(one_part, indent=2))
        return 0
    figures = run_bench(
        events=args.events,
        batch=args.batch,
        tasks=args.tasks,
        repeats=args.repeats or 5,
        mix_events=args.mix_events,
        progress=progress,
        postgres=args.postgres,
    )
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    a, s = figures["append"], figures["submit_to_assigned"]
    print(
        f"append: {a['events_per_s_median']:,} events/s (median of {a['repeats']}), raw sqlite3 "
        f"executemany {a['raw_sqlite_rows_per_s_median']:,} rows/s at batch {a['batch']}: "
        f"ratio {a['ratio_median']}"
    )
    print(
        f"submit->assigned: {s['tasks_per_s_median']:,} tasks/s in process "
        f"({s['events_per_task']} events per task, group commits of {s['batch']}), raw "
        f"sqlite3 {s['raw_sqlite_equivalent_tasks_per_s_median']:,}: ratio {s['ratio_median']}"
    )
    pg = figures.get("submit_to_assigned_postgresql")
    if pg is not None:
        print(
            f"submit->assigned on PostgreSQL: {pg['tasks_per_s_median']:,} tasks/s, raw psycopg "
            f"{pg['raw_psycopg_equivalent_tasks_per_s_median']:,}: ratio {pg['ratio_median']}"
        )
    w = figures["submit_to_assigned_via_writer"]
    print(
        f"submit->assigned through the background writer: {w['tasks_per_s_median']:,} tasks/s "
        f"({w['clients']} client threads, {w['mean_commands_per_commit']} commands per commit)"
    )
    r, m = figures["runner"], figures["runner_mix"]
    print(
        f"read side: writer {r['writer_events_per_s_median']:,} events/s, runner "
        f"{r['runner_handover_events_per_s_median']:,} handed over, "
        f"{r['runner_store_events_per_s_median']:,} from the store; on the audit mix "
        f"{m['writer_events_per_s_median']:,} / {m['runner_handover_events_per_s_median']:,}"
        f" / {m['runner_store_events_per_s_median']:,}; runner/writer "
        f"{figures['runner_to_writer_ratio']} (the lower of the two)"
    )
    print(f"peak RSS: {figures['peak_rss_mb']} MB")
    return 0


def _one_part(args: argparse.Namespace, progress: Any) -> dict[str, Any] | None:
    """The figures of the one part asked for (``--first-start``, ``--audit``,
    ``--clients`` or ``--http``), printed as JSON; None: the core bench was asked."""
    if args.first_start:
        from tierlog.adapters.tools.bench_first_start import run_first_start_bench

        return run_first_start_bench(events=args.log_events, repeats=args.repeats or 3)
    if args.audit:
        from tierlog.adapters.tools.bench_audit import run_audit_bench
        from tierlog.adapters.tools.bench_first_start import run_first_start_bench

        figures = run_audit_bench(events=args.log_events, repeats=args.repeats or 5)
        # serve's first start on a log of the same size and mix, without read models.
        figures.update(run_first_start_bench(events=args.log_events))
        return figures
    if args.clients:
        from tierlog.adapters.tools.bench_clients import run_clients_bench

        return run_clients_bench(
            tasks=args.client_tasks,
            agents=args.agents,
            repeats=args.repeats or 1,
            progress=progress,
        )
    if args.http:
        from tierlog.adapters.tools.bench_http import run_http_bench

        return run_http_bench(
            submissions=args.submissions,
            agents=args.poll_agents,
            batch_tasks=args.batch_tasks,
            repeats=args.repeats or 1,
            progress=progress,
        )
    return None


def _bench_restart(args: argparse.Namespace, progress: Any) -> int:
    """``bench --restart``: restart time and memory of ``serve`` on a large log."""
    from tierlog.adapters.tools.bench_restart import print_restart, run_restart_bench

    figures = run_restart_bench(
        log_events=args.log_events,
        flow_tasks_count=args.flow_tasks,
        live=args.live,
        repeats=args.repeats or 3,
        keep=args.keep,
        progress=progress,
    )
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print_restart(figures)
    return 0
