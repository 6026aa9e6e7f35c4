"""Retry backoff (issue #13): how long a failed task waits before its next attempt.

After the ``attempt``-th failure with retries left, the task is requeued with
``not_before = now + min(cap, base × 2^(attempt−1)) × jitter``. The jitter, in
[0.5, 1.0], is drawn from a hash of the task id and the attempt rather than from a
random source, so the same failure always waits the same time; the drawn
``not_before`` is recorded on the ``TaskRequeued`` event anyway, and a replay, a
restart or an audit reads it from there instead of drawing again.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from uuid import UUID

import msgspec

JITTER_MIN = 0.5
"""The least share of the exponential delay a retry waits (the most is all of it)."""


class RetryBackoff(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A retry backoff policy: the first delay and the most any delay may be."""

    base_s: float
    max_s: float


def jitter(task_id: UUID, attempt: int) -> float:
    """A share of the delay in [``JITTER_MIN``, 1.0], the same for the same task and
    attempt in every process and every replay."""
    digest = hashlib.sha256(task_id.bytes + attempt.to_bytes(4, "big")).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64  # in [0, 1)
    return JITTER_MIN + (1.0 - JITTER_MIN) * fraction


def retry_delay_s(task_id: UUID, attempt: int, policy: RetryBackoff) -> float:
    """Seconds the ``attempt``-th failure (1 for the first) waits before the retry."""
    exponent = min(max(attempt - 1, 0), 62)  # past 2^62 every delay is capped anyway
    delay = min(policy.max_s, policy.base_s * float(2**exponent))
    return delay * jitter(task_id, attempt)


def not_before(task_id: UUID, attempt: int, policy: RetryBackoff, now: datetime) -> datetime | None:
    """When the retry after the ``attempt``-th failure may start (None: at once)."""
    delay = retry_delay_s(task_id, attempt, policy)
    if delay <= 0:
        return None
    # Whole microseconds: the time the log stores, so the fold and the decision agree.
    return now + timedelta(microseconds=round(delay * 1_000_000))


def is_backing_off(when: datetime | None, now: datetime) -> bool:
    """Whether a task requeued with ``not_before = when`` must still wait at ``now``."""
    return when is not None and now < when
