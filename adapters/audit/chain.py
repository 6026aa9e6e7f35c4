"""Verify the hash chain of a log, streaming: names the first position that is wrong.

:class:`ChainVerifier` takes the raw rows of ``EventLog.iter_raw`` batch by batch, so
the audit's single pass over the log checks the chain on the same rows it decodes;
:func:`verify_chain` runs it on its own.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from uuid import UUID

from tierlog.adapters.store.event_log import EventLog, RawRow, raw_id_bytes
from tierlog.adapters.store.hash_chain import (
    GENESIS,
    HASH_SIZE,
    RECORD_HEAD,
    link,
    record_hash,
    topic_tail,
)

# Chain rows fetched per query: each holds 32 bytes per event of one append, so a page
# of a few is already large.
CHAIN_PAGE = 16


@dataclass(frozen=True)
class ChainViolation:
    """Where the chain and the records disagree, and how."""

    position: int
    rule: str
    detail: str


class RawRecordHasher:
    """``record_hash`` of raw rows, a batch at a time (the audit's hottest loop)."""

    def __init__(self) -> None:
        self._tails: dict[str, bytes] = {}

    def _tail(self, topic: str) -> bytes:
        tail = topic_tail(topic)
        if len(self._tails) < 4096:  # a forged log could hold any number of topics
            self._tails[topic] = tail
        return tail

    def hashes(self, rows: Sequence[RawRow]) -> list[bytes]:
        """The record hash of each row, in order (b"" for a row no store could have
        written, which then matches nothing)."""
        sha256, pack, tails, tail = hashlib.sha256, RECORD_HEAD.pack, self._tails, self._tail
        try:
            # raw_id_bytes inlined as bytes.fromhex: a call less per row.
            return [
                sha256(pack(p, bytes.fromhex(i), v) + (tails.get(t) or tail(t)) + s).digest()
                for p, i, v, t, s in rows
            ]
        except (ValueError, TypeError, AttributeError, struct.error):
            # A dashed UUID, junk or NULLs somewhere in the batch: one row at a time.
            return [_record_hash(row) for row in rows]


def _record_hash(row: RawRow) -> bytes:
    position, raw_id, version, topic, state = row
    try:
        return record_hash(position, _id_bytes(raw_id), version, topic, bytes(state))
    except (ValueError, TypeError, AttributeError, struct.error):
        return b""


def _id_bytes(raw_id: str) -> bytes:
    try:
        return raw_id_bytes(raw_id)
    except ValueError:
        return UUID(raw_id).bytes


class ChainVerifier:
    """Checks raw rows against the chain rows as they stream by.

    Feed it every batch of ``EventLog.iter_raw(0, stop)`` in order, then call
    :meth:`finish`; ``stop`` should be ``audit_stop(log)`` unless only a prefix of the
    log is meant. It stops at the first violation (after it, every later link is
    suspect anyway) and keeps it in :attr:`violation`; rows fed after that are ignored.
    The rules, and the position each names, are those of the original record-by-record
    walk: ``chain_gap``, ``chain_link``, ``record_missing``, ``record_inserted``,
    ``record_changed``.
    """

    def __init__(self, log: EventLog, stop: int) -> None:
        self.violation: ChainViolation | None = None
        self._stop = stop
        self._chain = self._chain_rows(log, stop)
        self._hasher = RawRecordHasher()
        self._previous = GENESIS
        self._expected = 1  # the next position a record must have
        # The current chain row covers first..last; none is current while expected > last.
        self._first = self._last = 0
        self._hashes = b""

    @staticmethod
    def _chain_rows(log: EventLog, stop: int) -> Iterator[tuple[int, int, bytes, bytes]]:
        after = 0
        while True:
            rows = log.chain_rows(after, CHAIN_PAGE)
            for row in rows:
                if row[0] > stop:
                    return  # appended after the pass began
                yield row
            if len(rows) < CHAIN_PAGE:
                return
            after = rows[-1][0]

    def _fail(self, position: int, rule: str, detail: str) -> None:
        self.violation = ChainViolation(position, rule, detail)

    def _next_chain_row(self) -> bool:
        """Make the next chain row current; False if there is none (or it is bad)."""
        row = next(self._chain, None)
        if row is None:
            return False
        first, last, hashes, chain_hash = row
        if first != self._expected:
            self._fail(self._expected, "chain_gap", f"chain row starts at {first}")
            return False
        if (
            len(hashes) != (last - first + 1) * HASH_SIZE
            or link(self._previous, first, last, hashes) != chain_hash
        ):
            self._fail(first, "chain_link", f"chain row {first}..{last} does not link")
            return False
        self._previous, self._first, self._last, self._hashes = chain_hash, first, last, hashes
        return True

    def feed(self, rows: Sequence[RawRow]) -> None:
        """Check the next rows (in position order, continuing the previous batch)."""
        if self.violation is not None or not rows:
            return
        digests = self._hasher.hashes(rows)
        start, count = 0, len(rows)
        while start < count:
            expected = self._expected
            if expected > self._last and not self._next_chain_row():
                if self.violation is None:
                    self._fail(
                        rows[start][0], "record_inserted", "a record the chain does not cover"
                    )
                return
            take = min(count - start, self._last - expected + 1)
            end = start + take
            offset = (expected - self._first) * HASH_SIZE
            # Positions only grow, so the first and last being right means all are.
            in_place = rows[start][0] == expected and rows[end - 1][0] == expected + take - 1
            if not in_place or (
                b"".join(digests[start:end]) != self._hashes[offset : offset + take * HASH_SIZE]
            ):
                self._walk(rows, digests, start, take, offset)
                return
            self._expected += take
            start = end

    def _walk(
        self, rows: Sequence[RawRow], digests: list[bytes], start: int, take: int, offset: int
    ) -> None:
        """Record by record through a stretch known to hold a violation: find the first."""
        hashes = self._hashes
        for k in range(take):
            position, found = self._expected + k, rows[start + k][0]
            if found != position:
                rule = "record_missing" if found > position else "record_inserted"
                self._fail(
                    min(found, position), rule, f"expected position {position}, found {found}"
                )
                return
            at = offset + k * HASH_SIZE
            if digests[start + k] != hashes[at : at + HASH_SIZE]:
                self._fail(
                    position,
                    "record_changed",
                    "the record's bytes differ from when it was appended",
                )
                return
        raise AssertionError("a stretch that failed the fast check passed the slow one")

    def finish(self) -> None:
        """After the last batch: a chain row that covers positions (up to ``stop``) that
        no row had."""
        if self.violation is not None or self._expected > self._stop:
            return
        if self._expected <= self._last or self._next_chain_row():
            self._fail(self._expected, "record_missing", "the chain covers a deleted record")


def audit_stop(log: EventLog) -> int:
    """The last position an audit starting now checks: the head of the records or of the
    chain, whichever is further (records deleted from the end are still covered by the
    chain; records forged past its end are not). Each append commits its records and
    its chain row together, so both sides are complete up to it."""
    return max(log.head(), log.chain_head())


def verify_chain(log: EventLog, batch: int = 5000) -> Iterator[ChainViolation]:
    """Every record is covered by the chain, in order, with matching hashes.

    Yields violations in log order (the first one is the first bad position) and
    stops at the first, since after it every later link is suspect anyway. Checks the
    log as it is when called: what is appended meanwhile is left for the next audit.
    """
    stop = audit_stop(log)
    verifier = ChainVerifier(log, stop)
    for rows in log.iter_raw(0, stop, batch):
        verifier.feed(rows)
        if verifier.violation is not None:
            break
    verifier.finish()
    if verifier.violation is not None:
        yield verifier.violation
