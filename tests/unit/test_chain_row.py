"""An append's chain row is the chain of its records' own hashes (SPEC §2)."""

from __future__ import annotations

import hashlib
import struct

import pytest

from tierlog.adapters.store.hash_chain import GENESIS, chain_row, link, record_hash

RECORDS = [
    (bytes(range(16)), 1, "TaskSubmitted", b'{"description":"x"}'),
    (bytes(16), 2, "TaskRouted@2", b""),
    (b"\xff" * 16, 3, "TaskSubmitted", b"{}" * 300),
]


def test_the_row_holds_each_records_hash_and_links_to_the_previous_row() -> None:
    previous = hashlib.sha256(b"previous").digest()
    row = chain_row(previous, [7, 8, 9], RECORDS)
    hashes = b"".join(record_hash(p, *r) for p, r in zip([7, 8, 9], RECORDS, strict=True))
    assert (row.first_position, row.last_position, row.record_hashes) == (7, 9, hashes)
    assert row.chain_hash == link(previous, 7, 9, hashes)


def test_a_records_hash_is_over_its_canonical_bytes() -> None:
    oid, version, topic, state = RECORDS[1]
    head = struct.pack(">Q", 8) + oid + struct.pack(">QI", version, len(topic))
    canonical = head + b"TaskRouted@2" + state
    assert record_hash(8, oid, version, topic, state) == hashlib.sha256(canonical).digest()
    assert chain_row(GENESIS, [8], [RECORDS[1]]).record_hashes == hashlib.sha256(canonical).digest()


def test_records_and_positions_must_pair_up() -> None:
    with pytest.raises(ValueError, match="2 records at 3 positions"):
        chain_row(GENESIS, [1, 2, 3], RECORDS[:2])
