"""The commands that talk to a running server, as a user runs them: ``tierlog agent --
COMMAND`` and every operator command with ``--json`` parsed, ``tail --follow`` live."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from waiting import wait_for

from tierlog.client import Operator

EXE = shutil.which("tierlog") or str(Path(sys.executable).with_name("tierlog"))

PROGRAM = """
import json, os, sys
task = json.load(sys.stdin)
if "explode" in task["description"]:
    print("starting", flush=True)
    sys.stderr.write("line one\\nthe parser exploded\\n")
    sys.exit(3)
print(json.dumps({"echo": task["description"], "task_id": os.environ["TIERLOG_TASK_ID"],
                  "tier": os.environ["TIERLOG_TIER"], "model": os.environ.get("TIERLOG_MODEL"),
                  "endpoint": os.environ.get("TIERLOG_ENDPOINT"),
                  "tokens": [k for k in os.environ if k.endswith("TOKEN")]}))
"""


def _env(server: Any, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERLOG_")}
    return {**env, "TIERLOG_URL": server.url, "TIERLOG_TOKEN": server.admin_token, **more}


def _run(server: Any, *args: str, code: int = 0, lines: bool = False) -> Any:
    done = subprocess.run(
        [EXE, *args], capture_output=True, text=True, env=_env(server), timeout=60
    )
    assert done.returncode == code, (args, done.stdout, done.stderr)
    return json.loads(done.stdout) if "--json" in args and code == 0 and not lines else done


def _wait(what: str, check: Any, timeout: float = 60.0) -> Any:
    return wait_for(what, check, timeout)


def test_the_agent_runner_completes_with_json_output_and_fails_with_stderr(
    store_url: str, server_factory: Any, tmp_path: Path
) -> None:
    server = server_factory(store_url)
    op = Operator(server.url, server.admin_token)
    op.register_endpoint("gpu1", 11434, ["llama3"])
    op.report_health("gpu1:11434", True, ["llama3"])
    token_file = tmp_path / "agent.tokens"
    runner = subprocess.Popen(
        [
            EXE,
            "agent",
            "--id",
            "runner",
            "--concurrency",
            "2",
            "--token-file",
            str(token_file),
            "--",
            sys.executable,
            "-c",
            PROGRAM,
        ],
        env=_env(server),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        good = op.submit("add tests for the parser module", complexity_tier="standard").task_id
        bad = op.submit("fix typo: explode", complexity_tier="trivial", max_retries=1).task_id
        done = _wait("the good task", lambda: (t := op.get(good))["state"] == "completed" and t)
        assert done["result"] == {
            "echo": "add tests for the parser module",
            "task_id": good,
            "tier": "standard",
            "model": "llama3",
            "endpoint": "gpu1:11434",
            "tokens": [],  # the operator's token stays with the runner
        }
        failed = _wait("the bad task", lambda: (t := op.get(bad))["state"] == "dead_lettered" and t)
        assert failed["last_error"] == "line one\nthe parser exploded"
        kept = json.loads(token_file.read_text())
        assert set(kept) == {"runner-1", "runner-2"}
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    finally:
        runner.send_signal(signal.SIGTERM)
        _, stderr = runner.communicate(timeout=20)
    assert runner.returncode == 0, stderr
    assert "'completed': 1, 'failed': 1" in stderr
    op.close()


def test_the_agent_runner_without_any_token_is_one_line_and_exit_2(
    sqlite_url: str, server_factory: Any
) -> None:
    server = server_factory(sqlite_url)
    env = _env(server)
    del env["TIERLOG_TOKEN"]
    done = subprocess.run(
        [EXE, "agent", "--id", "a", "--store", "sqlite:///nowhere/x.db", "--", "true"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("tierlog: agent a has no token") and done.stderr.count("\n") == 1


def test_every_operator_command_against_a_real_server(store_url: str, server_factory: Any) -> None:
    server = server_factory(store_url, TIERLOG_FALLBACK_WAIT_S="60")
    submitted = _run(server, "submit", "refactor the parser module", "--priority", "high", "--json")
    task_id = submitted["task_id"]
    assert submitted["created"] is True and submitted["state"] == "queued"
    again = _run(server, "submit", "fix typo", "--idempotency-key", "k1", "--json")
    same = _run(server, "submit", "fix typo", "--idempotency-key", "k1", "--json")
    assert same["task_id"] == again["task_id"] and same["created"] is False
    meta = _run(server, "submit", "x", "--metadata", '{"a": 1}', "--tier", "complex", "--json")

    tasks = _run(server, "tasks", "--json")
    assert [t["task_id"] for t in tasks] == [task_id, again["task_id"], meta["task_id"]]
    assert _run(server, "tasks", "--tier", "complex", "--limit", "1", "--json")[0]["task_id"] == (
        task_id
    )
    shown = _run(server, "show", task_id[-6:], "--json")
    assert shown["task"]["task_id"] == task_id
    assert [e["type"] for e in shown["timeline"]][:2] == ["TaskSubmitted", "TaskClassified"]
    queue = _run(server, "queue", "--json")
    assert {t["task_id"] for t in queue["tasks"]} == {task_id, again["task_id"], meta["task_id"]}

    with Operator(server.url, server.admin_token) as op:
        op.register_agent("worker", ["python"])
        op.register_endpoint("gpu1", 11434, ["llama3"])
    agents = _run(server, "agents", "--json")
    assert [a["agent_id"] for a in agents] == ["worker"]
    endpoints = _run(server, "endpoints", "--json")
    assert [(e["endpoint_id"], e["status"]) for e in endpoints] == [("gpu1:11434", "unknown")]

    # Tables show an id's end (ids made the same minute share their start); either a
    # unique start or a unique end names the task.
    cancelled = _run(server, "cancel", meta["task_id"][-8:], "--reason", "not needed", "--json")
    assert cancelled["task_id"] == meta["task_id"] and cancelled["position"] > 0
    shown = _run(server, "show", meta["task_id"][:18], "--json")
    assert shown["task"]["task_id"] == meta["task_id"]
    refused = _run(server, "retry", meta["task_id"], code=2)
    assert refused.stderr.startswith("tierlog: 409 invalid_transition") and refused.stdout == ""

    status = _run(server, "status", "--json")
    assert status["status"] == "ok" and status["log_head"] >= cancelled["position"]
    assert status["endpoints"] == {"gpu1:11434": "unknown"}
    assert sum(status["tasks_by_state"].values()) == 3
    assert status["tasks_by_state"].get("cancelled") == 1

    tail = _run(server, "tail", "-n", "3", "--json", lines=True)
    lines = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [e["position"] for e in lines] == list(
        range(status["log_head"] - 2, status["log_head"] + 1)
    )
    readable = _run(server, "tail", "-n", "2").stdout.splitlines()
    assert len(readable) == 2 and readable[-1].split()[0] == str(status["log_head"])

    # Mistakes are one line and exit 2.
    missing = _run(server, "show", "ffffffff", code=2)
    assert missing.stderr == (
        "tierlog: 404 not_found (id): no task id starts or ends with 'ffffffff'\n"
    )
    shared = _run(server, "show", "", code=2)
    assert shared.stderr.startswith("tierlog: 422 validation_error")
    dead = subprocess.run(
        [EXE, "status", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        env=_env(server),
        timeout=60,
    )
    assert dead.returncode == 2 and dead.stderr.startswith("tierlog: no answer from")


def test_tail_follow_shows_new_events_in_order_none_twice(
    store_url: str, server_factory: Any
) -> None:
    server = server_factory(store_url)
    with Operator(server.url, server.admin_token) as op:
        op.submit("fix typo before the tail")
        head = op.head()
        follower = subprocess.Popen(
            [EXE, "tail", "--follow", "-n", "1", "--json"],
            env=_env(server),
            stdout=subprocess.PIPE,
            text=True,
        )
        seen: list[dict[str, Any]] = []
        reader = threading.Thread(
            target=lambda: seen.extend(json.loads(line) for line in follower.stdout or [])
        )
        reader.start()
        try:
            _wait("the tail to start", lambda: seen)
            for n in range(30):
                op.submit(f"fix typo {n} after the tail")
            last = op.head()
            _wait("the tail to catch up", lambda: seen and seen[-1]["position"] >= last)
        finally:
            follower.terminate()
            follower.wait(10)
            reader.join(10)
        expected = [e["position"] for e in op.log(after=head - 1, limit=1000)["events"]]
    positions = [e["position"] for e in seen]
    assert positions == sorted(set(positions))  # in order, none twice
    assert positions == expected[: len(positions)] and positions[0] == head
    assert positions[-1] >= last


def test_offline_and_remove_endpoint_against_a_real_server(
    store_url: str, server_factory: Any
) -> None:
    server = server_factory(store_url)
    with Operator(server.url, server.admin_token) as op:
        op.register_agent("worker", ["python"])
        op.register_endpoint("gpu1", 11434, ["llama3"])
    offline = _run(server, "offline", "worker", "--reason", "maintenance", "--json")
    assert offline["agent_id"] == "worker" and offline["position"] > 0
    assert [a["status"] for a in _run(server, "agents", "--json")] == ["offline"]
    again = _run(server, "offline", "worker", code=2)
    assert again.stderr.startswith("tierlog: 409 invalid_transition")
    removed = _run(server, "remove-endpoint", "gpu1:11434", "--json")
    assert removed["position"] > offline["position"]
    assert all(e["status"] == "deregistered" for e in _run(server, "endpoints", "--json"))
    missing = _run(server, "remove-endpoint", "gpu1:11434", code=2)
    assert missing.stderr.startswith("tierlog: 404 not_found")
    with Operator(server.url, server.admin_token) as op:
        events = [e["type"] for e in op.log(after=offline["position"] - 1)["events"]]
    assert events == ["AgentWentOffline", "EndpointDeregistered"]


def test_the_agent_runner_stops_by_itself_after_max_tasks(
    store_url: str, server_factory: Any
) -> None:
    server = server_factory(store_url)
    with Operator(server.url, server.admin_token) as op:
        first = op.submit("fix typo in README", complexity_tier="trivial").task_id
        second = op.submit("fix typo in setup.py", complexity_tier="trivial").task_id
    runner = [EXE, "agent", "--id", "once", "--max-tasks", "1", "--json", "--"]
    done = subprocess.run(
        [*runner, sys.executable, "-c", PROGRAM],
        capture_output=True,
        text=True,
        env=_env(server),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stderr.splitlines()[-1])["completed"] == 1
    with Operator(server.url, server.admin_token) as op:
        op.catch_up()
        states = {t: op.get(t)["state"] for t in (first, second)}
    # The task assigned as the first completed went back to the queue as the agent left.
    assert sorted(states.values()) == ["completed", "queued"]
