"""The commands that talk to a running server: ``tierlog agent`` (any program as an
agent) and the operator's ``submit``, ``tasks``, ``show``, ``cancel``, ``retry``,
``queue``, ``agents``, ``endpoints``, ``tail`` and ``status``, all on
``tierlog.client``.

The server is ``--url`` (else ``TIERLOG_URL``, else http://127.0.0.1:8000); the operator
token is ``TIERLOG_TOKEN`` (else ``TIERLOG_ADMIN_TOKEN``, else the token file ``serve``
keeps beside the log named by ``--store``/``TIERLOG_STORE``). An error is one line and
exit 2, like every tierlog command.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tierlog.adapters.cli_errors import positive, say
from tierlog.adapters.client import ClientError, Operator
from tierlog.adapters.client.runner import run_agents
from tierlog.adapters.settings import ENV_PREFIX
from tierlog.adapters.store.event_log import DEFAULT_STORE, store_env
from tierlog.adapters.tools import client_views as views

URL_ENV, TOKEN_ENV = f"{ENV_PREFIX}URL", f"{ENV_PREFIX}TOKEN"
DEFAULT_URL = "http://127.0.0.1:8000"
Command = Callable[[argparse.Namespace], int]


def server_url(args: argparse.Namespace) -> str:
    """``--url``, else ``TIERLOG_URL``, else the default."""
    return str(args.url or os.environ.get(URL_ENV) or DEFAULT_URL)


def token_file(store: str | None) -> Path:
    """Where ``serve`` keeps a generated operator token for ``store``: beside a SQLite
    log (``NAME.admin-token``), else ``./tierlog.admin-token``."""
    url = store or os.environ.get(f"{ENV_PREFIX}STORE") or DEFAULT_STORE
    env = store_env(url, create=False)
    if "SQLITE_DBNAME" in env:
        path = Path(env["SQLITE_DBNAME"])
        return path.with_name(path.stem + ".admin-token")
    return Path("tierlog.admin-token")


def operator_token(args: argparse.Namespace, required: bool = True) -> str | None:
    """``TIERLOG_TOKEN``, else ``TIERLOG_ADMIN_TOKEN``, else the kept token file."""
    for name in (TOKEN_ENV, f"{ENV_PREFIX}ADMIN_TOKEN"):
        if os.environ.get(name):
            return os.environ[name]
    path = token_file(getattr(args, "store", None))
    if path.exists():
        return path.read_text().strip()
    if required:
        raise ClientError(f"no operator token: set {TOKEN_ENV} (or keep it in {path})")
    return None


def _operator(args: argparse.Namespace, fresh: bool = True) -> Operator:
    """The client; with ``fresh`` its reads reflect the log as it is now (a command run
    right after another's write sees it, even if the read models were a moment behind)."""
    op = Operator(server_url(args), operator_token(args))
    if fresh:
        try:
            op.catch_up()
        except BaseException:
            op.close()
            raise
    return op


def _client_command(fn: Command) -> Command:
    """A command whose client errors are one line and exit 2."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except ClientError as exc:
            say(str(exc), args)
            return 2

    return run


def _emit(args: argparse.Namespace, data: Any, *shown: Any) -> int:
    """``data`` as JSON with ``--json``, else the rich renderables (or ``data`` as text)."""
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    out = views.console()
    for item in shown or (data,):
        out.print(item)
    return 0


# --- operator commands --------------------------------------------------------------


@_client_command
def cmd_submit(args: argparse.Namespace) -> int:
    """Submit one task."""
    fields: dict[str, Any] = {"priority": args.priority, "max_retries": args.max_retries}
    fields.update(
        complexity_tier=args.tier,
        needed_capabilities=args.capability or None,
        file_hints=args.file_hint or None,
        repo=args.repo,
        complete_by=args.complete_by,
        idempotency_key=args.idempotency_key,
        submitted_by=args.submitted_by,
    )
    if args.metadata is not None:
        try:
            fields["metadata"] = json.loads(args.metadata)
        except ValueError as exc:
            raise ClientError(f"--metadata is not JSON: {exc}") from None
    with _operator(args, fresh=False) as op:
        done = op.submit(args.description, **{k: v for k, v in fields.items() if v is not None})
    new = "submitted" if done.created else "already submitted (same idempotency key)"
    return _emit(args, done.__dict__, f"{new}: {done.task_id} ({done.state})")


@_client_command
def cmd_tasks(args: argparse.Namespace) -> int:
    """List tasks."""
    with _operator(args) as op:
        rows = op.tasks(state=args.state, tier=args.tier, limit=args.limit)
    return _emit(args, rows, views.tasks_table(rows))


@_client_command
def cmd_show(args: argparse.Namespace) -> int:
    """One task and its timeline."""
    with _operator(args) as op:
        task_id = op.resolve(args.task_id)
        task, timeline = op.get(task_id), op.timeline(task_id)
    return _emit(args, {"task": task, "timeline": timeline}, *views.task_detail(task, timeline))


@_client_command
def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a task."""
    with _operator(args) as op:
        task_id = op.resolve(args.task_id)
        position = op.cancel(task_id, args.reason)
    data = {"task_id": task_id, "position": position}
    return _emit(args, data, f"cancelled {task_id} (log position {position})")


@_client_command
def cmd_offline(args: argparse.Namespace) -> int:
    """Mark an agent offline (its task, if any, goes back to the queue)."""
    with _operator(args) as op:
        position = op.mark_agent_offline(args.agent_id, args.reason)
    data = {"agent_id": args.agent_id, "position": position}
    return _emit(args, data, f"agent {args.agent_id} is offline (log position {position})")


@_client_command
def cmd_remove_endpoint(args: argparse.Namespace) -> int:
    """Take an endpoint out of routing."""
    with _operator(args) as op:
        position = op.deregister_endpoint(args.endpoint_id)
    data = {"endpoint_id": args.endpoint_id, "position": position}
    return _emit(args, data, f"endpoint {args.endpoint_id} removed (log position {position})")


@_client_command
def cmd_retry(args: argparse.Namespace) -> int:
    """Put a dead-lettered task back in the queue."""
    with _operator(args) as op:
        task_id = op.resolve(args.task_id)
        position = op.retry(task_id)
    data = {"task_id": task_id, "position": position}
    return _emit(args, data, f"requeued {task_id} (log position {position})")


@_client_command
def cmd_queue(args: argparse.Namespace) -> int:
    """The queue in order."""
    with _operator(args) as op:
        page = op.queue(limit=args.limit)
    return _emit(args, page, views.queue_table(page))


@_client_command
def cmd_agents(args: argparse.Namespace) -> int:
    """The registered agents."""
    with _operator(args) as op:
        rows = op.agents()
    return _emit(args, rows, views.agents_table(rows))


@_client_command
def cmd_endpoints(args: argparse.Namespace) -> int:
    """The endpoints."""
    with _operator(args) as op:
        rows = op.endpoints()
    return _emit(args, rows, views.endpoints_table(rows))


@_client_command
def cmd_status(args: argparse.Namespace) -> int:
    """One screen: log head, lag, queue by tier, agents by state, endpoints, timers."""
    with _operator(args) as op:
        summary = views.status_summary(op.health(), op.telemetry(), op.agents(), op.endpoints())
    return _emit(args, summary, views.status_table(summary))


@_client_command
def cmd_tail(args: argparse.Namespace) -> int:
    """The last events of the log; with ``--follow`` every one appended after them."""
    with _operator(args, fresh=False) as op:
        head = op.head()
        after = args.after if args.after is not None else max(0, head - args.lines)
        events = op.follow(after) if args.follow else _until(op, after, head)
        try:
            for event in events:
                line = json.dumps(event, default=str) if args.json else views.event_line(event)
                print(line, flush=True)
        except KeyboardInterrupt:
            return 0
    return 0


def _until(op: Operator, after: int, head: int) -> Any:
    """The events after ``after`` up to ``head``, page by page."""
    while after < head:
        page = op.log(after=after, limit=1000)
        for event in page["events"]:
            if int(event["position"]) > head:
                return
            yield event
        if not page["events"]:
            return
        after = int(page["next_after"])


# --- the agent runner ---------------------------------------------------------------


@_client_command
def cmd_agent(args: argparse.Namespace) -> int:
    """Run a program as one or more agents until SIGTERM/SIGINT (or ``--max-tasks``)."""
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ClientError("tierlog agent needs a command after --")
    logging.basicConfig(level=logging.INFO, format="tierlog agent: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    token_path = Path(args.token_file) if args.token_file else None
    try:
        stats = run_agents(
            server_url(args),
            args.id,
            command,
            concurrency=args.concurrency,
            operator_token=operator_token(args, required=False),
            token_file=token_path,
            capabilities=args.capability or (),
            ollama_host=args.ollama_host,
            max_tasks=args.max_tasks,
        )
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    totals = {
        key: sum(getattr(s, key) for s in stats)
        for key in ("completed", "failed", "abandoned", "handed_back")
    }
    print(json.dumps(totals) if args.json else f"tierlog agent: stopped: {totals}", file=sys.stderr)
    return 0


# --- the parsers --------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help=f"the server (env {URL_ENV}; {DEFAULT_URL})")
    parser.add_argument(
        "--store",
        default=None,
        help="the log whose kept operator token to use when TIERLOG_TOKEN is not set",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _task_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task_id", help="a task id, or any unique start of one")


def add_commands(sub: Any) -> None:
    """Register the operator commands and ``tierlog agent`` on the CLI's subparsers."""
    _add_agent(sub)
    submit = sub.add_parser("submit", help="submit a task to a running server")
    submit.add_argument("description")
    submit.add_argument("--priority", choices=("urgent", "high", "normal", "low"))
    submit.add_argument("--tier", choices=("trivial", "standard", "complex", "unknown"))
    submit.add_argument("--capability", action="append", help="needed capability (repeatable)")
    submit.add_argument("--file-hint", action="append", help="a file hint (repeatable)")
    submit.add_argument("--repo")
    submit.add_argument("--metadata", help="a JSON object")
    submit.add_argument("--max-retries", type=int)
    submit.add_argument("--complete-by", help="a deadline, ISO 8601 with a time zone")
    submit.add_argument("--idempotency-key")
    submit.add_argument("--submitted-by")
    simple: list[tuple[str, str, Command]] = [
        ("queue", "the queue in order, with why each task waits", cmd_queue),
        ("agents", "the registered agents", cmd_agents),
        ("endpoints", "the LLM endpoints", cmd_endpoints),
        ("status", "log head, lag, queue, agents, endpoints, timers: one screen", cmd_status),
    ]
    tasks = sub.add_parser("tasks", help="list tasks")
    tasks.add_argument(
        "--state", choices=("queued", "assigned", "completed", "dead_lettered", "cancelled")
    )
    tasks.add_argument("--tier", choices=("trivial", "standard", "complex"))
    tasks.add_argument("--limit", type=positive, default=100)
    show = sub.add_parser("show", help="one task and its timeline")
    cancel = sub.add_parser("cancel", help="cancel a task")
    cancel.add_argument("--reason")
    retry = sub.add_parser("retry", help="requeue a dead-lettered task")
    for parser in (show, cancel, retry):
        _task_id(parser)
    offline = sub.add_parser("offline", help="mark an agent offline (its task is requeued)")
    offline.add_argument("agent_id")
    offline.add_argument("--reason", help="why (default: operator)")
    remove_endpoint = sub.add_parser("remove-endpoint", help="take an endpoint out of routing")
    remove_endpoint.add_argument("endpoint_id", help="host:port")
    tail = sub.add_parser("tail", help="the log's last events, one line each")
    tail.add_argument("--follow", "-f", action="store_true", help="then every new one")
    tail.add_argument("--lines", "-n", type=positive, default=20, help="how many (default 20)")
    tail.add_argument("--after", type=int, default=None, help="from this position instead")
    for parser, func in (
        (submit, cmd_submit),
        (tasks, cmd_tasks),
        (show, cmd_show),
        (cancel, cmd_cancel),
        (retry, cmd_retry),
        (offline, cmd_offline),
        (remove_endpoint, cmd_remove_endpoint),
        (tail, cmd_tail),
    ):
        _common(parser)
        parser.set_defaults(func=func)
    for name, text, func in simple:
        parser = sub.add_parser(name, help=text)
        _common(parser)
        if name == "queue":
            parser.add_argument("--limit", type=positive, default=100)
        parser.set_defaults(func=func)


def _add_agent(sub: Any) -> None:
    agent = sub.add_parser(
        "agent",
        help="run a program as an agent: tierlog agent --id ID -- COMMAND [ARGS...]",
        description="Each task's JSON goes to COMMAND's stdin (TIERLOG_TASK_ID, TIERLOG_TIER, "
        "TIERLOG_MODEL, TIERLOG_ENDPOINT in its environment); a JSON stdout completes the "
        "task, a non-zero exit fails it with the tail of stderr.",
    )
    agent.add_argument("--id", required=True, help="the agent id (ID-1..ID-N with --concurrency)")
    agent.add_argument("--token-file", help="agent tokens kept here (read, and written when new)")
    agent.add_argument("--concurrency", type=positive, default=1, help="agents in this process")
    agent.add_argument("--capability", action="append", help="a capability (repeatable)")
    agent.add_argument("--ollama-host", help="the Ollama host this agent sits beside")
    agent.add_argument(
        "--max-tasks", type=positive, help="each agent stops after this many tasks (default: never)"
    )
    _common(agent)
    agent.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    agent.set_defaults(func=cmd_agent)
