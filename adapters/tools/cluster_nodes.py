"""Several ``tierlog serve`` processes on one PostgreSQL log, on 127.0.0.1 only.

What the cluster bench (and the multi-node tests) need to run nodes as an operator
would: a fresh schema, a node process with its environment and output file, waiting
for it to listen, asking its ``/healthz`` who leads, killing, pausing and stopping it.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tierlog.adapters.tools.bench_http import free_port

LEADER = "leader"
FOLLOWER = "follower"


def tierlog_exe() -> str:
    """The ``tierlog`` console script of this interpreter's environment."""
    return shutil.which("tierlog") or str(Path(sys.executable).with_name("tierlog"))


@functools.cache
def serve_takes_node_id() -> bool:
    """Whether this release's ``serve`` has ``--node-id`` (multi-node releases do)."""
    said = subprocess.run(
        [tierlog_exe(), "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    return "--node-id" in said.stdout


def new_schema(dsn: str, prefix: str = "cluster") -> str:
    """Create a fresh schema on the PostgreSQL server of ``dsn``; its store URL."""
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{dsn}?schema={schema}"


def drop_schema(url: str) -> None:
    """Drop the schema a store URL made by ``new_schema`` names."""
    import psycopg

    dsn, _, query = url.partition("?schema=")
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{query}" CASCADE')


@dataclass
class Node:
    """One ``tierlog serve`` process: its name, port, store and output file.

    A restarted node keeps its name and port, so clients' node lists stay valid.
    """

    name: str
    store: str
    output: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        """The node's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        """Whether the process runs (or is paused)."""
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        """The ``tierlog serve`` command line of this node."""
        args = [tierlog_exe(), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--store", self.store]
        if serve_takes_node_id():
            args += ["--node-id", self.name]
        return args

    def start(self) -> None:
        """Start the process (output appended to ``output``); do not wait for it."""
        with self.output.open("ab") as sink:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.output.parent,
                env={**os.environ, **self.env},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until ``/healthz`` answers; raise if the process exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"node {self.name} exited: {self.tail()}")
            if self.healthz() is not None:
                return
            time.sleep(0.05)
        raise RuntimeError(f"node {self.name} did not answer within {timeout_s:g} s")

    def healthz(self, timeout_s: float = 1.0) -> dict[str, Any] | None:
        """The node's ``/healthz`` answer, or None when it does not answer 200."""
        try:
            answer = httpx.get(self.url + "/healthz", timeout=timeout_s)
        except httpx.HTTPError:
            return None
        if answer.status_code != 200:
            return None
        body: dict[str, Any] = answer.json()
        return body

    def node_status(self) -> dict[str, Any] | None:
        """The ``node`` object of ``/healthz`` (role, epoch, leader), None without one."""
        health = self.healthz()
        status = None if health is None else health.get("node")
        return status if isinstance(status, dict) else None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process (SIGSTOP, SIGCONT, ...)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def kill(self) -> None:
        """kill -9, and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM (after SIGCONT, should it be paused); kill -9 after 15 s. Its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode

    def tail(self, chars: int = 2000) -> str:
        """The end of the node's output."""
        try:
            return self.output.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def start_nodes(
    store: str, count: int, workdir: Path, env: dict[str, str], prefix: str = "n"
) -> list[Node]:
    """``count`` nodes on ``store``: the first alone (it creates the tables), then the
    others together; each ready on return. Nodes already started are stopped if one
    fails to start."""
    nodes = [
        Node(f"{prefix}{i + 1}", store, workdir / f"{prefix}{i + 1}.out", env=dict(env))
        for i in range(count)
    ]
    try:
        nodes[0].start()
        nodes[0].wait_ready()
        for node in nodes[1:]:
            node.start()
        for node in nodes[1:]:
            node.wait_ready()
    except BaseException:
        stop_nodes(nodes)
        raise
    return nodes


def stop_nodes(nodes: Sequence[Node]) -> list[int | None]:
    """Stop every node (SIGTERM, then kill -9); their exit codes."""
    return [node.stop() for node in nodes]


def leader_of(nodes: Sequence[Node]) -> Node | None:
    """The node whose ``/healthz`` says it leads (None when none says so)."""
    for node in nodes:
        status = node.node_status()
        if status is not None and status.get("role") == LEADER:
            return node
    return None


def wait_for_leader(
    nodes: Sequence[Node], timeout_s: float, poll_s: float = 0.05
) -> tuple[Node, float] | None:
    """Poll until one of ``nodes`` answers ``/healthz`` with role leader: that node and
    the seconds it took, or None after ``timeout_s`` (at once when no node reports a
    role at all: a release without leader election)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        statuses = [(node, node.node_status()) for node in nodes]
        for node, status in statuses:
            if status is not None and status.get("role") == LEADER:
                return node, time.monotonic() - started
        answered = [node.healthz() is not None for node, status in statuses if status is None]
        if answered and all(answered) and len(answered) == len(statuses):
            return None  # every node answers, and none has a role: no election here
        time.sleep(poll_s)
    return None


def wait_caught_up(nodes: Sequence[Node], position: int, timeout_s: float = 10.0) -> bool:
    """Wait until every node's log head is at least ``position``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        heads = [(node.healthz() or {}).get("log_head", -1) for node in nodes]
        if all(isinstance(h, int) and h >= position for h in heads):
            return True
        time.sleep(0.05)
    return False
