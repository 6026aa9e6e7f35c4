"""Several nodes on one PostgreSQL log: one leader decides, followers forward, the store
fences a deposed leader off. Real PostgreSQL, real threads, the wall clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.persistence import PersistenceError

from tierlog.adapters import bootstrap
from tierlog.adapters.history.time_travel import explain
from tierlog.adapters.runtime.cluster import (
    ClusterNode,
    decode_answer,
    decode_command,
    encode_answer,
    encode_command,
)
from tierlog.adapters.runtime.writer import SchedulerRuntime
from tierlog.adapters.settings import Settings
from tierlog.adapters.store.event_log import EventLog, postgres_connect_args
from tierlog.domain import commands as cmd
from tierlog.domain import errors
from tierlog.domain import events as ev
from tierlog.domain.service import SubmitResult

pytestmark = pytest.mark.postgres

LEASE_S = 1.0


def _wait_until(check: Callable[[], bool], timeout: float = 10.0) -> float:
    """Seconds until ``check()`` held; fails after ``timeout``."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            pytest.fail(f"not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - began


@pytest.fixture
def node_on(pg_url: str) -> Iterator[Callable[[str], SchedulerRuntime]]:
    """Start a runtime as a cluster node named ``name`` on one shared schema."""
    started: list[SchedulerRuntime] = []

    def start(name: str) -> SchedulerRuntime:
        settings = Settings(
            store=pg_url, node_id=name, leader_lease_s=LEASE_S, forward_timeout_s=3.0
        )
        log = bootstrap.open_log(settings, leader=True)
        runtime = bootstrap.build_runtime(settings, log)
        runtime.attach(bootstrap.build_node(settings, log))
        runtime.start_background()
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        runtime.stop()
        if runtime.node is not None:
            runtime.node.close()
        runtime.log.close()


def _elections(url: str) -> list[tuple[int, ev.SchedulerLeaderElected]]:
    log = EventLog(url, read_only=True)
    try:
        return [(p, e) for p, e in log.iter_events() if isinstance(e, ev.SchedulerLeaderElected)]
    finally:
        log.close()


def test_the_first_node_leads_and_a_second_follows(
    node_on: Callable[[str], SchedulerRuntime], pg_url: str
) -> None:
    first, second = node_on("a"), node_on("b")
    assert first.is_leader and not second.is_leader
    assert [(e.node_id, e.epoch) for _, e in _elections(pg_url)] == [("a", 1)]
    assert first.state.scheduler.leader == "a" and first.state.scheduler.epoch == 1


def test_a_follower_forwards_and_reads_its_own_write(
    node_on: Callable[[str], SchedulerRuntime],
) -> None:
    node_on("a")
    follower = node_on("b")
    result = follower.call(cmd.SubmitTask(description="forwarded", idempotency_key="k1"))
    assert isinstance(result, SubmitResult) and result.created
    # Read-your-writes: the answer came once this node's own state had it.
    assert result.task_id in follower.state.tasks
    again = follower.call(cmd.SubmitTask(description="forwarded", idempotency_key="k1"))
    assert again.task_id == result.task_id and not again.created
    assert follower.node is not None and follower.node.forwarded == 2


def test_a_refusal_is_forwarded_back_as_the_same_error(
    node_on: Callable[[str], SchedulerRuntime],
) -> None:
    node_on("a")
    follower = node_on("b")
    with pytest.raises(errors.NotFoundError) as raised:
        follower.call(cmd.CancelTask(task_id=uuid4(), requested_by="operator"))
    assert raised.value.field == "task_id"


def test_when_the_leader_stops_a_follower_takes_over_and_records_it(
    node_on: Callable[[str], SchedulerRuntime], pg_url: str
) -> None:
    leader, follower = node_on("a"), node_on("b")
    leader.stop()  # a clean stop gives the lease up
    took = _wait_until(lambda: follower.is_leader)
    assert took < 3 * LEASE_S
    assert [(e.node_id, e.epoch) for _, e in _elections(pg_url)] == [("a", 1), ("b", 2)]
    assert follower.call(cmd.SubmitTask(description="after failover")).created


def test_a_leader_whose_lease_was_taken_commits_nothing(
    node_on: Callable[[str], SchedulerRuntime], pg_url: str
) -> None:
    leader, follower = node_on("a"), node_on("b")
    assert leader.node is not None
    # As if "a" were paused past its lease: its lease runs out, "b" takes over.
    leader.node.stop(release=False)  # no renewals from now on
    _wait_until(lambda: follower.is_leader)
    leader.node.epoch = 1  # the paused node still believes it leads
    leader.log.fence = ("a", 1)
    with pytest.raises(errors.NotLeaderError):
        leader.execute(cmd.SubmitTask(description="from a deposed leader"))
    assert not leader.is_leader and leader.node.fenced == 1
    log = EventLog(pg_url, read_only=True)
    try:
        submitted = [e for _, e in log.iter_events() if isinstance(e, ev.TaskSubmitted)]
    finally:
        log.close()
    assert submitted == []
    # Its state was rolled back: it holds nothing the log does not.
    assert not leader.state.tasks


@contextmanager
def _lone_leader(pg_url: str) -> Iterator[tuple[SchedulerRuntime, ClusterNode, EventLog]]:
    """A node started as leader on its own, with no background writer."""
    settings = Settings(store=pg_url, node_id="a", leader_lease_s=LEASE_S)
    log = bootstrap.open_log(settings)
    node = bootstrap.build_node(settings, log)
    try:
        runtime = bootstrap.build_runtime(settings, log)
        runtime.attach(node)
        runtime.start()
        assert runtime.is_leader
        yield runtime, node, log
    finally:
        node.close()
        log.close()


def test_an_append_with_a_stale_epoch_is_refused_by_the_store(pg_url: str) -> None:
    with _lone_leader(pg_url) as (runtime, _, log):
        with psycopg.connect(**postgres_connect_args(log.env), autocommit=True) as conn:
            schema = log.env["POSTGRES_SCHEMA"]
            conn.execute(f'UPDATE "{schema}".tierlog_leader SET epoch = epoch + 1')
        with pytest.raises(errors.NotLeaderError):
            runtime.execute(cmd.SubmitTask(description="stale epoch"))
        assert not runtime.is_leader


def test_an_expired_lease_is_refused_even_before_anyone_takes_it(pg_url: str) -> None:
    with _lone_leader(pg_url) as (runtime, node, log):
        node.stop(release=False)  # as if paused: nothing renews the lease any more
        time.sleep(LEASE_S + 0.2)
        head = log.head()
        with pytest.raises(errors.NotLeaderError):
            runtime.execute(cmd.SubmitTask(description="expired lease"))
        assert log.head() == head


def test_commands_and_answers_cross_the_inbox_intact() -> None:
    command = cmd.SubmitTask(description="x", metadata={"a": [1, 2.5, None]}, priority="high")
    assert decode_command(*encode_command(command)) == command
    when = datetime.fromisoformat("2026-12-01T10:00:00+00:00")
    assert decode_answer(cmd.HeartbeatTask.verb, encode_answer(when)) == when
    refused = decode_answer(
        cmd.CancelTask.verb, encode_answer(errors.NotFoundError("no", field="t"))
    )
    assert isinstance(refused, errors.NotFoundError) and refused.field == "t"
    with pytest.raises(errors.ValidationError):
        decode_command("submit_task", b'{"description": 5}')
    with pytest.raises(errors.ValidationError):
        decode_command("drop_tables", b"{}")


def test_a_node_lists_every_node(node_on: Callable[[str], SchedulerRuntime]) -> None:
    leader, follower = node_on("a"), node_on("b")
    node: ClusterNode | None = follower.node
    assert node is not None
    expected = {"a": "leader", "b": "follower"}
    _wait_until(lambda: {n.node: n.role for n in node.nodes()} == expected)
    assert leader.node is not None and leader.node.status().role == "leader"


def test_a_leader_stalled_inside_an_append_does_not_hold_up_the_fail_over(
    node_on: Callable[[str], SchedulerRuntime],
) -> None:
    leader, follower = node_on("a"), node_on("b")
    assert leader.node is not None
    leader.node.stop(release=False)  # its lease keeper is "paused" too
    schema = leader.log.env["POSTGRES_SCHEMA"]
    began = time.monotonic()
    # As if "a" stopped right after its fence, holding the lease row and its transaction
    # open: PostgreSQL ends that transaction (idle in transaction), and "b" takes over.
    with (
        pytest.raises(PersistenceError),  # the server ended the transaction
        leader.log.recorder.datastore.transaction(commit=True) as curs,
    ):
        curs.execute(f'SELECT "{schema}".tierlog_fence(%s, %s)', ("a", 1))
        _wait_until(lambda: follower.is_leader, timeout=4 * LEASE_S + 2)
        took = time.monotonic() - began
        time.sleep(0.2)
    assert took < 2 * LEASE_S + 1.5  # the lease, the server's timeout, a poll


def test_explain_names_the_leader_that_decided_each_event(
    node_on: Callable[[str], SchedulerRuntime], pg_url: str
) -> None:
    first, second = node_on("a"), node_on("b")
    before = second.call(cmd.SubmitTask(description="under a"))
    first.stop()
    _wait_until(lambda: second.is_leader)
    retried = second.call(cmd.CancelTask(task_id=before.task_id, requested_by="operator"))
    assert retried is None
    log = EventLog(pg_url, read_only=True)
    try:
        story = explain(log, before.task_id)
    finally:
        log.close()
    by = {line["event"]: line.get("decided_by") for line in story}
    assert by["TaskSubmitted"] == "a (epoch 1)"
    assert by["TaskCancelled"] == "b (epoch 2)"


def test_a_command_no_leader_answers_is_withdrawn_and_appends_nothing(pg_url: str) -> None:
    started: list[SchedulerRuntime] = []
    try:
        for name in ("a", "b"):
            settings = Settings(
                store=pg_url, node_id=name, leader_lease_s=30.0, forward_timeout_s=0.5
            )
            runtime = bootstrap.build_runtime(settings, bootstrap.open_log(settings))
            runtime.attach(bootstrap.build_node(settings, runtime.log))
            runtime.start_background()
            started.append(runtime)
        leader, follower = started
        assert leader.is_leader and not follower.is_leader
        assert leader.node is not None
        leader.node.stop(release=False)  # gone, keeping its 30 s lease: nobody answers
        leader.stop()
        head = follower.log.head()
        with pytest.raises(errors.NotLeaderError, match="no leader answered"):
            follower.call(cmd.SubmitTask(description="nobody decides this"))
        assert follower.node is not None and follower.node.withdrawn == 1
        assert follower.node.store.pending(10, []) == []  # withdrawn, so never run later
        assert follower.log.head() == head
    finally:
        for runtime in started:
            runtime.stop()
            if runtime.node is not None:
                runtime.node.close()
            runtime.log.close()
