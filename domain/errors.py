"""Domain errors: every rejected command raises one of these, and appends nothing."""

from __future__ import annotations


class DomainError(Exception):
    """Base class of every error a tierlog command raises for bad input or a bad state.

    ``field`` names the offending input where there is one, so the HTTP edge can
    say which field was wrong.
    """

    code = "domain_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ValidationError(DomainError):
    """A command's arguments are malformed (wrong type, empty, out of range)."""

    code = "validation_error"


class NotFoundError(DomainError):
    """The task, agent or endpoint named by a command does not exist."""

    code = "not_found"


class InvalidTransitionError(DomainError):
    """The command is not allowed in the aggregate's current state."""

    code = "invalid_transition"


class StaleGenerationError(DomainError):
    """A complete, fail or heartbeat carried a generation that is no longer current."""

    code = "stale_generation"


class NotYourTaskError(DomainError):
    """An agent acted on a task that is assigned to someone else."""

    code = "not_your_task"


class ConcurrencyConflictError(DomainError):
    """Another writer appended to the same aggregate first; reload and retry."""

    code = "conflict"
