"""``tierlog bench --restart`` at tiny sizes: the figures are there and sane, every task
of the flow completes, a kept log is reused (and left as it was) on the next run, and a
bench stopped with SIGTERM still stops its server and removes its working copy."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TINY = ("--log-events", "3000", "--flow-tasks", "300", "--live", "50")


def _bench(cwd: Path, *args: str) -> dict[str, Any]:
    exe = shutil.which("tierlog") or str(Path(sys.executable).with_name("tierlog"))
    done = subprocess.run(
        [exe, "bench", "--restart", "--json", *TINY, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


def test_restart_bench_reports_restart_time_memory_and_a_completed_flow(tmp_path):
    figures = _bench(tmp_path, "--repeats", "2")
    assert figures["log_events"] >= 3000
    assert figures["live_at_end"] == 50  # the generator kept its live set
    assert figures["failures"] > 0 and figures["tasks_completed"] > 0
    assert figures["first_start_s"] > 0 and figures["generate_s"] >= 0
    assert len(figures["restart_s_runs"]) == 2
    assert figures["restart_s"] > 0
    assert figures["rss_after_start_mb"] > 0 and figures["rss_end_mb"] > 0
    assert figures["rss_peak_mb"] >= figures["rss_after_start_mb"] > 0
    assert figures["flow_completed"] == figures["flow_tasks"] == 300
    assert figures["flow_all_completed"] is True
    assert figures["flow_submit_errors"] == 0 and figures["flow_poll_errors"] == 0
    assert figures["flow_failures"] > 0  # some tasks failed once and were done later
    assert figures["flow_repeated_keys_answered_200"] > 0
    assert figures["flow_s"] > 0 and figures["flow_tasks_per_s"] > 0
    growth = figures["rss_end_mb"] - figures["rss_flow_start_mb"]
    assert abs(figures["rss_growth_mb"] - growth) < 0.15  # each figure rounded on its own
    assert set(figures["meets_targets"]) == {"restart_s", "rss_after_start_mb", "rss_growth_mb"}
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_a_kept_log_is_reused_unchanged(tmp_path):
    keep = tmp_path / "kept"
    first = _bench(tmp_path, "--repeats", "1", "--keep", str(keep))
    assert first["reused_kept_log"] is False
    kept = {p.name: p.stat().st_size for p in keep.iterdir()}
    assert set(kept) == {"restart.db", "bench-restart.json"}  # the work ran on a copy
    second = _bench(tmp_path, "--repeats", "1", "--keep", str(keep))
    assert second["reused_kept_log"] is True
    assert second["log_events"] == first["log_events"]
    assert second["flow_all_completed"] is True
    assert {p.name: p.stat().st_size for p in keep.iterdir()} == kept


def test_a_terminated_bench_stops_its_server_and_removes_its_working_copy(tmp_path):
    keep = tmp_path / "kept"
    exe = shutil.which("tierlog") or str(Path(sys.executable).with_name("tierlog"))
    args = ["--log-events", "3000", "--flow-tasks", "100000", "--live", "50", "--repeats", "1"]
    bench = subprocess.Popen(
        [exe, "bench", "--restart", "--json", *args, "--keep", str(keep)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(keep.glob("bench-restart-*/restart-1.out")):  # the flow's server
            assert time.monotonic() < deadline and bench.poll() is None
            time.sleep(0.1)
        out = next(keep.glob("bench-restart-*/restart-1.out"))
        while "serving" not in out.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=60) != 0
    finally:
        if bench.poll() is None:
            bench.kill()
    assert sorted(p.name for p in keep.iterdir()) == ["bench-restart.json", "restart.db"]
