"""The operator token: generated at first start, shown once, kept owner-only."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(workdir: Path, store: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    exe = shutil.which("tierlog") or str(Path(sys.executable).with_name("tierlog"))
    env = {k: v for k, v in os.environ.items() if k != "TIERLOG_ADMIN_TOKEN"}
    proc = subprocess.Popen(
        [exe, "serve", "--port", str(port), "--store", store],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "serving on" in line:
            return proc, "".join(lines)
    proc.kill()
    raise AssertionError("no 'serving on' line: " + "".join(lines))


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=15)


def test_generated_token_is_printed_once_and_kept_owner_only(tmp_path):
    store = f"sqlite:///{tmp_path / 'log.db'}"
    proc, first = _serve(tmp_path, store)
    _stop(proc)
    kept = tmp_path / "log.admin-token"
    token = kept.read_text().strip()
    assert f"shown once): {token}" in first
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    proc, second = _serve(tmp_path, store)
    try:
        assert token not in second and "operator token" not in second
        port = second.split("http://127.0.0.1:")[1].split(" ")[0]
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/tasks",
            headers={"Authorization": f"Bearer {token}"},
            json={"description": "fix typo in README"},
        )
        assert answer.status_code == 201
    finally:
        _stop(proc)
