"""Verify the hash chain of a log, streaming: names every position that is wrong.

:class:`ChainVerifier` takes the raw rows of ``EventLog.iter_raw`` batch by batch, so
the audit's single pass over the log checks the chain on the same rows it decodes;
:func:`verify_chain` runs it on its own.

Positions need not be contiguous. On PostgreSQL an append that rolls back (a lost
version race, a process killed mid-append) has already drawn its ``notification_id``
values, so the next append starts after a gap that no record and no chain row ever
held. The chain covers exactly the positions its rows name, ``first..last`` each (one
append's positions are consecutive: the events table is locked for the insert), and
a position between two rows that no record occupies is no finding. What a chain
alone cannot show: records and their chain rows removed together from the end.
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

# The most findings the audit keeps; past it they are only counted (``omitted``), so a
# log that was rewritten wholesale still gives a bounded report.
MAX_FINDINGS = 1000

ChainRowData = tuple[int, int, bytes, bytes]


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
    """Checks raw rows against the chain rows as they stream by, reporting every
    finding.

    Feed it every batch of ``EventLog.iter_raw(0, stop)`` in order, then call
    :meth:`finish`; ``stop`` should be ``audit_stop(log)`` unless only a prefix of the
    log is meant. Findings collect in :attr:`violations`, in log order; past ``limit``
    (None: no limit) they are only counted in :attr:`omitted`. The rules:

    - ``record_changed``: a record's hash differs from the one its chain row holds;
    - ``record_missing``: positions a chain row covers hold no record (one finding per
      run of them within one chain row, at its first position);
    - ``record_inserted``: a record at a position no chain row covers;
    - ``chain_link``: a chain row does not link to the row before it (it, or a row
      before it, was edited or removed), or is malformed (its hashes do not fit its
      range; it then covers nothing);
    - ``chain_overlap``: a chain row starts at or before the last position of the row
      before it (appends never share a position).

    After each finding it resynchronises, so one fault is one finding: the next
    position after a record finding; after a broken link, the next row may link to
    this row's stored chain hash or to the one its contents give (whichever of the
    two was edited), so one edited chain row breaks one link, not every later one.
    A chain row removed from the middle breaks the next row's link, whether or not its
    records were removed too.
    """

    def __init__(self, log: EventLog, stop: int, limit: int | None = MAX_FINDINGS) -> None:
        self.violations: list[ChainViolation] = []
        self.omitted = 0  # findings past ``limit``, counted only
        self._limit = limit
        self._stop = stop
        self._chain = self._chain_rows(log, stop)
        self._ahead: ChainRowData | None = None  # the next chain row, once peeked at
        self._hasher = RawRecordHasher()
        self._previous = GENESIS  # the chain hash the next row must link to
        self._alternate: bytes | None = None  # after a broken link: the other candidate
        # The current chain row covers first..last; positions before ``expected`` are
        # done. None is current while expected > last.
        self._expected = 1
        self._first = self._last = 0
        self._hashes = b""

    @property
    def violation(self) -> ChainViolation | None:
        """The first finding (None while there is none)."""
        return self.violations[0] if self.violations else None

    @staticmethod
    def _chain_rows(log: EventLog, stop: int) -> Iterator[ChainRowData]:
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

    def _report(self, position: int, rule: str, detail: str) -> None:
        if self._limit is None or len(self.violations) < self._limit:
            self.violations.append(ChainViolation(position, rule, detail))
        else:
            self.omitted += 1

    def _peek(self) -> ChainRowData | None:
        if self._ahead is None:
            self._ahead = next(self._chain, None)
        return self._ahead

    def _take_row(self, row: ChainRowData) -> None:
        """Make ``row`` (the peeked one) current, checking its place and its link."""
        self._ahead = None
        first, last, hashes, chain_hash = row
        before = self._last  # the furthest position an earlier row covers
        if first <= before:
            self._report(
                first,
                "chain_overlap",
                f"chain row {first}..{last} overlaps the row before it (which ends at {before})",
            )
        computed = link(self._previous, first, last, hashes)
        well_formed = first <= last and len(hashes) == (last - first + 1) * HASH_SIZE
        if not well_formed:
            self._report(
                first,
                "chain_link",
                f"chain row {first}..{last} is malformed ({len(hashes)} bytes of record hashes)",
            )
        elif computed != chain_hash and (
            self._alternate is None or link(self._alternate, first, last, hashes) != chain_hash
        ):
            self._report(
                first,
                "chain_link",
                f"chain row {first}..{last} does not link to the row before it "
                "(a chain row was edited or removed)",
            )
        else:
            self._previous, self._alternate = chain_hash, None
            if last > before:
                self._first, self._last, self._hashes = first, last, hashes
                self._expected = max(first, before + 1)
            return
        self._previous, self._alternate = chain_hash, computed
        if well_formed and last > before:
            self._first, self._last, self._hashes = first, last, hashes
            self._expected = max(first, before + 1)

    def _missing(self, start: int, end: int) -> None:
        what = f"position {start}" if start == end else f"positions {start}..{end}"
        self._report(start, "record_missing", f"the chain covers {what} but no record is there")

    def feed(self, rows: Sequence[RawRow]) -> None:
        """Check the next rows (in position order, continuing the previous batch)."""
        if not rows:
            return
        digests = self._hasher.hashes(rows)
        start, count = 0, len(rows)
        while start < count:
            position, expected, last = rows[start][0], self._expected, self._last
            if expected > last:  # the current row is done: the record is in the next, or in none
                ahead = self._peek()
                if ahead is None or position < ahead[0]:
                    self._report(position, "record_inserted", "a record no chain row covers")
                    start += 1
                else:
                    self._take_row(ahead)
                continue
            if position != expected:
                if position < expected:  # only if the store gave positions out of order
                    self._report(position, "record_inserted", "a record out of position order")
                    start += 1
                else:
                    end = min(position - 1, last)
                    self._missing(expected, end)
                    self._expected = end + 1
                continue
            take = min(count - start, last - expected + 1)
            end = start + take
            offset = (expected - self._first) * HASH_SIZE
            # Positions only grow, so the first and last being in place means all are.
            if (
                rows[end - 1][0] == expected + take - 1
                and b"".join(digests[start:end]) == self._hashes[offset : offset + take * HASH_SIZE]
            ):
                self._expected += take
                start = end
            else:
                start = self._walk(rows, digests, start, take)

    def _walk(self, rows: Sequence[RawRow], digests: list[bytes], start: int, take: int) -> int:
        """Record by record through a stretch known to hold a finding, up to its end or
        the first position that is not in place; returns the index reached."""
        expected, first, hashes = self._expected, self._first, self._hashes
        for k in range(start, start + take):
            if rows[k][0] != expected:
                self._expected = expected
                return k
            at = (expected - first) * HASH_SIZE
            if digests[k] != hashes[at : at + HASH_SIZE]:
                self._report(
                    expected,
                    "record_changed",
                    "the record's bytes differ from when it was appended",
                )
            expected += 1
        self._expected = expected
        return start + take

    def finish(self) -> None:
        """After the last batch: positions (up to ``stop``) that chain rows cover and no
        row had, and the links of those chain rows."""
        while True:
            end = min(self._last, self._stop)
            if self._expected <= end:
                self._missing(self._expected, end)
            self._expected = max(self._expected, self._last + 1)
            ahead = self._peek()
            if ahead is None:
                return
            self._take_row(ahead)


def audit_stop(log: EventLog) -> int:
    """The last position an audit starting now checks: the head of the records or of the
    chain, whichever is further (records deleted from the end are still covered by the
    chain; records forged past its end are not). Each append commits its records and
    its chain row together, so both sides are complete up to it."""
    return max(log.head(), log.chain_head())


def verify_chain(log: EventLog, batch: int = 5000) -> Iterator[ChainViolation]:
    """Every record is covered by the chain, in order, with matching hashes.

    Yields every finding as it is found, in log order (the first one is the first bad
    position; see :class:`ChainVerifier` for the rules), holding at most a batch's worth
    at a time. Checks the log as it is when called: what is appended meanwhile is left
    for the next audit.
    """
    stop = audit_stop(log)
    verifier = ChainVerifier(log, stop, limit=None)
    for rows in log.iter_raw(0, stop, batch):
        verifier.feed(rows)
        yield from verifier.violations
        verifier.violations.clear()
    verifier.finish()
    yield from verifier.violations
