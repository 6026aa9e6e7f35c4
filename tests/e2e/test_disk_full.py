"""Disk full under a running ``tierlog serve``: 503s with the documented body, other
connections unharmed, ``/healthz`` degraded, recovery by itself once space returns,
nothing acknowledged lost, the audit clean.

The log lives on a small tmpfs the test mounts (it needs root and a kernel that lets it
mount; elsewhere the test is skipped, saying why).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis

from tests.e2e.contract_calls import Crew, crew
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import events as ev

FS_SIZE = "12m"
DESCRIPTION = "summarise the incident report and list every follow-up; " * 30


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of ``FS_SIZE`` mounted for this test, unmounted after it."""
    if os.geteuid() != 0:
        pytest.skip("the disk-full test mounts a small tmpfs: run it as root")
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> Path:
    """Fill the file system holding ``folder`` to the last block; the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 1 << 14, 1 << 10, 64):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


class Load:
    """Clients submitting concurrently, each on its own kept-alive connection."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.acked: list[str] = []
        self.unavailable: list[httpx.Response] = []
        self.unexpected: list[str] = []
        self.lock = threading.Lock()

    def run(self, clients: int, per_client: int, stop_after_503: int) -> None:
        """Each client submits ``per_client`` tasks, or until this run has seen
        ``stop_after_503`` answers 503."""
        limit = len(self.unavailable) + stop_after_503
        threads = [
            threading.Thread(target=self._client, args=(per_client, limit)) for _ in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    def _client(self, count: int, limit_503: int) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as http:
            for _ in range(count):
                try:
                    answer = http.post("/v1/tasks", json={"description": DESCRIPTION})
                except httpx.HTTPError as exc:  # a reset connection: what must not happen
                    with self.lock:
                        self.unexpected.append(f"{type(exc).__name__}: {exc}")
                    continue
                with self.lock:
                    if answer.status_code in (200, 201):
                        self.acked.append(answer.json()["task_id"])
                    elif answer.status_code == 503:
                        self.unavailable.append(answer)
                    else:
                        self.unexpected.append(f"{answer.status_code}: {answer.text}")
                    if len(self.unavailable) >= limit_503:
                        return


def _health(url: str) -> dict[str, object]:
    body: dict[str, object] = httpx.get(url + "/healthz", timeout=10).json()
    return body


def _wait_for_status(url: str, status: str, within_s: float) -> dict[str, object]:
    deadline = time.monotonic() + within_s
    while True:
        body = _health(url)
        if body["status"] == status or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_disk_full_answers_503_and_recovers_with_nothing_lost(small_fs, tmp_path, server_factory):
    store = f"sqlite:///{small_fs / 'log.db'}"
    server = server_factory(store, output=tmp_path / "serve.log")
    load = Load(server.url, server.admin_token)
    load.run(clients=2, per_client=10, stop_after_503=1)
    assert not load.unavailable and not load.unexpected and len(load.acked) == 20

    filler = _fill(small_fs)
    # The WAL may still have room for some commits: drive submissions until the store
    # refuses, bounded.
    load.run(clients=4, per_client=400, stop_after_503=12)
    assert load.unexpected == []
    assert len(load.unavailable) >= 12, "the full disk never refused a commit"
    for answer in load.unavailable:
        body = answer.json()
        assert body["error"] == "storage_unavailable"
        assert body["field"] is None
        assert "disk is full" in body["message"] and "retry" in body["message"]
        assert answer.headers["Retry-After"] == "1"
    health = _health(server.url)
    assert health["status"] == "degraded"
    assert "disk is full" in str(health["reason"]) and health["since"]

    filler.unlink()
    recovered = _wait_for_status(server.url, "ok", within_s=15)
    assert recovered["status"] == "ok", recovered
    before = len(load.acked)
    load.run(clients=2, per_client=10, stop_after_503=1)
    assert not load.unexpected and len(load.acked) == before + 20

    server.process.terminate()
    assert server.process.wait(timeout=20) == 0
    log = EventLog(store)
    try:
        stored = [
            str(e.originator_id) for _, e in log.iter_events() if isinstance(e, ev.TaskSubmitted)
        ]
    finally:
        log.close()
    assert set(load.acked) <= set(stored), "an acknowledged task is missing from the log"
    assert len(stored) == len(set(stored))
    audit = subprocess.run(
        [str(Path(sys.executable).with_name("tierlog")), "audit", "--store", store],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "clean" in audit.stdout


def _dead_lettered(c: Crew) -> str:
    """A task of the crew's own that failed with no retries left."""
    agent_id = f"contract-dl-{c.me[-8:]}"
    answer = c.admin.post("/v1/agents", json={"agent_id": agent_id, "capabilities": ["dl"]})
    token = answer.json()["token"]
    body = {"description": "fix typo", "complexity_tier": "trivial", "max_retries": 0}
    c.admin.post("/v1/tasks", json={**body, "needed_capabilities": ["dl"]})
    agent = c.client(token)
    task = agent.get(f"/v1/agents/{agent_id}/assignment", params={"wait": 10}).json()
    failed = agent.post(
        f"/v1/tasks/{task['task_id']}/fail", json={"generation": task["generation"], "error": "x"}
    )
    assert failed.json()["detail"]["state"] == "dead_lettered", failed.text
    return str(task["task_id"])


def test_every_write_answers_its_declared_503_on_a_full_disk(small_fs, tmp_path, server_factory):
    """Each operation that declares 503 answers it, with the declared body, while the
    store cannot take a write (the other declared errors: test_schemathesis.py)."""
    server = server_factory(f"sqlite:///{small_fs / 'log.db'}", output=tmp_path / "serve.log")
    api = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    declared = {
        (method.upper(), path)
        for path, operations in api.raw_schema["paths"].items()
        for method, operation in operations.items()
        if "503" in operation["responses"]
    }
    admin = server.client()
    c = crew(server.url, admin)
    try:
        retry_me = _dead_lettered(c)
        mine = c.client(c.my_token)
        held, gen = c.held["task_id"], c.held["generation"]
        endpoint = "/v1/endpoints/contract-gpu:11434"
        body = {"host": "contract-gpu", "port": 11434, "models": ["llama3"]}
        assert admin.put(endpoint, json=body).status_code == 200
        assert admin.post(endpoint + "/health", json={"ok": True}).status_code == 200
        calls = {
            ("POST", "/v1/tasks"): lambda: admin.post("/v1/tasks", json={"description": "x"}),
            ("POST", "/v1/tasks/batch"): lambda: admin.post(
                "/v1/tasks/batch", json={"tasks": [{"description": "x"}, {"description": "y"}]}
            ),
            ("POST", "/v1/tasks/{task_id}/cancel"): lambda: admin.post(
                f"/v1/tasks/{c.queued}/cancel"
            ),
            ("POST", "/v1/tasks/{task_id}/retry"): lambda: admin.post(
                f"/v1/tasks/{retry_me}/retry"
            ),
            ("POST", "/v1/tasks/{task_id}/complete"): lambda: mine.post(
                f"/v1/tasks/{held}/complete", json={"generation": gen}
            ),
            ("POST", "/v1/tasks/{task_id}/fail"): lambda: mine.post(
                f"/v1/tasks/{held}/fail", json={"generation": gen, "error": "x"}
            ),
            ("POST", "/v1/agents/{agent_id}/heartbeat"): lambda: mine.post(
                f"/v1/agents/{c.me}/heartbeat", json={"task_id": held, "generation": gen}
            ),
            ("POST", "/v1/agents"): lambda: admin.post("/v1/agents", json={"agent_id": "late"}),
            ("DELETE", "/v1/agents/{agent_id}"): lambda: admin.delete(f"/v1/agents/{c.them}"),
            ("POST", "/v1/agents/{agent_id}/offline"): lambda: admin.post(
                f"/v1/agents/{c.me}/offline"
            ),
            ("DELETE", "/v1/endpoints/{endpoint_id}"): lambda: admin.delete(endpoint),
            ("PUT", "/v1/endpoints/{endpoint_id}"): lambda: admin.put(
                "/v1/endpoints/late:1", json={"host": "late", "port": 1}
            ),
            ("POST", "/v1/endpoints/{endpoint_id}/health"): lambda: admin.post(
                endpoint + "/health", json={"ok": False}
            ),
            ("POST", "/v1/endpoints/{endpoint_id}/resources"): lambda: admin.post(
                endpoint + "/resources", json={"cpu_percent": 50}
            ),
        }
        assert set(calls) == declared
        filler = _fill(small_fs)
        load = Load(server.url, server.admin_token)
        load.run(clients=2, per_client=400, stop_after_503=2)  # until the store refuses
        assert len(load.unavailable) >= 2, "the full disk never refused a commit"
        for (method, path), call in sorted(calls.items()):
            answer = call()
            assert answer.status_code == 503, (method, path, answer.text)
            api[path][method].validate_response(answer)
            assert answer.json()["error"] == "storage_unavailable"
            assert answer.headers["Retry-After"] == "1"
        filler.unlink()
    finally:
        c.close()
        admin.close()
