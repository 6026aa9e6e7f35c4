"""The ``tierlog`` command line: thin over library functions.

Every mistake a user can make (a bad flag, setting or store) is one line on stderr and
exit 2, never a traceback; no password of a store's DSN is ever printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from tierlog.adapters.cli_errors import DEBUG_ENV, Parser, say, unexpected
from tierlog.adapters.settings import HOST, PORT, PROBE_INTERVAL_S, Settings, load_settings
from tierlog.adapters.store.faults import one_line, redact_url
from tierlog.domain.errors import TierlogError, ValidationError


def _add_common(
    parser: argparse.ArgumentParser, *, json_flag: bool = True, store_help: str | None = None
) -> None:
    parser.add_argument(
        "--store",
        default=None,  # not given: TIERLOG_STORE, then the default (settings.py)
        help="sqlite:///path.db or postgresql://user@host:port/db "
        + (f"({store_help})" if store_help else "(env TIERLOG_STORE)"),
    )
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_config(parser: argparse.ArgumentParser) -> None:
    """``--config``: only for the commands that read the file."""
    parser.add_argument("--config", default=None, help="TOML configuration file")


def _add_accept_replaced_log(parser: argparse.ArgumentParser) -> None:
    """``--accept-replaced-log``: for the commands that refuse another log's read models."""
    parser.add_argument(
        "--accept-replaced-log",
        action="store_true",
        help="read models or checkpoints built from another log (ahead of this one or "
        "not matching its chain): keep them as NAME.replaced-<time> and rebuild",
    )


def _settings(args: argparse.Namespace, **flags: Any) -> Settings:
    """The settings under this command's flags (``--config`` where it is offered)."""
    return load_settings(store=args.store, config=getattr(args, "config", None), **flags)


def _print_demo(report: Any) -> None:
    t = report.telemetry
    print(
        f"tierlog demo: seed {report.seed}, {report.tasks} distinct tasks "
        "(repeated idempotency keys submit no new task), "
        f"{report.virtual_seconds:.0f} s of virtual time"
    )
    print("tasks by state and tier:")
    for state, tiers in t["tasks_by_state_and_tier"].items():
        print(f"  {state:<14} " + ", ".join(f"{k}={v}" for k, v in tiers.items()))
    print(
        "routing decisions (tier -> target): "
        + ", ".join(f"{k}={v}" for k, v in t["routing_decisions"].items())
    )
    print(f"  of which after a fallback: {t['fallback_assignments']}")
    timers = t["timers"]
    cancelled = ", ".join(f"{k}={v}" for k, v in timers["cancelled"].items()) or "none"
    print(
        f"fallback timers: started={timers['started']} fired={timers['fired']} "
        f"cancelled: {cancelled}"
    )
    print(f"retries after failure: {t['retries']}")
    print("reclaims: " + (", ".join(f"{k}={v}" for k, v in t["reclaims"].items()) or "none"))
    print(
        "dead letters: " + (", ".join(f"{k}={v}" for k, v in t["dead_letters"].items()) or "none")
    )
    print(f"events in the log: {report.events}")
    print(f"log: {report.log_path or redact_url(report.store)}")


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the simulated fleet on a fresh log."""
    from tierlog.adapters.tools.demo import DEMO_STORE, run_demo

    # Only --store: TIERLOG_STORE names the log `serve` uses, which the demo's phantom
    # agents must never share with real tasks.
    report = run_demo(args.store or DEMO_STORE, tasks=args.tasks, seed=args.seed)
    if args.json:
        print(
            json.dumps(
                {**report.__dict__, "store": redact_url(report.store)}, indent=2, default=str
            )
        )
    else:
        _print_demo(report)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP API, the scheduler and the projections."""
    from tierlog.adapters.http.serve import serve

    settings = _settings(
        args,
        host=args.host,
        port=args.port,
        probe=args.probe,
        probe_interval_s=args.probe_interval,
        node_id=args.node_id,
    )
    if args.create_schema:
        _create_schema(settings)
    serve(settings, accept_replaced_log=args.accept_replaced_log)
    return 0


def _create_schema(settings: Settings) -> None:
    """Create the PostgreSQL store's schema if it is missing (a SQLite file is created
    as it is opened: nothing to do)."""
    from tierlog.adapters.store.event_log import postgres_connect_args, store_env
    from tierlog.adapters.store.faults import check_postgres

    env = store_env(settings.store, connect_timeout_s=settings.store_connect_timeout_s)
    if env["PERSISTENCE_MODULE"] == "eventsourcing.postgres":
        check_postgres(env, postgres_connect_args(env), create_schema=True)


def cmd_project(args: argparse.Namespace) -> int:
    """Bring the read models up to date (or rebuild them from position 0)."""
    from tierlog.adapters import bootstrap

    settings = _settings(args)
    log = bootstrap.open_log(settings, read_only=True)  # project never appends
    try:
        for kept in bootstrap.check_history(
            settings, log, accept_replaced_log=args.accept_replaced_log
        ):
            print(f"tierlog: kept {kept}; rebuilding from this log", file=sys.stderr)
        runner = bootstrap.build_runner(settings, log)
        try:
            runner.start()
            applied = runner.rebuild() if args.rebuild else runner.run_until_caught_up()
            lag = runner.lag()
            report = {"applied": applied, "positions": runner.positions(), "lag": lag}
        finally:
            runner.close()
    finally:
        log.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{'rebuilt' if args.rebuild else 'applied'} {applied} events; lag: "
            + ", ".join(f"{k}={v}" for k, v in lag.items())
        )
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Verify a log: exit 0 clean, 1 with violations, 2 when it cannot be read."""
    from tierlog.adapters import bootstrap
    from tierlog.adapters.audit.run import audit

    settings = _settings(args)
    store = settings.store
    # Read-only: a missing store or one that is not a tierlog log is refused in one
    # line (StoreUnusableError, exit 2) and left as it was.
    log = bootstrap.open_log(settings, read_only=True)
    try:
        head = log.head()
    except Exception as exc:  # the store answered the probe, then failed
        log.close()
        print(
            f"tierlog: cannot read the store {redact_url(store)}: {one_line(exc)}", file=sys.stderr
        )
        return 2
    try:
        if args.json or not sys.stderr.isatty():
            report = audit(log, full=args.full)
        else:
            from rich.progress import Progress

            with Progress(transient=True) as bar:
                job = bar.add_task("auditing", total=head)
                report = audit(
                    log, progress=lambda done, _: bar.update(job, completed=done), full=args.full
                )
    except Exception as exc:  # the store went away or broke mid-read: no verdict
        print(
            f"tierlog: cannot read the store {redact_url(store)}: {one_line(exc)}", file=sys.stderr
        )
        return 2
    finally:
        log.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        verdict = "clean" if report.clean else f"{report.total} violation(s)"
        print(f"audit of {report.events} events: {verdict} ({', '.join(report.checked)})")
        for v in report.violations:
            print(f"  position {v.position} [{v.aggregate_id}] {v.rule}: {v.detail}")
        if report.omitted:
            print(f"  ... and {report.omitted} more hash chain violation(s), not listed")
    return 0 if report.clean else 1


def _point(log: Any, text: str) -> int:
    """A log position from a number or an ISO 8601 time."""
    from datetime import datetime

    from tierlog.adapters.history.time_travel import position_at_time

    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"{text!r} is neither a position nor an ISO 8601 time", field="point"
        ) from None
    if when.tzinfo is None:
        raise ValidationError(f"{text!r} needs a time zone (e.g. +00:00)", field="point")
    return position_at_time(log, when)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_at(args: argparse.Namespace) -> int:
    """The state at a position or time (or one task then)."""
    from uuid import UUID

    from tierlog.adapters import bootstrap
    from tierlog.adapters.history.time_travel import fold_until, summarise_state, task_at

    log = bootstrap.open_log(_settings(args), read_only=True)
    try:
        position = _point(log, args.position if args.position is not None else args.time)
        state = fold_until(log, position)
        if args.task:
            try:
                task_id = UUID(args.task)
            except ValueError:
                raise ValidationError("--task must be a task id (UUID)", field="task") from None
            data: Any = {"position": state.position, "task": task_at(log, state, task_id)}
        else:
            data = summarise_state(state)
    finally:
        log.close()
    if args.json:
        _print_json(data)
    else:
        from tierlog.adapters.history import tables

        tables.show(tables.task_at(data) if args.task else tables.state_at(data))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    """What changed between two positions or times."""
    from tierlog.adapters import bootstrap
    from tierlog.adapters.history.time_travel import diff

    log = bootstrap.open_log(_settings(args), read_only=True)
    try:
        data = diff(log, _point(log, args.a), _point(log, args.b))
    finally:
        log.close()
    if args.json:
        _print_json(data)
    else:
        from tierlog.adapters.history import tables

        tables.show(tables.changes(data))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """A task's timeline with every decision's reason."""
    from uuid import UUID

    from tierlog.adapters import bootstrap
    from tierlog.adapters.history.time_travel import explain

    try:
        task_id = UUID(args.task_id)
    except ValueError:
        raise ValidationError("TASK_ID must be a task id (UUID)", field="task_id") from None
    settings = _settings(args)
    log = bootstrap.open_log(settings, read_only=True)
    try:
        story = explain(log, task_id)
    finally:
        log.close()
    if not story:
        raise ValidationError(f"no task {task_id} in {redact_url(settings.store)}", field="task_id")
    if args.json:
        _print_json(story)
    else:
        from tierlog.adapters.history import tables

        tables.show(tables.story(story))
    return 0


def cmd_whatif(args: argparse.Namespace) -> int:
    """Replay recorded traffic under another configuration and report what changes."""
    from tierlog.adapters import bootstrap
    from tierlog.adapters.history.time_travel import what_if
    from tierlog.adapters.history.whatif_config import overlay_of

    if args.config is None:
        raise ValidationError("whatif needs --config NEW.toml", field="config")
    settings = _settings(args)
    overlay = None if args.replace else overlay_of(settings)
    # The settings' policy is the defaults with the named keys changed: what an overlay
    # replays under until the log's first recorded configuration.
    config = settings.scheduler
    log = bootstrap.open_log(settings, read_only=True)
    try:
        start = _point(log, args.start) if args.start else 0
        stop = _point(log, args.stop) if args.stop else None
        report = what_if(log, config, start, stop, overlay=overlay)
    finally:
        log.close()
    report["configuration"] = (
        {"mode": "replace"} if overlay is None else {"mode": "overlay", "changed": overlay.keys}
    )
    if args.json:
        _print_json(report)
    else:
        _print_whatif(report)
    return 0


def _print_whatif(report: dict[str, Any]) -> None:
    base = report["configuration"]
    if base["mode"] == "replace":
        print("under the new configuration in full (keys it leaves out: built-in defaults)")
    else:
        changed = ", ".join(base["changed"]) or "nothing"
        print(f"under the recorded configuration with these keys changed: {changed}")
    print(
        f"{report['tasks_changed']} of {report['tasks_considered']} tasks would change: "
        + (", ".join(f"{k}={v}" for k, v in report["counts"].items()) or "nothing")
    )
    for task_id, change in report["changes"].items():
        print(
            f"  {task_id}: "
            + "; ".join(f"{k} {v['recorded']} -> {v['would']}" for k, v in change.items())
        )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = Parser(prog="tierlog", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="simulate a fleet end to end on a fresh log")
    _add_common(demo, store_help="its own log (default ./tierlog-demo.db; not TIERLOG_STORE)")
    demo.add_argument("--tasks", type=int, default=240, help="tasks to submit (default 240)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.set_defaults(func=cmd_demo)

    serve = sub.add_parser("serve", help="HTTP API, scheduler and projections in one process")
    _add_common(serve, json_flag=False)
    _add_config(serve)
    # Flags not given (None) leave the value to TIERLOG_*, the file, then the default.
    serve.add_argument("--host", default=None, help=f"default {HOST} (env TIERLOG_HOST)")
    serve.add_argument("--port", type=int, default=None, help=f"default {PORT} (env TIERLOG_PORT)")
    serve.add_argument(
        "--probe", action="store_true", default=None, help="check endpoints' /api/tags"
    )
    serve.add_argument(
        "--probe-interval",
        type=float,
        default=None,
        help=f"seconds between probe rounds (default {PROBE_INTERVAL_S:g})",
    )
    serve.add_argument(
        "--node-id",
        default=None,
        help="this node's name among several on one PostgreSQL log "
        "(default host:pid; env TIERLOG_NODE_ID)",
    )
    _add_accept_replaced_log(serve)
    serve.add_argument(
        "--create-schema",
        action="store_true",
        help="create the PostgreSQL schema named by ?schema= if it does not exist",
    )
    serve.set_defaults(func=cmd_serve)

    project = sub.add_parser("project", help="update or rebuild the read models")
    _add_common(project)
    project.add_argument("--rebuild", action="store_true", help="drop and refold from 0")
    _add_accept_replaced_log(project)
    project.set_defaults(func=cmd_project)

    at = sub.add_parser("at", help="the state at a position or time")
    _add_common(at)
    point = at.add_mutually_exclusive_group(required=True)
    point.add_argument("--position")
    point.add_argument("--time", help="ISO 8601 with a time zone")
    at.add_argument("--task", help="one task only")
    at.set_defaults(func=cmd_at)

    diff_cmd = sub.add_parser("diff", help="what changed between two positions or times")
    _add_common(diff_cmd)
    diff_cmd.add_argument("a")
    diff_cmd.add_argument("b")
    diff_cmd.set_defaults(func=cmd_diff)

    explain_cmd = sub.add_parser("explain", help="a task's timeline with every decision's reason")
    _add_common(explain_cmd)
    explain_cmd.add_argument("task_id")
    explain_cmd.set_defaults(func=cmd_explain)

    whatif = sub.add_parser("whatif", help="replay recorded traffic under another config")
    _add_common(whatif)
    _add_config(whatif)
    whatif.add_argument("--from", dest="start", help="position or time (exclusive)")
    whatif.add_argument("--to", dest="stop", help="position or time (inclusive)")
    whatif.add_argument(
        "--replace",
        action="store_true",
        help="--config replaces the whole configuration (keys it leaves out: built-in "
        "defaults) instead of changing only the keys it names over the recorded one",
    )
    whatif.set_defaults(func=cmd_whatif)

    audit_cmd = sub.add_parser("audit", help="verify the chain, invariants and projections")
    _add_common(audit_cmd)
    audit_cmd.add_argument(
        "--full",
        action="store_true",
        help="check everything from position 0, ignoring the seal a clean audit left",
    )
    audit_cmd.set_defaults(func=cmd_audit)

    from tierlog.adapters.tools.bench_cli import add_command as add_bench

    add_bench(sub, _add_common)
    from tierlog.adapters.tools.bench_cluster import add_command as add_bench_cluster

    add_bench_cluster(sub)
    from tierlog.adapters.tools.client_cli import add_commands as add_client_commands

    add_client_commands(sub)  # agent, submit, tasks, show, cancel, ... against a server
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tierlog`` console script: exit 0, 1 (a finding, such as an
    audit's violations, or an unexpected error) or 2 (a user mistake, said in one line)."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except TierlogError as exc:
        say(exc.message, args)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        return unexpected(exc, args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
