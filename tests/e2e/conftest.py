"""A real ``tierlog serve`` on 127.0.0.1 at a free port, and a real HTTP client."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


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
    environ = {**os.environ, "TIERLOG_ADMIN_TOKEN": "operator-secret-token", **env}
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
                return Server(url, store, "operator-secret-token", process)
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
