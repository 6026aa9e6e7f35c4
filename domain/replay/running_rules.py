"""The audit's rules for deadlines and for cancelling running work (issue #13): pure
checks of one event against what the invariant checker knows of its task.

- ``no_timer_after_deadline``: a fallback timer never fires at or after its task's
  ``complete_by`` (such a task can no longer be assigned; it is dead-lettered with
  ``deadline_passed`` and its timer cancelled instead).
- ``dead_letter_at_deadline``: a ``deadline_passed`` dead letter comes no earlier than
  the deadline in force (set at submission, replaced by a manual retry).
- ``cancel_names_holder``: cancelling a running task names the agent that held it and
  the generation it held it at; cancelling a task no agent held names none. With the
  older rule that nothing follows a cancellation (``finished_stays_finished``), this is
  what makes a completion or heartbeat after the cancel visible, and the agent free.

Each returns ``(rule, detail)`` when the event breaks it, else None.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from tierlog.domain import events as ev
from tierlog.domain.scheduling import DEADLINE_PASSED

Broken = tuple[str, str]
"""A broken rule's name and what was seen."""


class TaskView(Protocol):
    """What these rules read of a task (``invariants.TaskFacts`` has it)."""

    @property
    def state(self) -> str | None:
        """The task's state as the checker folded it."""

    @property
    def agent(self) -> str | None:
        """The agent of its last assignment."""

    @property
    def assigned_generation(self) -> int:
        """The generation of its last assignment (-1: none)."""

    @property
    def complete_by(self) -> datetime | None:
        """The deadline in force."""


def no_timer_after_deadline(e: ev.FallbackTimerFired, task: TaskView) -> Broken | None:
    """A timer fired for a task whose deadline had passed."""
    deadline = task.complete_by
    if deadline is None or e.timestamp < deadline:
        return None
    return (
        "no_timer_after_deadline",
        f"fired at {e.timestamp.isoformat()}, the task's deadline was {deadline.isoformat()}",
    )


def dead_letter_at_deadline(e: ev.TaskDeadLettered, task: TaskView) -> Broken | None:
    """A ``deadline_passed`` dead letter before the deadline, or without one."""
    if e.reason != DEADLINE_PASSED:
        return None
    deadline = task.complete_by
    if deadline is not None and e.timestamp >= deadline:
        return None
    due = deadline.isoformat() if deadline else "none"
    return ("dead_letter_at_deadline", f"at {e.timestamp.isoformat()}, deadline {due}")


def cancel_names_holder(e: ev.TaskCancelled, task: TaskView) -> Broken | None:
    """A cancellation that does not name the running task's holder as it was."""
    if task.state == "assigned":
        held = (task.agent, task.assigned_generation)
        if (e.agent_id, e.generation) == held:
            return None
        return (
            "cancel_names_holder",
            f"{held[0]} held generation {held[1]}; the cancellation names "
            f"{e.agent_id} at generation {e.generation}",
        )
    if e.agent_id is None and e.generation is None:
        return None
    return (
        "cancel_names_holder",
        f"names {e.agent_id} at generation {e.generation}, but the task was {task.state}",
    )
