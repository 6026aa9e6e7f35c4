"""A submission under an ``Idempotency-Key`` that names an existing task: the same body
gets that task back (nothing appended); a different one is refused (SPEC §5.1).

"The same body" is defined in ``tierlog.domain.idempotency``; the comparison is here,
beside the task aggregate that builds the ``TaskSubmitted`` a command states.
"""

from __future__ import annotations

from datetime import datetime

from tierlog.domain import commands as cmd
from tierlog.domain.aggregates import task as tasks
from tierlog.domain.aggregates.task import TaskRecord
from tierlog.domain.errors import IdempotencyConflictError
from tierlog.domain.idempotency import submission_digest


def check_same_submission(existing: TaskRecord, command: cmd.SubmitTask, now: datetime) -> None:
    """Refuse ``command`` unless it asks for what ``existing`` was submitted with.

    The deadline is compared as given, not checked against ``now``: a retry of a
    submission whose ``complete_by`` has since passed is still the same request.
    """
    if existing.submission_digest is None:
        return  # not submitted under a key (cannot happen for a key's task id)
    asked = tasks.submitted_event(command, existing.task_id, now, command.complete_by)
    if submission_digest(asked) != existing.submission_digest:
        raise IdempotencyConflictError(
            f"Idempotency-Key {command.idempotency_key!r} was already used for task "
            f"{existing.task_id} with a different body; use a new key for a new task",
            field="idempotency_key",
        )
