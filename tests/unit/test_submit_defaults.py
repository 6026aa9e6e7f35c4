"""What a submission that names only its description is recorded with (SPEC §1.1):
normal priority, three retries, submitted by "unknown"."""

from __future__ import annotations

from tierlog.domain import events as ev


def test_a_bare_submission_records_the_documented_defaults(h):
    _, events = h.run("submit_task", description="fix typo in README")
    submitted = h.of(events, ev.TaskSubmitted)[0]
    assert submitted.priority == "normal"
    assert submitted.max_retries == 3
    assert submitted.submitted_by == "unknown"
    task = h.task(submitted.originator_id)
    assert task.priority == "normal" and task.max_retries == 3
