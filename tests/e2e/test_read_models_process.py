"""``tierlog serve`` keeps its read models in a process of its own: ``/healthz`` says
so, reads follow writes through it, and it goes away with serve, stopped or killed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from conftest import stop_server


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child that exited but was not reaped yet is a zombie: gone for our purpose.
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _read_models(server) -> dict:
    with server.client() as admin:
        return admin.get("/healthz").json()["read_models"]


def test_serve_folds_read_models_in_a_process_that_ends_with_it(sqlite_url, server_factory):
    server = server_factory(sqlite_url, TIERLOG_PROJECTION_PROCESS="on")
    status = _read_models(server)
    assert status["in"] == "process" and status["restarts"] == 0
    assert set(status) == {"in", "pid", "restarts", "position", "reported"}
    child = status["pid"]
    assert child not in (None, server.process.pid) and _alive(child)
    with server.client() as admin:
        made = admin.post("/v1/tasks", json={"description": "fix typo in README"}).json()
        read = admin.get(f"/v1/tasks/{made['task_id']}", params={"min_position": made["position"]})
    assert read.status_code == 200 and read.json()["task"]["task_id"] == made["task_id"]
    assert _read_models(server)["position"] >= made["position"]
    stop_server(server)
    assert server.process.returncode == 0
    assert _gone_within(child, 10), "the read models' process outlived serve's stop"


def test_the_read_models_process_ends_when_serve_is_killed(sqlite_url, server_factory):
    server = server_factory(sqlite_url, TIERLOG_PROJECTION_PROCESS="on")
    child = _read_models(server)["pid"]
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    assert _gone_within(child, 10), "the read models' process outlived a killed serve"


def test_off_keeps_them_in_serves_thread(sqlite_url, server_factory):
    server = server_factory(sqlite_url, TIERLOG_PROJECTION_PROCESS="off")
    status = _read_models(server)
    assert set(status) == {"in", "position"} and status["in"] == "thread"
    assert 0 < status["position"] <= server.log_length()
