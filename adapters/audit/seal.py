"""The audit's seal: what a clean audit leaves beside the log so the next one checks
only what was appended since (issue #16).

A seal is one row in the checkpoints file or schema (``CheckpointStore(audit=True)``,
beside time travel's checkpoints, moved aside with them when a log is replaced): the
position the audit reached, the log's chain hash there, and the folded state of every
check at that position (both replay checkers, and each read model's in-memory fold at
the live position it was compared at), with a SHA-256 digest of that state.

Using a seal, the next audit still verifies the whole hash chain, record by record:
that is what proves the sealed prefix unchanged (an edited, inserted or deleted record
breaks the chain; a prefix rewritten with a consistent new chain has another chain
hash at the seal's position). A seal that does not fit the log is a finding, and the
audit then checks from position 0:

- ``seal_matches_log``: the seal's position is beyond the log's head, or the log's
  chain hash there is not the one the seal holds (the prefix was rewritten, or the seal
  is another log's);
- ``seal_intact``: the seal's bytes do not decode, or its folded state does not match
  its digest.

The seal is as trustworthy as the folder or schema it is kept in: someone who can write
there can forge one that fits. ``tierlog audit --full`` ignores seals.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import msgspec

from tierlog.adapters.audit.digest import SealedFolds
from tierlog.adapters.history.checkpoints import CheckpointStore
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain.replay.invariants import Violation

SEAL_FORMAT = 1
"""The layout of a seal's bytes; a seal of another layout is ignored (not a finding)."""

# Where a seal finding is filed (the ``aggregate_id`` of its violation).
SEAL = "audit seal"
# A seal's stored bytes: the layout (one byte), the SHA-256 digest of the body, the body
# (a ``SealBody``), in one buffer so a large state is not copied again to be framed.
_HEAD = 1 + 32


class SealBody(msgspec.Struct, kw_only=True, gc=False):
    """The folded state a seal keeps (each part still encoded: a worker's read-model
    folds pass through without being decoded)."""

    checkers: msgspec.Raw  # ``domain.replay.resume.dump_checkers``
    projections: SealedFolds


_encoder = msgspec.msgpack.Encoder()
_body = msgspec.msgpack.Decoder(SealBody)


@dataclass
class Seal:
    """A seal that fits the log: the position, and the state folded up to it."""

    position: int
    chain_hash: bytes
    checkers: bytes
    projections: SealedFolds = field(default_factory=dict)


def load_seal(log: EventLog) -> tuple[Seal | None, list[Violation]]:
    """The newest seal beside ``log`` if it fits the log; else None, and the findings
    that say why (none when there is no seal, or one of another layout)."""
    store = CheckpointStore(log, write=False, audit=True)
    try:
        found = store.newest((1 << 63) - 1, 1)
    except Exception as exc:  # sqlite3 or psycopg: a file that is not a checkpoints file
        detail = f"the seal cannot be read: {exc}"
        return None, [Violation(0, SEAL, "seal_intact", detail)]
    finally:
        store.close()
    if not found:
        return None, []
    position, chain, data = found[0]

    def finding(rule: str, detail: str) -> tuple[None, list[Violation]]:
        return None, [Violation(position, SEAL, rule, detail)]

    if len(data) > _HEAD and data[0] != SEAL_FORMAT:
        return None, []  # another release's seal: checked from 0, replaced if clean
    body = memoryview(data)[_HEAD:]
    if len(data) <= _HEAD or hashlib.sha256(body).digest() != data[1:_HEAD]:
        return finding("seal_intact", "the seal's folded state does not match its digest")
    head = log.head()
    if position > head:
        return finding("seal_matches_log", f"the seal is at {position}, beyond the head {head}")
    actual = log.chain_hash_at(position)
    if actual != chain:
        return finding(
            "seal_matches_log",
            f"the log's chain hash at {position} is {actual.hex()[:16] if actual else 'none'}"
            f"..., the seal holds {chain.hex()[:16]}... (the sealed prefix was rewritten)",
        )
    try:
        sealed = _body.decode(body)
    except msgspec.MsgspecError:
        return finding("seal_intact", "the seal's folded state does not decode")
    return Seal(position, chain, bytes(sealed.checkers), sealed.projections), []


def write_seal(log: EventLog, position: int, checkers: bytes, projections: SealedFolds) -> bool:
    """Keep a seal at ``position`` (replacing any other); False when none could be
    kept (no chain row ends there, or the store cannot be written: logged)."""
    chain = log.chain_hash_at(position)
    if chain is None:
        return False
    # Sized up front (the parts plus room for their framing): grown piece by piece, the
    # buffer would be copied several times over.
    size = _HEAD + len(checkers) + sum(len(memoryview(f)) for f in projections.values())
    data = bytearray(size + 64 * (len(projections) + 4))
    _encoder.encode_into(
        SealBody(checkers=msgspec.Raw(checkers), projections=projections), data, _HEAD
    )
    data[0] = SEAL_FORMAT
    data[1:_HEAD] = hashlib.sha256(memoryview(data)[_HEAD:]).digest()
    store = CheckpointStore(log, write=True, audit=True)
    try:
        return store.replace_all(position, chain, data)
    finally:
        store.close()
