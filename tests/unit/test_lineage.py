"""Whether read models belong to a log: ahead of it, disagreeing with its chain at the
position they reached, or simply behind (pure: a log is its head and its chain)."""

from __future__ import annotations

from tierlog.adapters.readside.lineage import mismatch_of
from tierlog.adapters.readside.read_store import IDENTITY_KEY
from tierlog.adapters.store.lineage import FLAG, NoLog, fingerprint, kept_schema


class FakeLog:
    """A log of ``head`` events, one chain row per position, hash = position's bytes."""

    def __init__(self, head: int, salt: bytes = b"") -> None:
        self._head = head
        self._salt = salt

    def head(self) -> int:
        return self._head

    def chain_hash_at(self, position: int) -> bytes | None:
        if not 0 < position <= self._head:
            return None
        return self._salt + position.to_bytes(8, "big") + b"\x00" * 24


NAMES = ["tasks", "queue"]


def _stored(log: FakeLog, positions: dict[str, int], at: int) -> dict[str, int]:
    return {**positions, IDENTITY_KEY: fingerprint(log.chain_hash_at(at))}


def test_read_models_behind_or_level_with_their_log_belong_to_it():
    log = FakeLog(100)
    assert mismatch_of(_stored(log, {"tasks": 80, "queue": 80}, 80), log, NAMES, "x") is None
    assert mismatch_of(_stored(log, {"tasks": 100, "queue": 100}, 100), log, NAMES, "x") is None
    assert mismatch_of({}, log, NAMES, "x") is None  # nothing folded yet


def test_a_projection_added_since_does_not_look_like_another_log():
    log = FakeLog(100)
    stored = _stored(log, {"tasks": 90}, 90)  # "queue" is new: no row, position 0
    assert mismatch_of(stored, log, NAMES, "x") is None


def test_read_models_ahead_of_the_log_name_both_positions():
    stored = _stored(FakeLog(500), {"tasks": 500, "queue": 480}, 480)
    found = mismatch_of(stored, NoLog(), NAMES, "tierlog.read.db.replaced-T")
    assert found is not None and found.ahead
    assert (found.position, found.head) == (500, 0)
    message = found.message()
    assert "at position 500 but the log's head is at 0" in message
    assert FLAG in message and "tierlog.read.db.replaced-T" in message


def test_read_models_of_another_log_disagree_with_its_chain():
    stored = _stored(FakeLog(100, salt=b"other"), {"tasks": 60, "queue": 60}, 60)
    found = mismatch_of(stored, FakeLog(100), NAMES, "x")
    assert found is not None and not found.ahead
    assert "at position 60 do not match the log there" in found.message()


def test_a_kept_schema_name_fits_postgres_identifiers():
    name = kept_schema("s" * 70, "20260101T000000Z")
    assert len(name) == 63 and name.endswith("_replaced_20260101t000000z")
