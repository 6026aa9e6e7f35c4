"""What several nodes on one PostgreSQL log coordinate through, beside the log itself.

Three tables in the log's schema, created with the log:

- ``tierlog_leader``: one row, the leader lease: which node decides, under which
  fencing ``epoch``, until when (the database's clock, so the nodes' clocks never
  matter). A node takes the lease only once it has expired, and each take raises the
  epoch. ``tierlog_fence(node, epoch)`` runs first in every append transaction of a
  leader: it locks the row ``FOR SHARE`` and refuses (SQLSTATE ``TL409``) unless that
  node holds the lease under that epoch and the lease has not expired. A deposed or
  paused leader therefore commits nothing, and a takeover (an UPDATE of the row) waits
  for an append already past the check to commit first.
- ``tierlog_nodes``: each node's last heartbeat (role, epoch, position), for status.
- ``tierlog_inbox``: the commands followers forward to the leader. A follower inserts
  one row per command (and NOTIFYs); the leader runs them in its group commits and
  writes each result in the same transaction as the command's events
  (``tierlog_complete_inbox``), so a command is applied once even if the leader dies
  right after; a follower that gives up deletes its row only if no result is there yet,
  and a leader that finds a row of its batch deleted refuses the whole append
  (SQLSTATE ``TL410``) and decides again without it.

Lock order, everywhere: the leader row, then the events table (eventsourcing's
EXCLUSIVE lock), then inbox rows. Nothing here touches the read models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.sql import SQL, Composed, Identifier

LEADER_TABLE = "tierlog_leader"
NODES_TABLE = "tierlog_nodes"
INBOX_TABLE = "tierlog_inbox"
FENCE_FUNCTION = "tierlog_fence"
COMPLETE_FUNCTION = "tierlog_complete_inbox"
CLUSTER_TABLES = (LEADER_TABLE, NODES_TABLE, INBOX_TABLE)
NOT_LEADER_SQLSTATE = "TL409"
INBOX_GONE_SQLSTATE = "TL410"
INBOX_CHANNEL = "tierlog_inbox"
DONE_CHANNEL = "tierlog_inbox_done"


def create_statements(schema: str) -> list[tuple[tuple[str, str], Composed]]:
    """The DDL of the cluster tables and functions (idempotent), each with the
    ``(kind, name)`` of the object it makes, as the catalog names it (start-up runs only
    those whose object is missing)."""
    names = {
        "schema": Identifier(schema),
        "leader": Identifier(LEADER_TABLE),
        "nodes": Identifier(NODES_TABLE),
        "inbox": Identifier(INBOX_TABLE),
        "fence": Identifier(FENCE_FUNCTION),
        "complete": Identifier(COMPLETE_FUNCTION),
        "inbox_pending": Identifier(INBOX_TABLE + "_pending"),
    }
    statements = (
        "CREATE TABLE IF NOT EXISTS {schema}.{leader} ("
        "singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton), "
        "node text NOT NULL, epoch bigint NOT NULL, expires_at timestamptz NOT NULL, "
        "elected_at timestamptz NOT NULL DEFAULT clock_timestamp())",
        "CREATE TABLE IF NOT EXISTS {schema}.{nodes} ("
        "node text PRIMARY KEY, role text NOT NULL, epoch bigint, leader text, "
        "position bigint NOT NULL DEFAULT 0, lag bigint NOT NULL DEFAULT 0, "
        "started_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
        "seen_at timestamptz NOT NULL DEFAULT clock_timestamp())",
        "CREATE TABLE IF NOT EXISTS {schema}.{inbox} ("
        "id bigserial PRIMARY KEY, node text NOT NULL, verb text NOT NULL, "
        "body bytea NOT NULL, submitted_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
        "result bytea, position bigint, done_at timestamptz)",
        "CREATE INDEX IF NOT EXISTS {inbox_pending} ON {schema}.{inbox} (id) WHERE result IS NULL",
        "CREATE OR REPLACE FUNCTION {schema}.{fence}(p_node text, p_epoch bigint) "
        "RETURNS void LANGUAGE plpgsql AS $$ DECLARE r record; BEGIN "
        "SELECT node, epoch, expires_at > clock_timestamp() AS live INTO r "
        "FROM {schema}.{leader} WHERE singleton FOR SHARE; "
        "IF NOT FOUND OR r.node <> p_node OR r.epoch <> p_epoch OR NOT r.live THEN "
        "RAISE EXCEPTION 'tierlog: node % (epoch %) does not hold the leader lease', "
        f"p_node, p_epoch USING ERRCODE = '{NOT_LEADER_SQLSTATE}'; "
        "END IF; END $$",
        "CREATE OR REPLACE FUNCTION {schema}.{complete}("
        "p_ids bigint[], p_results bytea[], p_position bigint) RETURNS void "
        "LANGUAGE plpgsql AS $$ DECLARE n bigint; BEGIN "
        "UPDATE {schema}.{inbox} AS i SET result = r.result, position = p_position, "
        "done_at = clock_timestamp() FROM unnest(p_ids, p_results) AS r(id, result) "
        "WHERE i.id = r.id AND i.result IS NULL; "
        "GET DIAGNOSTICS n = ROW_COUNT; "
        "IF n <> cardinality(p_ids) THEN "
        "RAISE EXCEPTION 'tierlog: % of % forwarded commands were withdrawn', "
        f"cardinality(p_ids) - n, cardinality(p_ids) USING ERRCODE = '{INBOX_GONE_SQLSTATE}'; "
        "END IF; "
        f"PERFORM pg_notify('{DONE_CHANNEL}', ''); END $$",
    )
    makes = (
        ("relation", LEADER_TABLE),
        ("relation", NODES_TABLE),
        ("relation", INBOX_TABLE),
        ("relation", INBOX_TABLE + "_pending"),
        ("function", FENCE_FUNCTION),
        ("function", COMPLETE_FUNCTION),
    )
    return [
        (made, SQL(statement).format(**names))
        for made, statement in zip(makes, statements, strict=True)
    ]


def fence_statement(schema: str) -> Composed:
    """``SELECT tierlog_fence(node, epoch)``: the check a leader's append runs first."""
    return SQL("SELECT {schema}.{fence}(%s, %s)").format(
        schema=Identifier(schema), fence=Identifier(FENCE_FUNCTION)
    )


def complete_statement(schema: str) -> Composed:
    """``SELECT tierlog_complete_inbox(ids, results, position)``."""
    return SQL("SELECT {schema}.{complete}(%s, %s, %s)").format(
        schema=Identifier(schema), complete=Identifier(COMPLETE_FUNCTION)
    )


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a psycopg error somewhere in ``exc``'s chain of causes."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str):
            return state
        seen = seen.__cause__ or seen.__context__
    return None


@dataclass(frozen=True)
class LeaderView:
    """The lease as the database holds it now."""

    node: str
    epoch: int
    live: bool
    expires_in_s: float


@dataclass(frozen=True)
class NodeView:
    """One node's last heartbeat."""

    node: str
    role: str
    epoch: int | None
    leader: str | None
    position: int
    lag: int
    seen_s_ago: float
    started_at: str


@dataclass(frozen=True)
class InboxCommand:
    """A forwarded command waiting for the leader."""

    id: int
    verb: str
    body: bytes


class ClusterStore:
    """The lease, the node list and the inbox, over a small pool of connections of its
    own (autocommit: each call is one short transaction)."""

    def __init__(
        self, connect_args: dict[str, Any], schema: str, *, lock_timeout_s: float = 1.0
    ) -> None:
        from psycopg.rows import tuple_row
        from psycopg_pool import ConnectionPool

        self.schema = schema
        self._pool: ConnectionPool[Any] = ConnectionPool(
            # A lease call never waits long for a lock (a paused leader's append holds the
            # lease row): it fails, and the keeper tries again next round.
            kwargs={
                **connect_args,
                "autocommit": True,
                "row_factory": tuple_row,
                "options": f"-c lock_timeout={max(1, int(lock_timeout_s * 1000))}ms",
            },
            min_size=1,
            max_size=4,
            open=True,
            name="tierlog-cluster",
        )
        names = {
            "schema": Identifier(schema),
            "leader": Identifier(LEADER_TABLE),
            "nodes": Identifier(NODES_TABLE),
            "inbox": Identifier(INBOX_TABLE),
        }
        self._sql = {key: SQL(text).format(**names) for key, text in _STATEMENTS.items()}

    def _one(self, key: str, params: Sequence[Any] | dict[str, Any]) -> tuple[Any, ...] | None:
        with self._pool.connection() as conn:
            row: tuple[Any, ...] | None = conn.execute(self._sql[key], params).fetchone()
            return row

    def _exec(self, key: str, params: Sequence[Any]) -> None:
        with self._pool.connection() as conn:
            conn.execute(self._sql[key], params)

    def _all(self, key: str, params: Sequence[Any] | dict[str, Any]) -> list[tuple[Any, ...]]:
        with self._pool.connection() as conn:
            return list(conn.execute(self._sql[key], params).fetchall())

    # --- the lease ----------------------------------------------------------------------

    def acquire(self, node: str, lease_s: float, min_epoch: int) -> int | None:
        """Take the lease if it is free or has expired: the new epoch (above both the
        lease's last and ``min_epoch``, the last one the log recorded); None if another
        node holds a live lease."""
        row = self._one("acquire", {"node": node, "lease": lease_s, "min_epoch": min_epoch})
        return None if row is None else int(row[0])

    def renew(self, node: str, epoch: int, lease_s: float) -> bool:
        """Extend a lease this node holds and that has not expired; False if it is lost."""
        return self._one("renew", (lease_s, node, epoch)) is not None

    def release(self, node: str, epoch: int) -> None:
        """Give the lease up now (a clean stop), so a follower takes over at once."""
        self._one("release", (node, epoch))

    def leader(self) -> LeaderView | None:
        """Who holds the lease (None before the first election)."""
        row = self._one("leader", ())
        if row is None:
            return None
        return LeaderView(str(row[0]), int(row[1]), bool(row[2]), float(row[3]))

    # --- the nodes ----------------------------------------------------------------------

    def heartbeat(
        self, node: str, role: str, epoch: int | None, leader: str | None, position: int, lag: int
    ) -> None:
        """Record this node's role and position now."""
        self._one("heartbeat", (node, role, epoch, leader, position, lag))

    def nodes(self) -> list[NodeView]:
        """Every node that has run on this log, the most recently seen first."""
        return [
            NodeView(str(r[0]), str(r[1]), r[2], r[3], int(r[4]), int(r[5]), float(r[6]), str(r[7]))
            for r in self._all("nodes", ())
        ]

    # --- the inbox ----------------------------------------------------------------------

    def enqueue(self, node: str, commands: Sequence[tuple[str, bytes]]) -> list[int]:
        """Forward commands (verb, body) in one statement; their inbox ids, in order (the
        leader is woken by one NOTIFY)."""
        verbs, bodies = [verb for verb, _ in commands], [body for _, body in commands]
        return [int(r[0]) for r in self._all("enqueue", (node, verbs, bodies))]

    def pending(self, limit: int, exclude: Sequence[int]) -> list[InboxCommand]:
        """Commands without a result, oldest first, leaving out ``exclude`` (in hand)."""
        rows = self._all("pending", (list(exclude), limit))
        return [InboxCommand(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def results(self, ids: Sequence[int]) -> dict[int, tuple[bytes, int]]:
        """The results (and the leader's position after them) of those of ``ids`` done."""
        rows = self._all("results", (list(ids),))
        return {int(r[0]): (bytes(r[1]), int(r[2])) for r in rows}

    def existing(self, ids: Sequence[int]) -> set[int]:
        """Those of ``ids`` still in the inbox (not withdrawn)."""
        return {int(r[0]) for r in self._all("existing", (list(ids),))}

    def withdraw(self, inbox_id: int) -> bool:
        """Delete a command no leader has answered yet; False if it has an answer."""
        return self._one("withdraw", (inbox_id,)) is not None

    def prune(self, older_than_s: float) -> None:
        """Forget answered commands older than ``older_than_s``."""
        self._exec("prune", (older_than_s,))

    def close(self) -> None:
        """Close the pool."""
        self._pool.close()


_STATEMENTS = {
    "acquire": (
        "INSERT INTO {schema}.{leader} (singleton, node, epoch, expires_at) VALUES "
        "(true, %(node)s, %(min_epoch)s + 1, clock_timestamp() + make_interval(secs => %(lease)s)) "
        # The expiry is computed again after any wait for the row's lock: a lease taken
        # after a wait must not be born expired.
        "ON CONFLICT (singleton) DO UPDATE SET node = EXCLUDED.node, "
        "epoch = GREATEST({leader}.epoch, %(min_epoch)s) + 1, "
        "expires_at = clock_timestamp() + make_interval(secs => %(lease)s), "
        "elected_at = clock_timestamp() WHERE {leader}.expires_at <= clock_timestamp() "
        "RETURNING epoch"
    ),
    "renew": (
        "UPDATE {schema}.{leader} SET expires_at = clock_timestamp() + "
        "make_interval(secs => %s) WHERE node = %s AND epoch = %s "
        "AND expires_at > clock_timestamp() RETURNING epoch"
    ),
    "release": (
        "UPDATE {schema}.{leader} SET expires_at = clock_timestamp() "
        "WHERE node = %s AND epoch = %s RETURNING epoch"
    ),
    "leader": (
        "SELECT node, epoch, expires_at > clock_timestamp(), "
        "EXTRACT(EPOCH FROM expires_at - clock_timestamp())::float8 FROM {schema}.{leader}"
    ),
    "heartbeat": (
        "INSERT INTO {schema}.{nodes} AS n (node, role, epoch, leader, position, lag) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (node) DO UPDATE SET "
        "role = EXCLUDED.role, epoch = EXCLUDED.epoch, leader = EXCLUDED.leader, "
        "position = EXCLUDED.position, lag = EXCLUDED.lag, seen_at = clock_timestamp() "
        "RETURNING node"
    ),
    "nodes": (
        "SELECT node, role, epoch, leader, position, lag, "
        "EXTRACT(EPOCH FROM clock_timestamp() - seen_at)::float8, started_at::text "
        "FROM {schema}.{nodes} ORDER BY seen_at DESC LIMIT 100"
    ),
    # Ids come from the sequence in the order rows are inserted (ORDER BY n), so sorting
    # them gives the commands' order back; one NOTIFY however many rows.
    "enqueue": (
        "WITH added AS (INSERT INTO {schema}.{inbox} (node, verb, body) "
        "SELECT %s, v, b FROM unnest(%s::text[], %s::bytea[]) WITH ORDINALITY AS t(v, b, n) "
        "ORDER BY n RETURNING id), woken AS "
        f"(SELECT pg_notify('{INBOX_CHANNEL}', '')) "
        "SELECT id FROM added, woken ORDER BY id"
    ),
    "pending": (
        "SELECT id, verb, body FROM {schema}.{inbox} WHERE result IS NULL "
        "AND NOT (id = ANY(%s)) ORDER BY id LIMIT %s"
    ),
    "results": (
        "SELECT id, result, position FROM {schema}.{inbox} "
        "WHERE id = ANY(%s) AND result IS NOT NULL"
    ),
    "existing": "SELECT id FROM {schema}.{inbox} WHERE id = ANY(%s)",
    "withdraw": "DELETE FROM {schema}.{inbox} WHERE id = %s AND result IS NULL RETURNING id",
    "prune": (
        "DELETE FROM {schema}.{inbox} WHERE result IS NOT NULL "
        "AND done_at < clock_timestamp() - make_interval(secs => %s)"
    ),
}
