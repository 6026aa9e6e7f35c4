"""The installed ``tierlog`` command, run as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tierlog.adapters.store.event_log import EventLog


def _tierlog(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("tierlog") or str(Path(sys.executable).with_name("tierlog"))
    return subprocess.run(
        [exe, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def test_demo_runs_on_a_fresh_log_and_summarises(tmp_path):
    done = _tierlog("demo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for heading in (
        "tasks by state and tier",
        "fallback timers: started=",
        "reclaims:",
        "dead letters:",
        "events in the log:",
        "log: tierlog-demo.db",
    ):
        assert heading in out
    log = EventLog(f"sqlite:///{tmp_path / 'tierlog-demo.db'}")
    assert log.head() > 1000
    log.close()
    assert not (tmp_path / "tierlog.db").exists()  # the file `serve` uses by default


def test_demo_never_uses_the_store_serve_uses(tmp_path):
    """Not the default ./tierlog.db, nor TIERLOG_STORE (the variable `serve` reads):
    a server started there after the demo would hand real tasks to phantom agents."""
    serves = f"sqlite:///{tmp_path / 'serve.db'}"
    done = _tierlog("demo", "--tasks", "5", cwd=tmp_path, env={"TIERLOG_STORE": serves})
    assert done.returncode == 0, done.stderr
    assert "log: tierlog-demo.db" in done.stdout
    assert not (tmp_path / "serve.db").exists() and not (tmp_path / "tierlog.db").exists()
    explicit = _tierlog("demo", "--tasks", "5", "--store", serves, cwd=tmp_path)
    assert explicit.returncode == 0, explicit.stderr
    assert (tmp_path / "serve.db").exists()  # --store is the user's own choice


def test_demo_json_covers_the_fleet_scenario(tmp_path):
    done = _tierlog(
        "demo",
        "--json",
        "--store",
        f"sqlite:///{tmp_path / 'd.db'}",
        "--tasks",
        "220",
        "--seed",
        "7",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    t = report["telemetry"]
    assert report["tasks"] >= 200
    assert set(t["assignments_by_target"]) == {"sidecar", "ollama", "claude"}
    assert t["timers"]["fired"] > 0 and sum(t["timers"]["cancelled"].values()) > 0
    assert t["reclaims"].get("lease_expired", 0) >= 1
    assert t["retries"] > 0


def test_second_demo_run_writes_a_new_log_beside_the_first(tmp_path):
    assert _tierlog("demo", "--tasks", "20", cwd=tmp_path).returncode == 0
    second = _tierlog("demo", "--tasks", "20", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "tierlog-demo-2.db" in second.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("demo", "--tasks", "0"), "at least one task"),
        (("demo", "--store", "mysql://nowhere"), "unknown store"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(tmp_path, args, message):
    done = _tierlog(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr


def test_bench_json_reports_ratios(tmp_path):
    done = _tierlog(
        "bench",
        "--json",
        *("--events", "2000", "--tasks", "500", "--repeats", "1", "--mix-events", "3000"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["append"]["ratio_median"] > 0
    assert figures["submit_to_assigned"]["tasks_per_s_median"] > 0
    assert figures["peak_rss_mb"] > 0
    # The read side beside the writer, on the same events, in the same run.
    for part in ("runner", "runner_mix"):
        runner = figures[part]
        assert runner["events"] > 500
        for rate in ("writer", "runner_handover", "runner_store"):
            assert runner[f"{rate}_events_per_s_median"] > 0
    assert figures["runner_to_writer_ratio"] == min(
        figures["runner"]["runner_to_writer_ratio"], figures["runner_mix"]["runner_to_writer_ratio"]
    )
    assert figures["writer_events_per_s"] == figures["runner"]["writer_events_per_s_median"]


def test_bench_audit_reports_throughput_memory_and_at_on_a_small_log(tmp_path):
    done = _tierlog("bench", "--audit", "--log-events", "5000", "--repeats", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["events"] >= 5000
    assert figures["audit_clean"] is True
    assert len(figures["audit_events_per_s_runs"]) == 1
    assert figures["audit_events_per_s_median"] > 0
    assert figures["read_chain_decode_events_per_s"] > figures["audit_events_per_s_median"]
    assert figures["audit_peak_rss_mb"] > 0
    assert figures["at_middle_seconds_median"] >= 0
    # serve's first start on such a log without read models, until /healthz says lag 0.
    assert figures["first_start_events"] >= 5000
    assert 0 < figures["first_start_s"] < 120
    assert figures["first_start_target_s"] == 20.0
    # Audits from the seal after new events (issue #16): every one went on from a seal.
    assert figures["reaudit_clean_and_resumed"] is True
    assert len(figures["reaudit_s_runs"]) == 3 and figures["reaudit_s"] > 0


def test_project_rebuild_reports_positions_and_zero_lag(tmp_path):
    store = f"sqlite:///{tmp_path / 'p.db'}"
    assert _tierlog("demo", "--tasks", "30", "--store", store, cwd=tmp_path).returncode == 0
    done = _tierlog("project", "--rebuild", "--json", "--store", store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    head = EventLog(store).head()
    assert report["applied"] == head
    assert set(report["positions"].values()) == {head}
    assert set(report["lag"].values()) == {0}


def test_audit_exit_codes_clean_violations_unreadable(tmp_path):
    import sqlite3

    store = f"sqlite:///{tmp_path / 'a.db'}"
    assert _tierlog("demo", "--tasks", "40", "--store", store, cwd=tmp_path).returncode == 0
    clean = _tierlog("audit", "--json", "--store", store, cwd=tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout)["clean"] is True
    with sqlite3.connect(tmp_path / "a.db") as conn:
        conn.execute("DROP TRIGGER stored_events_no_update")
        # One trailing space: the payload still decodes, but its bytes changed.
        conn.execute(
            "UPDATE stored_events SET state = CAST(CAST(state AS TEXT) || ' ' AS BLOB)"
            " WHERE rowid = 7"
        )
    dirty = _tierlog("audit", "--json", "--store", store, cwd=tmp_path)
    assert dirty.returncode == 1
    violations = json.loads(dirty.stdout)["violations"]
    assert violations[0]["position"] == 7 and violations[0]["rule"] == "record_changed"
    missing = _tierlog("audit", "--store", f"sqlite:///{tmp_path / 'absent.db'}", cwd=tmp_path)
    assert missing.returncode == 2 and "no log" in missing.stderr


def test_audit_finds_a_read_model_that_differs_from_a_rebuild(tmp_path):
    import sqlite3

    store = f"sqlite:///{tmp_path / 'r.db'}"
    assert _tierlog("demo", "--tasks", "30", "--store", store, cwd=tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "r.read.db") as conn:
        conn.execute("UPDATE rm_tasks SET state = 'completed' WHERE rowid = 3")
        conn.execute("UPDATE rm_tasks SET retry_count = retry_count + 7 WHERE rowid = 4")
    done = _tierlog("audit", "--json", "--store", store, cwd=tmp_path)
    assert done.returncode == 1
    rules = {(v["rule"], v["aggregate_id"]) for v in json.loads(done.stdout)["violations"]}
    assert ("projections_match", "rm_tasks") in rules


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("at", "--time", "2026-01-01T00:00:00"), "time zone"),
        (("at", "--time", "yesterday"), "neither a position"),
        (("at", "--position", "5", "--task", "not-a-uuid"), "--task must be"),
        (("explain", "not-a-uuid"), "TASK_ID must be"),
        (("explain", "00000000-0000-4000-8000-000000000000"), "no task"),
        (("whatif",), "needs --config"),
        (("diff", "3", "soon"), "neither a position"),
    ],
)
def test_time_travel_commands_refuse_bad_arguments_clearly(tmp_path, args, message):
    store = f"sqlite:///{tmp_path / 't.db'}"
    assert _tierlog("demo", "--tasks", "10", "--store", store, cwd=tmp_path).returncode == 0
    head = EventLog(store).head()
    done = _tierlog(*args, "--store", store, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert EventLog(store).head() == head  # nothing appended


@pytest.mark.parametrize(
    "args",
    [
        ("audit",),
        ("at", "--position", "1"),
        ("diff", "1", "2"),
        ("explain", "00000000-0000-4000-8000-000000000000"),
        ("project",),
        ("demo",),
        ("bench",),
    ],
)
def test_config_is_refused_by_the_commands_that_do_not_read_it(tmp_path, args):
    (tmp_path / "x.toml").write_text("lease_s = 30\n")
    done = _tierlog(*args, "--config", "x.toml", cwd=tmp_path)
    assert done.returncode == 2
    assert "unrecognized arguments: --config" in done.stderr
    assert not (tmp_path / "tierlog.db").exists()  # refused before anything ran


def test_whatif_reads_its_config(tmp_path):
    store = f"sqlite:///{tmp_path / 'w.db'}"
    assert _tierlog("demo", "--tasks", "20", "--store", store, cwd=tmp_path).returncode == 0
    (tmp_path / "new.toml").write_text("claude_enabled = false\n")
    done = _tierlog("whatif", "--json", "--config", "new.toml", "--store", store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tasks_considered"] > 0
    (tmp_path / "bad.toml").write_text("lease_s = -1\n")
    bad = _tierlog("whatif", "--config", "bad.toml", "--store", store, cwd=tmp_path)
    assert bad.returncode == 2 and "tierlog: invalid setting lease_s" in bad.stderr


def test_serve_reads_its_config_under_the_flags_and_environment(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    (tmp_path / "serve.toml").write_text(f'host = "127.0.0.1"\nport = {port}\nlease_s = 45\n')
    exe = shutil.which("tierlog") or str(Path(sys.executable).with_name("tierlog"))
    env = {**os.environ, "TIERLOG_ADMIN_TOKEN": "from-the-environment"}
    store = f"sqlite:///{tmp_path / 's.db'}"
    proc = subprocess.Popen(
        [exe, "serve", "--config", "serve.toml", "--store", store],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline, line = time.monotonic() + 30, ""
        while "serving on" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line  # the port came from the file
        assert "from-the-environment" not in line
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 200
        answer = httpx.get(
            f"http://127.0.0.1:{port}/v1/queue",
            headers={"Authorization": "Bearer from-the-environment"},
            timeout=5,
        )
        assert answer.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    recorded = [
        e.config
        for _, e in EventLog(store).iter_events()
        if type(e).__name__ == "SchedulerConfigured"
    ]
    assert [c.lease_s for c in recorded] == [45.0]


def test_serve_refuses_a_bad_config_file_before_it_starts(tmp_path):
    (tmp_path / "bad.toml").write_text("surprise = 1\n")
    store = f"sqlite:///{tmp_path / 'b.db'}"
    done = _tierlog("serve", "--config", "bad.toml", "--store", store, cwd=tmp_path)
    assert done.returncode == 2
    assert "tierlog: unknown keys in bad.toml: surprise" in done.stderr
    assert not (tmp_path / "b.db").exists()


def test_at_diff_explain_print_tables_and_json(tmp_path):
    store = f"sqlite:///{tmp_path / 'log.db'}"
    assert _tierlog("demo", "--tasks", "20", "--store", store, cwd=tmp_path).returncode == 0

    def both(*args: str) -> tuple[str, object]:
        table = _tierlog(*args, "--store", store, cwd=tmp_path)
        as_json = _tierlog(*args, "--json", "--store", store, cwd=tmp_path)
        assert table.returncode == 0 and as_json.returncode == 0, table.stderr + as_json.stderr
        assert "{'" not in table.stdout  # no raw Python dict
        return table.stdout, json.loads(as_json.stdout)

    table, state = both("at", "--position", "200")
    assert state["position"] == 200 and "tasks_by_state" in state["counters"]
    for name in ("state at position 200", "tasks by state", "timers pending", "agents"):
        assert name in table
    assert state["agents"][0]["agent_id"] in table

    table, changes = both("diff", "100", "300")
    assert changes["from"] == 100 and changes["to"] == 300 and changes["tasks_changed"]
    for name in ("from position 100 to 300", "tasks changed", "counter deltas", "task_id"):
        assert name in table
    task_id = changes["tasks_changed"][0]["task_id"]
    assert task_id in table

    table, story = both("explain", task_id)
    assert story[0]["event"] == "TaskSubmitted"
    for name in ("timeline", "position", "event", "detail", "TaskSubmitted", "TaskRouted"):
        assert name in table

    table, one = both("at", "--position", "300", "--task", task_id)
    assert one["task"]["task_id"] == task_id
    assert task_id in table and "route_tier" in table
