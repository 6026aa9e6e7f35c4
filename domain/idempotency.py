"""What "the same body" means for an ``Idempotency-Key`` (SPEC §5.1).

A key derives its task's id (``events.idempotent_task_id``), so a second submission
under a key finds the task the first one made. It gets that task back only if it asks
for the same thing: the same submit command, every field normalised the way the task
records it. That is the ``TaskSubmitted`` fact the command would state, without what
the server adds (ids, versions, the time) and without the key itself: defaults filled
in (a body without ``priority`` says ``"normal"``), lists in their order, ``metadata``
compared as JSON (its keys in any order), and ``complete_by`` as an instant (the same
moment in another time zone is the same deadline). The digest is SHA-256 over that
canonical JSON, so a task carries 64 characters, not a copy of its body.
"""

from __future__ import annotations

import hashlib
from datetime import UTC
from typing import Any

import msgspec

from tierlog.domain import events as ev

# What the server adds to a submission, or the key that names it: not the body.
_NOT_THE_BODY = ("originator_id", "originator_version", "timestamp", "idempotency_key")


def submission_digest(submitted: ev.TaskSubmitted) -> str:
    """The SHA-256 (hex) of the body ``submitted`` records, in canonical form."""
    fields: dict[str, Any] = msgspec.to_builtins(submitted)
    for name in _NOT_THE_BODY:
        fields.pop(name, None)
    if submitted.complete_by is not None:
        fields["complete_by"] = submitted.complete_by.astimezone(UTC).isoformat()
    canonical = msgspec.json.encode(fields, order="sorted")
    return hashlib.sha256(canonical).hexdigest()
