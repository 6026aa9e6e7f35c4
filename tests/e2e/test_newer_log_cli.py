"""An older tierlog meeting a log a newer one wrote: ``serve`` refuses to start and
``audit`` reports it, each in one line naming the event ("written by a newer tierlog
(TaskSubmitted@9)"), never with a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from releases import append_as_newer_release
from wiring import runtime_on

from tierlog.adapters.store.event_log import EventLog


def _tierlog(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("tierlog") or str(Path(sys.executable).with_name("tierlog"))
    env = {**os.environ, "TIERLOG_ADMIN_TOKEN": "operator-secret-token"}
    return subprocess.run(
        [exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("stored_name", "version", "topic"),
    [("TaskSubmitted", 9, "TaskSubmitted@9"), ("TaskPrioritised", 1, "TaskPrioritised")],
)
def test_serve_refuses_and_audit_reports_an_event_of_a_newer_release(
    tmp_path, stored_name, version, topic
):
    store = f"sqlite:///{tmp_path / 'log.db'}"
    log = EventLog(store)
    runtime_on(log).stop()  # this release's log: its configuration recorded
    log.close()
    position = append_as_newer_release(store, stored_name, version)
    said = f"written by a newer tierlog ({topic})"
    serve = _tierlog("serve", "--port", "0", "--store", store, cwd=tmp_path)
    assert serve.returncode == 2
    refusal = [line for line in serve.stderr.splitlines() if said in line]
    assert len(refusal) == 1 and refusal[0].startswith("tierlog: "), serve.stderr
    audit = _tierlog("audit", "--store", store, cwd=tmp_path)
    assert audit.returncode == 1
    [report] = [line for line in audit.stdout.splitlines() if said in line]
    assert report.strip().startswith(f"position {position} "), audit.stdout
    for output in (serve.stdout, serve.stderr, audit.stdout, audit.stderr):
        assert "Traceback" not in output
