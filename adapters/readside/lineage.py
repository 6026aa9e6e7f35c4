"""Do the read models belong to this log? Looked at without creating or changing them.

Each batch the runner commits stores, beside the positions, 63 bits of the log's chain
hash at the position it reached (``IDENTITY_KEY``). Read models whose furthest position
is beyond the log's head, or whose fingerprint differs from the chain there, were built
from another log: see ``tierlog.adapters.store.lineage``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from tierlog.adapters.readside.read_store import IDENTITY_KEY, read_model_path
from tierlog.adapters.store.cluster import CLUSTER_TABLES
from tierlog.adapters.store.event_log import postgres_connect_args, sqlite_file, store_env
from tierlog.adapters.store.lineage import (
    ChainView,
    Mismatch,
    fingerprint,
    keep_file_aside,
    keep_tables_aside,
    kept_file,
    kept_schema,
)
from tierlog.adapters.store.probe import (
    holds_sqlite_pages,
    postgres_read_only,
    sqlite_read_only,
)
from tierlog.projections.registry import all_projections

WHAT = "read models"


def _stored_sqlite(path: Path) -> dict[str, int]:
    if not holds_sqlite_pages(path):  # none, or left empty by a kill at its creation
        return {}
    with sqlite_read_only(path) as conn:
        try:
            rows = conn.execute("SELECT name, position FROM rm_positions").fetchall()
        except sqlite3.OperationalError:  # no rm_positions table: nothing was folded
            return {}
    return {str(name): int(position) for name, position in rows}


def _stored_postgres(env: dict[str, str]) -> dict[str, int]:
    schema = env["POSTGRES_SCHEMA"]
    with postgres_read_only(env) as conn:
        found = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".rm_positions',)).fetchone()
        if found is None or found[0] is None:
            return {}
        rows = conn.execute(f'SELECT name, position FROM "{schema}".rm_positions').fetchall()
    return {str(name): int(position) for name, position in rows}


def stored_positions(url: str) -> dict[str, int]:
    """The rows of the log's ``rm_positions`` (the identity row included), read-only;
    empty when there are no read models."""
    path = sqlite_file(url)
    if path is not None:
        return _stored_sqlite(read_model_path(str(path)))
    return _stored_postgres(store_env(url, create=False))


def mismatch_of(
    stored: dict[str, int], log: ChainView, names: Sequence[str], kept_as: str
) -> Mismatch | None:
    """The mismatch of read models at ``stored`` positions (of the projections ``names``)
    with ``log``, or None when they belong to it (or hold nothing yet)."""
    positions = [stored.get(name, 0) for name in names]
    if not positions or max(positions) == 0:
        return None
    head = log.head()
    if max(positions) > head:
        return Mismatch(WHAT, max(positions), head, True, kept_as)
    # The fingerprint is taken where the last batch ended: the slowest projection's
    # position (a projection added since, still at 0, has not moved it yet).
    reached = min(p for p in positions if p > 0)
    if stored.get(IDENTITY_KEY, 0) != fingerprint(log.chain_hash_at(reached)):
        return Mismatch(WHAT, reached, head, False, kept_as)
    return None


def kept_as(url: str, when: str) -> str:
    """Where ``keep_aside`` would keep the read models (for messages)."""
    path = sqlite_file(url)
    if path is not None:
        return str(kept_file(read_model_path(str(path)), when).name)
    env = store_env(url, create=False)
    return f"schema {kept_schema(env['POSTGRES_SCHEMA'], when)!r}"


def read_models_mismatch(url: str, log: ChainView, when: str) -> Mismatch | None:
    """Whether the read models of the log at ``url`` belong to ``log`` (see
    ``mismatch_of``); reads them without creating or changing anything."""
    names = [p.name for p in all_projections()]
    return mismatch_of(stored_positions(url), log, names, kept_as(url, when))


def keep_aside(url: str, when: str) -> str:
    """Keep the read models of a replaced log under another name, so the runner starts
    from nothing: the file as ``NAME.read.db.replaced-<time>``, or (PostgreSQL) their
    tables moved into the schema ``<schema>_replaced_<time>``. Returns where."""
    path = sqlite_file(url)
    if path is not None:
        return str(keep_file_aside(read_model_path(str(path)), when))
    env = store_env(url, create=False)
    tables = ["rm_positions", "rm_folds", *(t.name for p in all_projections() for t in p.tables)]
    # The nodes' lease, list and inbox belong to the replaced log too: its epochs and
    # forwarded commands must not carry over to the new one.
    tables += list(CLUSTER_TABLES)
    import psycopg

    with psycopg.connect(**postgres_connect_args(env), autocommit=True) as conn:
        return f"schema {keep_tables_aside(conn, env['POSTGRES_SCHEMA'], tables, when)!r}"
