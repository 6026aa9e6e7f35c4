"""A real ``tierlog serve`` on 127.0.0.1 at a free port, and a real HTTP client."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

TOKEN = "operator-secret-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running server: its URL, store and operator token."""

    url: str
    store: str
    admin_token: str
    process: subprocess.Popen[str]

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def log_length(self) -> int:
        with self.client() as http:
            return int(http.get("/healthz").json()["log_head"])


def start_server(store: str, workdir: Path, output: Path | None = None, **env: str) -> Server:
    """Start ``tierlog serve`` and wait until it answers. Its output is piped (read it
    once it stopped) or, for a long run that logs a lot, written to ``output``."""
    port = free_port()
    exe = shutil.which("tierlog") or str(Path(sys.executable).with_name("tierlog"))
    environ = {**os.environ, "TIERLOG_ADMIN_TOKEN": TOKEN, **env}
    sink = subprocess.PIPE if output is None else output.open("a")
    try:
        process = subprocess.Popen(
            [exe, "serve", "--host", "127.0.0.1", "--port", str(port), "--store", store],
            cwd=workdir,
            env=environ,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    finally:
        if not isinstance(sink, int):
            sink.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = process.stdout.read() if process.stdout else output.read_text() if output else ""
            raise RuntimeError(f"tierlog serve exited: {said}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return Server(url, store, TOKEN, process)
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("tierlog serve did not answer within 30 s")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=5)


class Fleet:
    """The load: submitters and agents that follow the server from restart to restart
    and record only what the server acknowledged. Every 5xx answer is kept in
    ``server_errors`` too (a test whose server is never killed expects none)."""

    def __init__(self) -> None:
        self.url = ""
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.submitted: set[str] = set()  # task ids answered 201
        self.completed: set[tuple[str, int]] = set()  # (task id, generation) answered 200
        self.tokens: dict[str, str] = {}
        self.refused: list[str] = []  # answers that are neither success nor "server gone"
        self.server_errors: list[str] = []  # every 5xx, 503 included
        self.answers = 0  # HTTP answers received, of any status

    def _client(self, token: str) -> httpx.Client:
        return httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=5)

    def _answered(self, what: str, answer: httpx.Response) -> None:
        with self.lock:
            self.answers += 1
            if answer.status_code >= 500:
                self.server_errors.append(f"{what} {answer.status_code}: {answer.text}")

    def register(self, http: httpx.Client, agent_id: str) -> str | None:
        """Register ``agent_id`` with the operator's client; its token, None if refused."""
        answer = http.post(self.url + "/v1/agents", json={"agent_id": agent_id})
        self._answered("register", answer)
        if answer.status_code != 201:
            self.refused.append(f"register {answer.status_code}: {answer.text}")
            return None
        token = str(answer.json()["token"])
        with self.lock:
            self.tokens[agent_id] = token
        return token

    def submitter(self, name: str) -> None:
        with self._client(TOKEN) as http:
            n = 0
            while not self.stop.is_set():
                n += 1
                body = {"description": f"fix typo {name}-{n}", "complexity_tier": "trivial"}
                try:
                    answer = http.post(self.url + "/v1/tasks", json=body)
                except httpx.HTTPError:  # killed mid-request: not acknowledged
                    time.sleep(0.02)
                    continue
                self._answered("submit", answer)
                if answer.status_code == 201:
                    with self.lock:
                        self.submitted.add(answer.json()["task_id"])
                elif answer.status_code != 503:
                    self.refused.append(f"submit {answer.status_code}: {answer.text}")

    def _work_once(self, http: httpx.Client, agent_id: str, wait: float) -> None:
        """Poll for an assignment (up to ``wait`` s) and complete it."""
        answer = http.get(f"{self.url}/v1/agents/{agent_id}/assignment", params={"wait": wait})
        self._answered("poll", answer)
        if answer.status_code != 200:
            return
        task = answer.json()
        done = http.post(
            f"{self.url}/v1/tasks/{task['task_id']}/complete",
            json={"generation": task["generation"], "result": {"ok": True}},
        )
        self._answered("complete", done)
        if done.status_code == 200:
            with self.lock:
                self.completed.add((task["task_id"], task["generation"]))
        elif done.status_code not in (409, 503):  # 409: reclaimed meanwhile
            self.refused.append(f"complete {done.status_code}: {done.text}")

    def agent(self, agent_id: str) -> None:
        with self._client(self.tokens[agent_id]) as http:
            while not self.stop.is_set():
                try:
                    self._work_once(http, agent_id, 1)
                except httpx.HTTPError:
                    time.sleep(0.02)

    def newcomers(self, name: str, rounds: int = 3) -> None:
        """Agents that come and go: each registers, works ``rounds`` polls, leaves."""
        with self._client(TOKEN) as admin:
            n = 0
            while not self.stop.is_set():
                n += 1
                agent_id = f"{name}-{n}"
                try:
                    token = self.register(admin, agent_id)
                    if token is None:
                        continue
                    with self._client(token) as http:
                        for _ in range(rounds):
                            self._work_once(http, agent_id, 0.2)
                        left = http.delete(f"{self.url}/v1/agents/{agent_id}")
                        self._answered("leave", left)
                except httpx.HTTPError:
                    time.sleep(0.02)


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    """A ``Fleet`` (its threads are the test's to start; told to stop at the end)."""
    load = Fleet()
    yield load
    load.stop.set()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers (stopped at the end): ``server_factory(store_url, **env)``."""
    servers: list[Server] = []

    def make(store: str, output: Path | None = None, **env: str) -> Server:
        server = start_server(store, tmp_path, output, **env)
        servers.append(server)
        return server

    yield make
    for server in servers:
        stop_server(server)
