"""The incremental audit (issue #16, item 3): a clean audit seals its result beside the
log, the next one verifies the whole chain and checks the rest from the seal; a seal
that does not fit the log is a finding; ``--full`` ignores seals."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from test_tamper import RawStore
from wiring import runner_on, runtime_on

from tierlog.adapters.audit.run import AuditReport, audit
from tierlog.adapters.audit.seal import load_seal, write_seal
from tierlog.adapters.cli import main
from tierlog.adapters.history.checkpoints import CheckpointStore, checkpoints_path
from tierlog.adapters.store.event_log import EventLog, postgres_connect_args
from tierlog.adapters.tools.demo import run_demo
from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.replay.resume import dump_checkers, load_checkers
from tierlog.projections.base import STATES


def _catch_up(log: EventLog) -> None:
    runner = runner_on(log)
    try:
        runner.run_until_caught_up()
    finally:
        runner.close()


def _append_work(log: EventLog, tasks: int = 12) -> None:
    """More of the usual: an agent, tasks submitted, assigned, completed or failed."""
    runtime = runtime_on(log)
    try:
        agent = f"later-{uuid.uuid4().hex[:6]}"
        runtime.execute_batch([cmd.RegisterAgent(agent_id=agent)])
        for n in range(tasks):
            runtime.execute_batch([cmd.SubmitTask(description=f"later {n}", repo="r")])
            held = runtime.state.agents[agent]
            if held.task_id is None:
                continue
            finish = cmd.FailTask if n % 4 == 0 else cmd.CompleteTask
            extra: dict[str, Any] = {"error": "boom"} if finish is cmd.FailTask else {}
            runtime.execute_batch(
                [finish(agent_id=agent, task_id=held.task_id, generation=held.generation, **extra)]
            )
    finally:
        runtime.stop()


@pytest.fixture
def sealed(store_url: str) -> Iterator[EventLog]:
    """A demo log with live read models, audited clean once (so sealed at its head)."""
    run_demo(store_url, tasks=80, seed=5)
    log = EventLog(store_url)
    _catch_up(log)
    first = audit(log, parallel=False)
    assert first.clean, first.violations
    assert first.resumed_from is None
    assert first.sealed_at == log.head()
    yield log
    log.close()


def _seal_row(log: EventLog) -> tuple[int, bytes, bytes]:
    store = CheckpointStore(log, write=False, audit=True)
    try:
        [row] = store.newest((1 << 63) - 1, 5)
        return row
    finally:
        store.close()


def _put_seal_row(log: EventLog, position: int, chain: bytes, data: bytes) -> None:
    store = CheckpointStore(log, audit=True)
    try:
        assert store.replace_all(position, chain, data)
    finally:
        store.close()


def _rules(report: AuditReport) -> list[tuple[int, str]]:
    return [(v.position, v.rule) for v in report.violations]


@pytest.mark.parametrize("parallel", [False, True])
def test_the_next_audit_goes_on_from_the_seal_and_seals_again(sealed, parallel):
    log = sealed
    before = log.head()
    _append_work(log)
    _catch_up(log)
    again = audit(log, parallel=parallel)
    assert again.clean, again.violations
    assert again.resumed_from == before
    assert again.sealed_at == log.head() > before
    assert again.events == log.head()  # the chain is verified over the whole log
    assert any("from the seal" in part for part in again.checked)
    # The checkers went on to the same state a check from 0 reaches.
    resumed = load_seal(log)[0]
    full = audit(log, parallel=parallel, full=True)
    assert full.clean and full.resumed_from is None
    from_zero = load_seal(log)[0]
    assert resumed is not None and from_zero is not None
    assert resumed.checkers == from_zero.checkers
    assert resumed.position == from_zero.position


def test_read_models_behind_the_seal_and_moving_on_are_folded_from_their_own_seal(sealed):
    log = sealed
    _append_work(log)  # the read models stay behind this time
    behind = audit(log, parallel=False)
    assert behind.clean, behind.violations
    _catch_up(log)
    caught_up = audit(log, parallel=True)
    assert caught_up.clean, caught_up.violations
    assert caught_up.resumed_from == behind.sealed_at


def test_findings_after_the_seal_are_the_full_audits(sealed):
    log = sealed
    _append_work(log, tasks=4)
    # A completion nothing led to, with a version that does not follow: two rules.
    stray = ev.TaskCompleted(
        originator_id=uuid.uuid4(),
        originator_version=3,
        timestamp=datetime.now(UTC),
        agent_id="nobody",
        generation=1,
        result=None,
    )
    log.append([stray])
    _catch_up(log)
    incremental = audit(log)
    full = audit(log, full=True)
    assert not incremental.clean
    assert incremental.resumed_from is not None
    assert _rules(incremental) == _rules(full)
    assert (log.head(), "versions_contiguous") in _rules(incremental)
    assert incremental.sealed_at is None  # not clean: no seal; the old one stays
    assert load_seal(log)[0] is not None


def test_a_change_inside_the_sealed_prefix_is_found_by_the_chain(sealed):
    log = sealed
    raw = RawStore(log)
    raw.drop_triggers()
    position = log.head() // 2
    raw.change(position)
    report = audit(log)
    assert (position, "record_changed") in _rules(report)
    assert report.resumed_from is not None  # the seal itself still fits the chain


def test_a_read_model_row_changed_inside_the_sealed_prefix_is_found(sealed):
    log = sealed
    _append_work(log, tasks=3)
    _catch_up(log)
    if log.sqlite_path is not None:
        conn: Any = sqlite3.connect(log.sqlite_path.replace(".db", ".read.db"))
        table = "rm_tasks"
    else:
        conn = psycopg.connect(**postgres_connect_args(log.env), autocommit=True)
        table = f'"{log.env["POSTGRES_SCHEMA"]}".rm_tasks'
    with conn:
        conn.execute(
            f"UPDATE {table} SET state = {STATES.code['queued']} WHERE task_id = "
            f"(SELECT task_id FROM {table} WHERE state = {STATES.code['completed']}"
            " ORDER BY task_id LIMIT 1)"
        )
    report = audit(log)
    assert report.resumed_from is not None
    assert [v.rule for v in report.violations] == ["projections_match"]


def test_a_seal_whose_chain_hash_no_longer_matches_is_a_finding(sealed):
    log = sealed
    position, chain, data = _seal_row(log)
    _put_seal_row(log, position, bytes(32), data)
    report = audit(log)
    assert _rules(report) == [(position, "seal_matches_log")]
    assert report.resumed_from is None  # everything was checked from 0
    assert report.sealed_at is None
    # --full ignores the seal: clean, and its seal replaces the forged one.
    full = audit(log, full=True)
    assert full.clean and full.sealed_at == position
    assert _seal_row(log)[1] == chain
    assert audit(log).clean


def test_a_seal_beyond_the_head_is_a_finding(sealed):
    log = sealed
    position, chain, data = _seal_row(log)
    _put_seal_row(log, position + 100, chain, data)
    assert _rules(audit(log)) == [(position + 100, "seal_matches_log")]


def test_a_forged_seal_state_is_found(sealed):
    log = sealed
    position, chain, data = _seal_row(log)
    # The folded state edited (a byte of it), the digest left as it was.
    forged = bytearray(data)
    forged[len(forged) // 2] ^= 1
    _put_seal_row(log, position, chain, bytes(forged))
    report = audit(log)
    assert _rules(report) == [(position, "seal_intact")]
    assert report.resumed_from is None
    # Junk where the seal's bytes should be.
    _put_seal_row(log, position, chain, b"not a seal")
    assert _rules(audit(log)) == [(position, "seal_intact")]


def test_a_seal_with_checkers_of_another_position_is_found(sealed):
    log = sealed
    position = _seal_row(log)[0]
    found = load_seal(log)[0]
    assert found is not None
    _, invariants, determinism = load_checkers(found.checkers, [])
    assert write_seal(log, position, dump_checkers(position - 1, invariants, determinism), {})
    assert _rules(audit(log)) == [(position, "seal_intact")]


def test_the_cli_says_where_it_went_on_from_and_full_ignores_the_seal(sealed, capsys):
    log = sealed
    position, _, data = _seal_row(log)
    code = main(["audit", "--json", "--store", log.url])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["resumed_from_seal"] == position and out["sealed_at"] == position
    _put_seal_row(log, position, bytes(32), data)
    assert main(["audit", "--store", log.url]) == 1
    assert "seal_matches_log" in capsys.readouterr().out
    code = main(["audit", "--full", "--json", "--store", log.url])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["resumed_from_seal"] is None and out["clean"]


def test_a_checkpoints_file_that_is_not_one_is_a_finding_not_a_crash(sqlite_url):
    run_demo(sqlite_url, tasks=20, seed=2)
    log = EventLog(sqlite_url)
    try:
        path = checkpoints_path(str(log.sqlite_path))
        path.write_bytes(b"not a database at all\n" * 100)
        report = audit(log, parallel=False)
        assert _rules(report) == [(0, "seal_intact")]
        assert report.resumed_from is None and report.events == log.head()
        # --full does not read it; clean, its seal cannot be kept there either.
        full = audit(log, parallel=False, full=True)
        assert full.clean and full.sealed_at is None
    finally:
        log.close()
