"""Verify the hash chain of a log, streaming: names the first position that is wrong."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from adapters.event_log import EventLog
from adapters.hash_chain import GENESIS, HASH_SIZE, link, record_hash


@dataclass(frozen=True)
class ChainViolation:
    """Where the chain and the records disagree, and how."""

    position: int
    rule: str
    detail: str


def _chain_rows(log: EventLog, batch: int) -> Iterator[tuple[int, int, bytes, bytes]]:
    after = 0
    while True:
        rows = log.chain_rows(after, batch)
        if not rows:
            return
        yield from rows
        after = rows[-1][0]


def _records(log: EventLog, batch: int) -> Iterator[Any]:
    after = 0
    while True:
        notes = log.recorder.select_notifications(
            start=after, limit=batch, inclusive_of_start=False
        )
        if not notes:
            return
        yield from notes
        after = notes[-1].id


def _oid_bytes(originator_id: UUID | str) -> bytes:
    return originator_id.bytes if isinstance(originator_id, UUID) else UUID(originator_id).bytes


def verify_chain(log: EventLog, batch: int = 5000) -> Iterator[ChainViolation]:
    """Every record is covered by the chain, in order, with matching hashes.

    Yields violations in log order (the first one is the first bad position) and
    stops at the first, since after it every later link is suspect anyway.
    """
    records = _records(log, batch)
    previous = GENESIS
    expected = 1
    for first, last, hashes, chain_hash in _chain_rows(log, batch):
        if first != expected:
            yield ChainViolation(expected, "chain_gap", f"chain row starts at {first}")
            return
        if (
            len(hashes) != (last - first + 1) * HASH_SIZE
            or link(previous, first, last, hashes) != chain_hash
        ):
            yield ChainViolation(first, "chain_link", f"chain row {first}..{last} does not link")
            return
        for position in range(first, last + 1):
            record = next(records, None)
            if record is None:
                yield ChainViolation(
                    position, "record_missing", "the chain covers a deleted record"
                )
                return
            if record.id != position:
                rule = "record_missing" if record.id > position else "record_inserted"
                yield ChainViolation(
                    min(record.id, position),
                    rule,
                    f"expected position {position}, found {record.id}",
                )
                return
            offset = (position - first) * HASH_SIZE
            actual = record_hash(
                position,
                _oid_bytes(record.originator_id),
                record.originator_version,
                record.topic,
                bytes(record.state),
            )
            if actual != hashes[offset : offset + HASH_SIZE]:
                yield ChainViolation(
                    position,
                    "record_changed",
                    "the record's bytes differ from when it was appended",
                )
                return
        previous, expected = chain_hash, last + 1
    extra = next(records, None)
    if extra is not None:
        yield ChainViolation(extra.id, "record_inserted", "a record the chain does not cover")
