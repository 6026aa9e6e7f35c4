"""``serve``'s read models kept up to date by a process of their own
(``readside.runner_process``): they follow the writer's commits, come out as a rebuild
from the log, survive the child's death, and go back to a thread of serve when children
keep dying."""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tierlog.adapters import bootstrap
from tierlog.adapters.readside import runner_process
from tierlog.adapters.readside.catch_up_worker import settings_for_worker, usable_cores
from tierlog.adapters.readside.read_store import ReadStore
from tierlog.adapters.readside.runner_process import RunnerProcess, child_command, wants_process
from tierlog.adapters.settings import Settings
from tierlog.adapters.tools.bench_fleet import SPECS, submit_command
from tierlog.domain import commands as cmd
from tierlog.projections.registry import all_projections


def _dump(store: ReadStore) -> dict[str, list[tuple[object, ...]]]:
    tables = [t.name for p in all_projections() for t in p.tables]
    return {t: sorted(map(tuple, store.query(f"SELECT * FROM {t}")), key=repr) for t in tables}


def _until(done: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.01)


def _work(system: bootstrap.System, first: int, tasks: int) -> None:
    """``tasks`` agents and as many tasks, 25 of each per commit."""
    if first == 0:
        system.runtime.execute_batch([cmd.RegisterEndpoint(host="gpu-a", models=("llama3:8b",))])
    for start in range(first, first + tasks, 25):
        names = [f"agent-{n}" for n in range(start, start + 25)]
        system.runtime.execute_batch(
            [cmd.RegisterAgent(agent_id=name, capabilities=("python",)) for name in names]
        )
        system.runtime.execute_batch(
            [submit_command(SPECS[n % len(SPECS)]) for n in range(start, start + 25)]
        )


def _caught_up(system: bootstrap.System) -> None:
    _until(
        lambda: system.read_progress.committed_position == system.log.head(),
        "the read models' process reported the head of the log",
    )


@pytest.fixture
def system_with_child(store_url: str) -> Iterator[bootstrap.System]:
    system = bootstrap.build_system(Settings(store=store_url), runner_process=True)
    try:
        system.start_background()
        yield system
    finally:
        system.close()


def test_auto_means_a_process_when_two_cores_are_usable():
    assert wants_process(Settings(projection_process="auto")) == (usable_cores() >= 2)
    assert wants_process(Settings(projection_process="on"))
    assert not wants_process(Settings(projection_process="off"))


def test_the_read_models_follow_the_writer_from_another_process(system_with_child):
    system = system_with_child
    child = system.runner_process
    assert child is not None and child.pid is not None and child.pid != os.getpid()
    _until(lambda: child.status()["reported"], "the child's first report")
    assert system.read_progress.status() == {
        "in": "process",
        "pid": child.pid,
        "restarts": 0,
        "position": child.committed_position,
        "reported": True,
    }
    _work(system, 0, 100)
    _caught_up(system)
    # Nothing was folded here once started: the child did it.
    folded_here = system.runner.folded_from_store + system.runner.folded_from_handover
    live = _dump(system.runner.store)
    assert system.runner.position() == system.log.head()
    assert folded_here < system.log.head()
    system.close()
    rebuilt = bootstrap.build_runner(system.settings, bootstrap.open_log(system.settings))
    rebuilt.start()
    rebuilt.rebuild()
    assert _dump(rebuilt.store) == live
    rebuilt.close()
    rebuilt.log.close()


def test_a_killed_child_is_started_again_and_catches_up(system_with_child, caplog):
    system = system_with_child
    child = system.runner_process
    assert child is not None
    _work(system, 0, 50)
    _caught_up(system)
    first = child.pid
    assert first is not None
    with caplog.at_level(logging.WARNING):
        os.kill(first, signal.SIGKILL)
        _work(system, 50, 50)  # committed while no child runs
        _until(lambda: child.restarts == 1 and child.pid not in (None, first), "a new child")
        _caught_up(system)
    assert "exit code -9" in caplog.text
    assert not child.in_thread


def test_closing_stops_the_child(system_with_child):
    system = system_with_child
    child = system.runner_process
    assert child is not None and child._child is not None
    process = child._child
    system.close()
    assert process.returncode == 0


def test_children_that_keep_dying_leave_the_read_models_to_a_thread(
    sqlite_url, caplog, monkeypatch
):
    monkeypatch.setattr(runner_process, "RESTART_PAUSE_S", 0.05)
    settings = Settings(store=sqlite_url)
    system = bootstrap.build_system(settings)
    system.runner_process = RunnerProcess(
        settings, system.runner, command=lambda: [sys.executable, "-c", "raise SystemExit(3)"]
    )
    try:
        with caplog.at_level(logging.WARNING):
            system.start_background()
            _until(lambda: system.runner_process.in_thread, "the fall back to a thread")
            _work(system, 0, 50)
            _caught_up(system)
        assert "died 3 times in a row (exit code 3)" in caplog.text
        status = system.read_progress.status()
        assert status["in"] == "thread" and status["restarts"] == 2
    finally:
        system.close()


def test_the_child_stops_when_its_stdin_closes(sqlite_url):
    # As when serve dies: the pipe's other end closes, the child ends its batch and exits.
    settings = Settings(store=sqlite_url)
    system = bootstrap.build_system(settings)
    system.start()
    _work(system, 0, 25)
    head = system.log.head()
    system.close()
    child = subprocess.Popen(child_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(settings_for_worker(settings) + b"\n\n")
    child.stdin.flush()
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in child.stdout], daemon=True).start()
    try:
        reported = [int(lines.get(timeout=20))]
        while reported[-1] < head:
            reported.append(int(lines.get(timeout=20)))
        assert reported[-1] == head
        child.stdin.close()
        assert child.wait(20) == 0
    finally:
        child.kill()
        child.wait()


def test_closing_right_after_a_child_died_leaves_none_running(sqlite_url, monkeypatch):
    monkeypatch.setattr(runner_process, "RESTART_PAUSE_S", 0.0)  # the watch starts one at once
    system = bootstrap.build_system(Settings(store=sqlite_url), runner_process=True)
    try:
        system.start_background()
        child = system.runner_process
        assert child is not None and child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
    finally:
        system.close()
    assert child._child is not None and child._child.returncode is not None
    assert child.pid is None
