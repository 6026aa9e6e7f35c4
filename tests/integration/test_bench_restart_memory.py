"""The restart bench counts the memory of serve and of the processes it started, once
the read models' process is up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tierlog.adapters.tools.bench_restart import Server, descendants, read_side_settled, vm_rss_mb

# Started with a depth: starts itself one level down, and the last level says "ready".
_TREE = """\
import subprocess, sys, time
depth = int(sys.argv[1])
if depth:
    below = subprocess.Popen([sys.executable, __file__, str(depth - 1)])
else:
    print("ready", flush=True)
time.sleep(60)
"""


def test_serves_memory_adds_up_the_processes_it_started(tmp_path: Path) -> None:
    script = tmp_path / "tree.py"
    script.write_text(_TREE)
    parent = subprocess.Popen([sys.executable, script, "2"], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "ready"  # the grandchild's
        below = descendants(parent.pid)
        assert len(below) == 2
        server = Server(parent, "http://127.0.0.1:1", tmp_path / "out", 0.0)
        each = [vm_rss_mb(pid) for pid in (parent.pid, *below)]
        assert abs(server.rss_mb() - sum(each)) < 0.5 * min(each)
    finally:
        for pid in descendants(parent.pid):
            os.kill(pid, signal.SIGKILL)
        parent.kill()
        parent.wait()


def test_memory_is_read_once_the_read_models_process_stands_at_the_head() -> None:
    in_thread = {"log_head": 9, "read_models": {"in": "thread", "position": 7}}

    def child(pid: int | None, position: int, reported: bool) -> dict[str, object]:
        status = {"in": "process", "pid": pid, "position": position, "reported": reported}
        return {"log_head": 9, "read_models": status}

    assert read_side_settled(in_thread) and read_side_settled(child(42, 9, True))
    assert not read_side_settled(child(None, 9, False))  # not started yet
    assert not read_side_settled(child(42, 9, False))  # started, not heard from yet
    assert not read_side_settled(child(42, 7, True))  # behind
