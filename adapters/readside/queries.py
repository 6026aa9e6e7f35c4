"""Async reads of the read models: aiosqlite on SQLite, psycopg's async driver on
PostgreSQL. One query per request (bulk fetches), rows returned as dicts.

The tables hold typed values (``projections.base``: task ids as bytes, times as epoch
microseconds, codes for enumerations, JSON text); ``fetch`` turns each column into what
the answers show (``formats``), per row served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import aiosqlite

from tierlog.adapters.readside.formats import answer_row
from tierlog.adapters.readside.read_store import IDENTITY_KEY, read_model_path
from tierlog.adapters.store.event_log import EventLog, postgres_connect_args
from tierlog.projections.base import STATES, TIERS


class AsyncReadModels:
    """A shared async connection to the read models."""

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._sqlite_path: Path | None = (
            read_model_path(log.sqlite_path) if log.sqlite_path else None
        )
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Connect (call once, from the event loop)."""
        if self._sqlite_path is not None:
            self._conn = await aiosqlite.connect(self._sqlite_path)
            await self._conn.execute("PRAGMA query_only = ON")
            return
        self._conn = await self._connect_postgres()

    async def _connect_postgres(self) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(
            **postgres_connect_args(self._log.env, schema=True), autocommit=True
        )

    async def close(self) -> None:
        """Disconnect."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of one query as dicts, each column read as its kind says (ids as
        text, ISO times, names, JSON decoded)."""
        rows, columns = await self._fetch(sql, params)
        return [answer_row(columns, r) for r in rows]

    async def raw(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one query as the tables hold them."""
        rows, _ = await self._fetch(sql, params)
        return [tuple(r) for r in rows]

    async def _fetch(self, sql: str, params: Sequence[Any]) -> tuple[list[Any], list[str]]:
        if self._sqlite_path is not None:
            async with self._conn.execute(sql, params) as cursor:
                rows = await cursor.fetchall()
                return list(rows), [d[0] for d in cursor.description]
        return await self._fetch_postgres(sql, params)

    async def _fetch_postgres(self, sql: str, params: Sequence[Any]) -> tuple[list[Any], list[str]]:
        import psycopg

        async with self._lock:
            for attempt in (1, 2):
                if self._conn.closed or self._conn.broken:
                    self._conn = await self._connect_postgres()
                try:
                    async with self._conn.cursor() as cursor:
                        await cursor.execute(sql.replace("?", "%s"), params)
                        rows = await cursor.fetchall()
                        return rows, [d.name for d in cursor.description]
                except psycopg.OperationalError:
                    if attempt == 2:
                        raise  # the server is really gone: this request fails
            raise AssertionError("unreachable")

    # --- the reads the API serves ---------------------------------------------------

    async def task(self, task_id: str) -> dict[str, Any] | None:
        """One task (its id as text), or None."""
        rows = await self.fetch("SELECT * FROM rm_tasks WHERE task_id = ?", (_id(task_id),))
        return rows[0] if rows else None

    async def tasks(
        self, *, state: str | None, tier: str | None, limit: int, after: int
    ) -> list[dict[str, Any]]:
        """Tasks in submission order after the cursor, filtered by state and tier."""
        clauses, params = ["submit_position > ?"], [after]
        if state is not None:
            clauses.append("state = ?")
            params.append(STATES.code[state])
        if tier is not None:
            clauses.append("effective_tier = ?")
            params.append(TIERS.code[tier])
        params.append(limit)
        return await self.fetch(
            f"SELECT * FROM rm_tasks WHERE {' AND '.join(clauses)}"
            " ORDER BY submit_position LIMIT ?",
            params,
        )

    async def queue(self, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The first ``limit`` queued tasks in queue order, and how many are queued."""
        rows = await self.fetch(
            "SELECT q.*, COUNT(*) OVER () AS total FROM rm_queue q WHERE queued = 1"
            " ORDER BY priority_rank, submit_position LIMIT ?",
            (limit,),
        )
        total = int(rows[0]["total"]) if rows else 0
        for row in rows:
            del row["total"]
        return rows, total

    async def agents(self) -> list[dict[str, Any]]:
        """Every registered agent (a deregistered one has no row: ``projections.agents``)."""
        return await self.fetch("SELECT * FROM rm_agents ORDER BY agent_id")

    async def endpoints(self) -> list[dict[str, Any]]:
        """Every endpoint, in registration order."""
        return await self.fetch("SELECT * FROM rm_endpoints ORDER BY registered_position")

    async def telemetry(self) -> dict[str, Any]:
        """The telemetry counters, shaped."""
        from tierlog.projections.telemetry import TELEMETRY_QUERIES, summarise

        counters = await self.raw(TELEMETRY_QUERIES[0])
        states = await self.raw(TELEMETRY_QUERIES[1])
        return summarise(counters, states)

    async def timer_positions(self, task_id: str) -> list[int]:
        """Where the fallback-timer events of one task sit in the log (they are the
        scheduler's stream's, so the task's own stream does not list them)."""
        from tierlog.projections.telemetry import TIMER_POSITIONS_QUERY

        rows = await self.raw(TIMER_POSITIONS_QUERY, (_id(task_id),))
        return [int(position) for (position,) in rows]

    async def projection_positions(self) -> dict[str, int]:
        """Each read model's position."""
        rows = await self.fetch(
            "SELECT name, position FROM rm_positions WHERE name <> ?", (IDENTITY_KEY,)
        )
        return {r["name"]: int(r["position"]) for r in rows}


def _id(task_id: str) -> bytes:
    """A task id column's value for the id's text."""
    return UUID(task_id).bytes
