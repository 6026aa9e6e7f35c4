"""tierlog's errors, under one root: command rejections, configuration, the store.

A rejected command raises a ``DomainError`` and appends nothing; a bad setting raises a
``ConfigurationError`` before anything runs; the store raises a ``StoreError`` (a lost
version race is one). Every one carries a stable ``code`` and, where there is one, the
``field`` at fault, so the HTTP edge and the CLI can say what was wrong.
"""

from __future__ import annotations


class TierlogError(Exception):
    """The root of every error tierlog raises on purpose.

    ``field`` names the offending input where there is one, so the HTTP edge can
    say which field was wrong.
    """

    code = "tierlog_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class DomainError(TierlogError):
    """A command was rejected: bad input or a state that does not allow it."""

    code = "domain_error"


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


class TaskCancelledError(DomainError):
    """The task was cancelled while this agent held it (at this generation): the agent
    should stop the work. A heartbeat, completion or failure for it is refused."""

    code = "cancelled"


class IdempotencyConflictError(DomainError):
    """An ``Idempotency-Key`` already names a task submitted with a different body."""

    code = "idempotency_conflict"


class InternalError(TierlogError):
    """A command failed inside tierlog (a bug, not bad input): that command alone is
    refused, the rest of its batch goes on; the cause is kept for the traceback."""

    code = "internal_error"


class ConfigurationError(TierlogError):
    """A setting (configuration file, ``TIERLOG_*`` variable, CLI flag) is invalid."""

    code = "configuration_error"


class StoreError(TierlogError):
    """The log store refused or failed an operation."""

    code = "store_error"


class ConcurrencyConflictError(StoreError):
    """Another writer appended to the same aggregate first; reload and retry."""

    code = "conflict"


class UndecodableEventError(StoreError):
    """An event that would not decode back from the log (refused before the append), or
    a stored event that does not decode (a log this tierlog cannot read)."""

    code = "undecodable_event"


class StoreUnavailableError(StoreError):
    """The store cannot take a write (or a read) right now: the disk is full, the file
    system is read-only, an I/O error, the database connection is lost. Nothing was
    appended; the same request may succeed once the store recovers."""

    code = "storage_unavailable"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message
        """What failed, without where (no path, no address): fit for any client."""


class StoreUnusableError(StoreError):
    """The store given cannot be used as asked: unreachable, missing, not a database, a
    folder, read-only where it must be written, another application's log, corrupt."""

    code = "store_unusable"


class NotLeaderError(StoreError):
    """This node may not decide now: it does not hold the leader lease (another node was
    elected, or its lease ran out while it was paused), or no leader answered in time.
    Nothing of the request was appended; it may be retried."""

    code = "not_leader"


class CommandWithdrawnError(StoreError):
    """A forwarded command was withdrawn by the node that sent it (it stopped waiting)
    before the leader committed it: the leader decides its batch again without it."""

    code = "command_withdrawn"
