"""The locks tierlog takes on a PostgreSQL schema, and the one order it takes them in.

Several ``tierlog serve`` nodes may share one schema: each appends, each runs a
projection runner over the same read-model tables, and any may be restarted while the
others are busy. Two transactions that take the same locks in different orders can
deadlock (PostgreSQL then aborts one of them, which at start-up stops the node), so
every transaction tierlog runs on a schema takes its locks in this order, and skips
the steps it does not need:

1. ``DDL``: a transaction-level advisory lock keyed on the schema name, taken first by
   every transaction that creates or moves tables, indexes, types, functions or
   triggers (the log's, the read models', the checkpoints'). It serialises start-ups
   with each other (``CREATE TABLE IF NOT EXISTS`` is not atomic across sessions).
2. ``PROJECTIONS``: a transaction-level advisory lock keyed on the schema name, taken
   first by every transaction that writes read-model rows (a projection batch, a
   rebuild), and second by read-model DDL. So one runner writes at a time and the
   others follow; a start-up's DDL never interleaves with a batch.
3. Table and row locks, always in this order: the leader lease row (a leader's append
   begins with the fence, which locks it ``FOR SHARE``; the lease keeper's renewal and a
   take-over update it alone), the events table (the append's ``EXCLUSIVE`` lock), its
   chain table, the inbox rows the append answers (``tierlog_complete_inbox``; a
   follower withdrawing a command deletes its row alone), then the read-model tables
   (``rm_positions`` first: a batch locks its rows ``FOR UPDATE`` before it touches the
   others).

An append (lease row, events table, chain table, inbox rows) takes no advisory lock and
never touches the read models; a projection batch reads the log through the log's own connections,
whose plain reads take no lock an append waits for. Start-up DDL runs only when
something is missing: each start first looks in the catalog (no locks), so a restart
against a busy schema whose objects all exist takes no strong lock at all; what it
still writes (a missing ``rm_positions`` row) is written under the projections lock.
The start-up checks (the chain at the head, the read models' and checkpoints' lineage)
only read. No transaction takes a lock of an earlier step after one of a later step,
so none can wait in a cycle.
"""

from __future__ import annotations

import hashlib
from typing import Any

DDL = "ddl"
PROJECTIONS = "projections"


def advisory_key(purpose: str, schema: str) -> int:
    """The 64-bit advisory lock key of ``purpose`` (``DDL``, ``PROJECTIONS``) on
    ``schema``: the same in every process and release (a hash, not ``hashtext``)."""
    digest = hashlib.sha256(f"tierlog:{purpose}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_for(cursor: Any, purpose: str, schema: str) -> None:
    """Take the transaction-level advisory lock of ``purpose`` on ``schema`` through
    ``cursor`` (inside a transaction: it is released at commit or rollback)."""
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(purpose, schema),))


_CATALOG = """
SELECT 'relation' AS kind, c.relname AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %(s)s
UNION ALL
SELECT 'type', t.typname
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = %(s)s
UNION ALL
SELECT 'function', p.proname
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %(s)s
UNION ALL
SELECT 'trigger', g.tgname
  FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(s)s AND NOT g.tgisinternal
"""


def catalog(cursor: Any, schema: str) -> set[tuple[str, str]]:
    """The ``(kind, name)`` of every relation (table, index), type, function and
    trigger in ``schema``: read from the catalog, which takes no lock on them."""
    cursor.execute(_CATALOG, {"s": schema})
    found: set[tuple[str, str]] = set()
    for row in cursor.fetchall():
        kind, name = (row["kind"], row["name"]) if isinstance(row, dict) else row
        found.add((str(kind), str(name)))
    return found
