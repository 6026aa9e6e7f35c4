"""New tasks' ids, as the runtime makes them: time-ordered, so the log's index grows at
its right edge (``tierlog.adapters.runtime.ids``)."""

from __future__ import annotations

from pathlib import Path

from tests.wiring import runtime_on
from tierlog.domain import commands as cmd
from tierlog.domain import events as ev


def _submit(description: str, key: str | None = None) -> cmd.SubmitTask:
    return cmd.SubmitTask(description=description, idempotency_key=key)


def test_ids_sort_in_submission_order_within_and_across_commits(tmp_path: Path) -> None:
    runtime = runtime_on(f"sqlite:///{tmp_path / 'log.db'}")
    try:
        ids = []
        for commit in range(3):
            results = runtime.execute_batch([_submit(f"task {commit}-{n}") for n in range(200)])
            ids += [result.task_id for result in results]
        assert all(task_id.version == 7 for task_id in ids)
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)
    finally:
        runtime.log.close()


def test_an_idempotent_submission_keeps_its_derived_id(tmp_path: Path) -> None:
    runtime = runtime_on(f"sqlite:///{tmp_path / 'log.db'}")
    try:
        [result] = runtime.execute_batch([_submit("keyed", key="order-42")])
        assert result.task_id == ev.idempotent_task_id("order-42")
    finally:
        runtime.log.close()
