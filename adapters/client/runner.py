"""The agent runner: any program as an agent (``tierlog agent -- COMMAND ...``).

For each task the command runs once: the task's JSON on its stdin, ``TIERLOG_TASK_ID``,
``TIERLOG_TIER``, ``TIERLOG_MODEL`` and ``TIERLOG_ENDPOINT`` in its environment. Exit 0
completes the task with its stdout (parsed as JSON; other text is sent as a string,
nothing as null); another exit status fails it with the tail of its stderr. A task that
is cancelled or reclaimed meanwhile, or a stop, kills the command.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tierlog.adapters.client.agent import Agent
from tierlog.adapters.client.agent_base import AgentStats, log, stop_on_signals
from tierlog.adapters.client.errors import ClientError, TaskFailure
from tierlog.adapters.client.task import Task

STDERR_TAIL_CHARS = 4000


class CommandFailed(TaskFailure):
    """The command exited with a non-zero status; the text is the tail of its stderr."""


def task_environment(task: Task) -> dict[str, str]:
    """The variables a command is given about its task (empty ones left out)."""
    given = {
        "TIERLOG_TASK_ID": task.task_id,
        "TIERLOG_GENERATION": str(task.generation),
        "TIERLOG_TIER": task.tier,
        "TIERLOG_MODEL": task.model,
        "TIERLOG_ENDPOINT": task.endpoint,
    }
    return {key: value for key, value in given.items() if value}


SECRETS = ("TIERLOG_TOKEN", "TIERLOG_ADMIN_TOKEN", "TIERLOG_VIEWER_TOKEN")


def inherited_environment() -> dict[str, str]:
    """This process's environment less the tokens: the command runs a task, it does not
    get to act as the operator."""
    return {k: v for k, v in os.environ.items() if k not in SECRETS}


def parse_output(stdout: str) -> Any:
    """A command's result: its stdout as JSON, else the text itself (None if empty)."""
    text = stdout.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def command_handler(command: Sequence[str]) -> Callable[[Task], Any]:
    """A handler that runs ``command`` for each task (see the module's docstring)."""

    def handle(task: Task) -> Any:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**inherited_environment(), **task_environment(task)},
            text=True,
            start_new_session=True,  # its own process group: a kill reaches its children
        )
        task.on_stop(lambda: _kill(process))
        stdout, stderr = process.communicate(json.dumps(task.data))
        if task.cancelled:
            raise CommandFailed(f"stopped: {task.stop_reason}")
        if process.returncode != 0:
            tail = stderr.strip()[-STDERR_TAIL_CHARS:]
            raise CommandFailed(tail or f"{command[0]} exited with status {process.returncode}")
        return parse_output(stdout)

    return handle


def _kill(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


class TokenFile:
    """Agents' tokens kept in one owner-only JSON file (``{agent id: token}``); a file
    holding one bare token is read as the token of the first agent."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def read(self) -> dict[str, str]:
        """The tokens kept so far (none without a file)."""
        if self.path is None or not self.path.exists():
            return {}
        text = self.path.read_text().strip()
        try:
            data = json.loads(text)
        except ValueError:
            return {"": text} if text else {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def token_for(self, agent_id: str, first: bool) -> str | None:
        """The kept token of ``agent_id`` (a bare token counts for the first agent)."""
        kept = self.read()
        return kept.get(agent_id) or (kept.get("") if first else None)

    def keep(self, agent_id: str, token: str) -> None:
        """Record a newly issued token (written whole, owner-only, then renamed)."""
        if self.path is None:
            return
        with self._lock:
            kept = {k: v for k, v in self.read().items() if k}
            kept[agent_id] = token
            temporary = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(kept, handle, indent=2)
            os.replace(temporary, self.path)


def agent_ids(agent_id: str, concurrency: int) -> list[str]:
    """The ids of ``concurrency`` agents named after ``agent_id`` (``ID-1``, ``ID-2``, ...;
    one agent keeps the id as it is)."""
    return (
        [agent_id] if concurrency == 1 else [f"{agent_id}-{n}" for n in range(1, concurrency + 1)]
    )


def run_agents(
    url: str,
    agent_id: str,
    command: Sequence[str],
    *,
    concurrency: int = 1,
    operator_token: str | None = None,
    token_file: Path | None = None,
    capabilities: Sequence[str] = (),
    ollama_host: str | None = None,
    max_tasks: int | None = None,
) -> list[AgentStats]:
    """Run ``concurrency`` agents (threads of this process) over ``command`` until
    SIGTERM or SIGINT, or until each has settled ``max_tasks`` tasks; each agent's
    counters."""
    tokens = TokenFile(token_file)
    handler = command_handler(command)
    agents = []
    for n, name in enumerate(agent_ids(agent_id, concurrency)):
        token = tokens.token_for(name, first=n == 0)
        if token is None and operator_token is None:
            raise ValueError(
                f"agent {name} has no token: give --token-file with its token, "
                "or the operator token (TIERLOG_TOKEN) to register it"
            )
        agents.append(
            Agent(
                url,
                name,
                token=token,
                operator_token=operator_token,
                capabilities=tuple(capabilities),
                ollama_host=ollama_host,
                on_token=lambda new, name=name: tokens.keep(name, new),
            )
        )
    stats: list[AgentStats] = []
    errors: list[ClientError] = []

    def stop_all() -> None:
        for a in agents:
            a.stop()

    def work(agent: Agent) -> None:
        try:
            stats.append(agent.run(handler, handle_signals=False, max_tasks=max_tasks))
        except ClientError as exc:  # e.g. a token the server does not know: all stop
            errors.append(exc)
            stop_all()

    threads = [threading.Thread(target=work, args=(a,), name=a.agent_id) for a in agents]

    with stop_on_signals(stop_all):
        for thread in threads:
            thread.start()
        log.info("%d agent(s) running %s", len(agents), " ".join(command))
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)  # joined in slices so the main thread takes signals
    if errors:
        raise errors[0]
    return stats
