"""Task ids made by the server: UUIDs in time order (RFC 9562 version 7).

A task's id is the key of its stream in the log's primary-key index. Random ids
(version 4) put each new task's rows at a random place in that index, so every group
commit dirties pages all over it; ids that grow with time put them at its end, where
the pages are already in the cache. On SQLite that takes about a third off the cost
of inserting a batch (measured with ``tierlog bench``; see the README, issue #17).

The id's first 48 bits are the Unix time in milliseconds, then 74 random bits (beside
the version and variant); an id made in the same millisecond as the one before it
steps on from it by a random 32-bit amount. Ids made by one generator are strictly
increasing, even within one millisecond or when the wall clock steps back. The domain
takes the generator as an argument (``new_task_id``) and never reads the clock: ids
are recorded in the log, so replays read them and never make them again.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from uuid import UUID

_SEQUENCE_BITS = 74  # 12 bits of rand_a and 62 of rand_b
_SEQUENCE_MASK = (1 << _SEQUENCE_BITS) - 1
_MS_MASK = (1 << 48) - 1
_RAND_B_MASK = (1 << 62) - 1
_VERSION_7 = 0x7 << 76
_VARIANT = 0b10 << 62


def compose(ms: int, sequence: int) -> UUID:
    """The version 7 UUID of Unix time ``ms`` (milliseconds) and 74-bit ``sequence``."""
    if not 0 <= ms <= _MS_MASK:
        raise ValueError(f"a version 7 UUID holds 48 bits of milliseconds, not {ms}")
    if not 0 <= sequence <= _SEQUENCE_MASK:
        raise ValueError(f"a version 7 UUID holds 74 bits beside its time, not {sequence}")
    rand_a, rand_b = sequence >> 62, sequence & _RAND_B_MASK
    return UUID(int=(ms << 80) | _VERSION_7 | (rand_a << 64) | _VARIANT | rand_b)


class UrandomBits:
    """74-bit numbers from ``os.urandom``, read 256 at a time: one system call per
    256 ids instead of one each (not thread-safe: ``TimeOrderedIds`` holds its lock)."""

    _BYTES = 10  # 80 bits, of which the top 74 are used

    def __init__(self, per_read: int = 256) -> None:
        self._per_read = per_read
        self._pool: list[int] = []

    def __call__(self) -> int:
        """The next random 74-bit number."""
        if not self._pool:
            data = os.urandom(self._BYTES * self._per_read)
            size = self._BYTES
            self._pool = [
                int.from_bytes(data[i : i + size], "big") >> 6 for i in range(0, len(data), size)
            ]
        return self._pool.pop()


class TimeOrderedIds:
    """A generator of strictly increasing version 7 UUIDs (thread-safe).

    ``now_ms`` and ``random_bits`` are the clock and the randomness, injected for
    tests; the defaults are the wall clock and ``os.urandom`` (``UrandomBits``).
    """

    def __init__(
        self,
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        random_bits: Callable[[], int] | None = None,
    ) -> None:
        self._now_ms = now_ms
        self._random_bits = random_bits or UrandomBits()
        self._lock = threading.Lock()
        self._last = (-1, 0)

    def __call__(self) -> UUID:
        """The next id: later than every id this generator made before."""
        ms = int(self._now_ms())
        with self._lock:
            sequence = int(self._random_bits()) & _SEQUENCE_MASK
            last_ms, last_sequence = self._last
            if ms <= last_ms:
                # The same millisecond (or a clock that stepped back): step on from the
                # last id by a random 32-bit amount (so the next id is not the last plus
                # one), into the next millisecond if the sequence runs out.
                ms, sequence = last_ms, last_sequence + 1 + (sequence >> 42)
                if sequence > _SEQUENCE_MASK:
                    ms, sequence = ms + 1, 0
            self._last = (ms, sequence)
        # ``compose`` without its checks: both parts are in range by construction.
        rand_a, rand_b = sequence >> 62, sequence & _RAND_B_MASK
        return UUID(int=(ms << 80) | _VERSION_7 | (rand_a << 64) | _VARIANT | rand_b)


time_ordered_id = TimeOrderedIds()
"""The server's task ids: one generator per process, so its ids are in order."""
