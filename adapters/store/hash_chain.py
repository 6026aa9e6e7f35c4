"""Tamper evidence: a SHA-256 hash chain over the log, written with every append.

Each append transaction adds one chain row covering its events' positions
``first..last``. The row holds every record's own hash,
``record_hash = H(position ‖ aggregate id ‖ version ‖ topic ‖ payload)``, and links to
the previous row: ``chain_hash = H(previous chain_hash ‖ first ‖ last ‖ record
hashes)``. So every record is covered, in global order; an audit that recomputes the
records' hashes names every position that was edited, deleted, inserted or moved, and
a chain row that was itself edited or removed breaks the next link.

One append's positions are consecutive, but two appends' need not be: on PostgreSQL a
rolled-back insert has drawn sequence values no record will hold, so the next chain
row may start after a gap. The positions the chain covers are those its rows name.
Records removed from the end together with their chain rows leave a valid, shorter
chain, which the chain alone cannot tell from a log that was never longer.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

GENESIS = b"\x00" * 32
HASH_SIZE = 32


_POSITION = struct.Struct(">Q")
_VERSION_TOPIC = struct.Struct(">QI")
_TOPIC_LENGTH = struct.Struct(">I")

# The same layout as ``record_bytes`` cut in three, for the audit's loop over raw rows:
# RECORD_HEAD.pack(position, id bytes, version) + topic_tail(topic) + payload.
RECORD_HEAD = struct.Struct(">Q16sQ")


def topic_tail(topic: str) -> bytes:
    """The part of a record's canonical bytes between its version and its payload."""
    topic_bytes = topic.encode()
    return _TOPIC_LENGTH.pack(len(topic_bytes)) + topic_bytes


def record_bytes(
    position: int, originator_id: bytes, version: int, topic: str, state: bytes
) -> bytes:
    """The canonical bytes of one stored record (``originator_id`` as its 16 bytes)."""
    topic_bytes = topic.encode()
    return b"".join(
        (
            _POSITION.pack(position),
            originator_id,
            _VERSION_TOPIC.pack(version, len(topic_bytes)),
            topic_bytes,
            state,
        )
    )


def record_hash(
    position: int, originator_id: bytes, version: int, topic: str, state: bytes
) -> bytes:
    """SHA-256 of a record's canonical bytes."""
    return hashlib.sha256(record_bytes(position, originator_id, version, topic, state)).digest()


def link(previous: bytes, first: int, last: int, record_hashes: bytes) -> bytes:
    """The chain hash of a row, linked to the previous row's."""
    return hashlib.sha256(previous + struct.pack(">QQ", first, last) + record_hashes).digest()


@dataclass(frozen=True)
class ChainRow:
    """One append's entry in the chain."""

    first_position: int
    last_position: int
    record_hashes: bytes
    chain_hash: bytes


def chain_row(
    previous: bytes, positions: Sequence[int], records: Sequence[tuple[bytes, int, str, bytes]]
) -> ChainRow:
    """The chain row for one append: its records (id bytes, version, topic, payload) at
    ``positions`` (consecutive; the row before may end anywhere before the first)."""
    if len(positions) != len(records):
        raise ValueError(f"{len(records)} records at {len(positions)} positions")
    # ``record_hash`` inlined: one struct for the fixed part, each topic encoded once
    # (an append repeats a handful of topics), since this runs once per appended event.
    sha256, pack = hashlib.sha256, RECORD_HEAD.pack
    tails: dict[str, bytes] = {}
    hashes = []
    for p, (oid, version, topic, state) in zip(positions, records, strict=True):
        tail = tails.get(topic)
        if tail is None:
            tail = tails[topic] = topic_tail(topic)
        hashes.append(sha256(pack(p, oid, version) + tail + state).digest())
    joined = b"".join(hashes)
    first, last = positions[0], positions[-1]
    return ChainRow(first, last, joined, link(previous, first, last, joined))
