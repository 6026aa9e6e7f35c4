"""Restarting a node beside a busy one on the same PostgreSQL schema: one ``tierlog
serve`` node under HTTP load (submitters, agents that poll and complete, agents that
register and leave), a second node on the same schema stopped and started again
``RESTARTS`` times (SIGTERM and SIGKILL in turn). Every start answers ``/healthz`` 200,
the busy node answers no 5xx, and writes sent to the restarted node succeed.
Bounded in restarts and in time: every one of the ``RESTARTS`` must be done within
``TIME_LIMIT_S`` (a start takes a few seconds on a quiet machine; the limit leaves room
for a slow one, and the test stops as soon as it is past it).
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

RESTARTS = 20
AGENTS = 3
SUBMITTERS = 2
TIME_LIMIT_S = 300.0


def _start_again(server_factory, url, output, what: str, failures: list[str]):
    """A started node; each start that fails (exits, or never answers) is kept in
    ``failures`` and tried again, up to three times."""
    for attempt in range(3):
        try:
            return server_factory(url, output=output)
        except RuntimeError as exc:
            failures.append(f"{what}, attempt {attempt + 1}: {str(exc).splitlines()[-1]}")
    raise AssertionError("\n".join(failures))


@pytest.mark.slow
@pytest.mark.postgres
def test_a_node_restarts_beside_a_busy_node_without_a_failure(
    tmp_path, pg_url, server_factory, fleet
):
    output = tmp_path / "serve.log"
    busy = server_factory(pg_url, output=tmp_path / "busy.log")
    fleet.url = busy.url
    with busy.client() as admin:
        for i in range(AGENTS):
            assert fleet.register(admin, f"agent-{i}") is not None, fleet.refused
    threads = (
        [threading.Thread(target=fleet.submitter, args=(f"s{i}",)) for i in range(SUBMITTERS)]
        + [threading.Thread(target=fleet.agent, args=(a,)) for a in list(fleet.tokens)]
        + [threading.Thread(target=fleet.newcomers, args=("newcomer",))]
    )
    for thread in threads:
        thread.start()
    failures: list[str] = []
    writes_elsewhere: list[int] = []
    restarts, began, slowest = 0, time.monotonic(), 0.0
    try:
        other = server_factory(pg_url, output=output)
        while restarts < RESTARTS and time.monotonic() - began + slowest < TIME_LIMIT_S:
            this_one = time.monotonic()
            with other.client() as http:
                answer = http.post("/v1/tasks", json={"description": f"from the other {restarts}"})
                writes_elsewhere.append(answer.status_code)
            how = signal.SIGTERM if restarts % 2 == 0 else signal.SIGKILL
            other.process.send_signal(how)
            other.process.wait(timeout=20)
            restarts += 1
            other = _start_again(server_factory, pg_url, output, f"restart {restarts}", failures)
            slowest = max(slowest, time.monotonic() - this_one)
        time.sleep(0.5)
    finally:
        fleet.stop.set()
        for thread in threads:
            thread.join(timeout=15)

    said = output.read_text()
    assert failures == [], "\n".join(failures) + "\n" + said[-4000:]
    assert restarts == RESTARTS, f"only {restarts} restarts within {TIME_LIMIT_S} s"
    assert fleet.server_errors == [], fleet.server_errors[:5]
    assert fleet.refused == [], fleet.refused[:5]
    assert set(writes_elsewhere) == {201}, writes_elsewhere
    assert len(fleet.submitted) > 50 and len(fleet.completed) > 20, "the load made no progress"
    print(
        f"{restarts} restarts beside a busy node in {time.monotonic() - began:.0f} s "
        f"(slowest {slowest:.1f} s): "
        f"{fleet.answers} answers, {len(fleet.submitted)} tasks, "
        f"{len(fleet.completed)} completions, no 5xx"
    )
