"""Batch submission (``POST /v1/tasks/batch``): each entry checked on its own, the
accepted ones decided and appended as one group commit, one answer per entry.

An entry is what ``POST /v1/tasks`` takes as its body, validated by the same model (the
``SubmitTask`` command read from JSON), then checked by the service against the
configured limits like any command. An entry at fault is answered with the status and
error body the single submission would have had; the others go on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from pydantic import ValidationError as PydanticValidationError

from tierlog.adapters.http.errors import ApiError, command_error, domain_error, invalid_input
from tierlog.adapters.http.models import SubmitTask
from tierlog.domain import commands as cmd
from tierlog.domain.errors import DomainError, TierlogError

LIMIT_HEADER = "Tierlog-Batch-Limit"
"""The answer header that tells the client the server's ``max_batch_submit``."""


def check_size(count: int, limit: int) -> None:
    """Refuse a batch with no entries, or more than ``limit`` (422 on ``tasks``; the
    answer says the limit in ``LIMIT_HEADER``)."""
    if count == 0:
        raise _too(f"tasks: at least 1 entry is needed, got 0 (the limit is {limit})", limit)
    if count > limit:
        raise _too(
            f"tasks: {count} entries, over the limit of {limit} per request "
            "(max_batch_submit): send them in several requests",
            limit,
        )


def _too(message: str, limit: int) -> ApiError:
    return ApiError(422, "validation_error", message, "tasks", {LIMIT_HEADER: str(limit)})


def command_of(entry: Any) -> cmd.SubmitTask | ApiError:
    """The submission an entry holds, or the 422 it is refused with (``field`` names the
    entry's own field, null when the entry is not an object at all)."""
    try:
        command: cmd.SubmitTask = SubmitTask.model_validate(entry)
    except PydanticValidationError as exc:
        return invalid_input(exc.errors(), whole=None)
    except DomainError as exc:  # a model validator's refusal
        return domain_error(exc)
    return command


def answer(
    checked: Sequence[cmd.SubmitTask | ApiError], results: Sequence[Any], position: int
) -> bytes:
    """The encoded answer: per entry, in order, its task or its error; ``results`` are
    the writer's, one per entry that passed the check."""
    done = iter(results)
    entries: list[dict[str, Any]] = []
    accepted = 0
    for index, item in enumerate(checked):
        outcome = item if isinstance(item, ApiError) else next(done)
        if isinstance(outcome, TierlogError):
            outcome = command_error(outcome)
        if isinstance(outcome, ApiError):
            entries.append({"index": index, "status": outcome.status, "error": outcome.body()})
            continue
        accepted += 1
        entries.append(
            {
                "index": index,
                "status": 201 if outcome.created else 200,
                "task_id": str(outcome.task_id),
                "state": outcome.state,
                "created": outcome.created,
            }
        )
    body = {
        "position": position,
        "accepted": accepted,
        "rejected": len(entries) - accepted,
        "results": entries,
    }
    return msgspec.json.encode(body)
