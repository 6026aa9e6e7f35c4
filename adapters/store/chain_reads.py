"""Reads of the hash chain's rows, for the audit and the start-up check: a part of
``EventLog`` kept in its own module (the rows are the chain's, not the events')."""

from __future__ import annotations

from typing import Any

LAST_COVERED = "(SELECT last_position FROM {table} ORDER BY first_position DESC LIMIT 1)"
"""The last position the hash chain covers (NULL when it is empty), as a subquery over
the chain ``table``: by its key, since rows cover consecutive, ordered ranges
(``MAX(last_position)`` would scan the whole table)."""

ChainRow = tuple[int, int, bytes, bytes]
"""One chain row as read: ``(first, last, record_hashes, chain_hash)``."""


class ChainReads:
    """The chain-row reads of ``EventLog`` (which provides the attributes below)."""

    recorder: Any
    env: dict[str, str]
    is_postgres: bool

    def chain_hash_at(self, position: int) -> bytes | None:
        """The chain hash of the chain row that covers ``position`` (None if none does)."""
        row = self.chain_row_at(position)
        return None if row is None else row[3]

    def chain_row_at(self, position: int) -> ChainRow | None:
        """The chain row ``(first, last, record_hashes, chain_hash)`` that covers
        ``position`` (None if none does)."""
        row = self._last_chain_row("<=", position)
        return None if row is None or row[1] < position else row

    def chain_row_before(self, first: int) -> ChainRow | None:
        """The chain row before the one starting at ``first`` (None if it is the first).
        Not ``chain_row_at(first - 1)``: on PostgreSQL a rolled-back append leaves
        positions no row covers, so the row before may end anywhere before ``first``."""
        return self._last_chain_row("<", first)

    def _last_chain_row(self, compare: str, position: int) -> ChainRow | None:
        """The chain row with the greatest first position ``compare`` ``position``."""
        columns = "first_position, last_position, record_hashes, chain_hash"
        table = self.recorder.chain_table_name
        where = f"WHERE first_position {compare} %s ORDER BY first_position DESC LIMIT 1"
        if self.is_postgres:
            schema = self.env["POSTGRES_SCHEMA"]
            sql = f'SELECT {columns} FROM "{schema}"."{table}" {where}'
            with self.recorder.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(sql, (position,))
                found = curs.fetchone()
                values = None if found is None else [found[c] for c in columns.split(", ")]
        else:
            sql = f"SELECT {columns} FROM {table} {where.replace('%s', '?')}"
            with self.recorder.datastore.transaction(commit=False) as curs:
                curs.execute(sql, (position,))
                found = curs.fetchone()
                values = None if found is None else list(found)
        if values is None:
            return None
        return (int(values[0]), int(values[1]), bytes(values[2]), bytes(values[3]))

    def chain_head(self) -> int:
        """The last position the hash chain covers (0 when it is empty).

        Beside ``head()`` it shows records deleted from the end of the log: the chain
        still covers them.
        """
        table = self.recorder.chain_table_name
        if self.is_postgres:
            schema = self.env["POSTGRES_SCHEMA"]
            qualified = f'"{schema}"."{table}"'
            sql = f"SELECT {LAST_COVERED.format(table=qualified)} AS last"
            with self.recorder.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(sql)
                row = curs.fetchone()
                return int(row["last"] or 0) if row else 0
        with self.recorder.datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT {LAST_COVERED.format(table=table)}")
            row = curs.fetchone()
            return int(row[0] or 0) if row else 0

    def chain_rows(self, after: int, limit: int) -> list[ChainRow]:
        """Hash chain rows ``(first, last, record_hashes, chain_hash)`` starting after
        position ``after``, in order."""
        table = self.recorder.chain_table_name
        if self.is_postgres:
            schema = self.env["POSTGRES_SCHEMA"]
            sql = (
                f'SELECT first_position, last_position, record_hashes, chain_hash FROM "{schema}".'
                f'"{table}" WHERE first_position > %s ORDER BY first_position LIMIT %s'
            )
            with self.recorder.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(sql, (after, limit))
                return [
                    (
                        r["first_position"],
                        r["last_position"],
                        bytes(r["record_hashes"]),
                        bytes(r["chain_hash"]),
                    )
                    for r in curs.fetchall()
                ]
        sql = (
            f"SELECT first_position, last_position, record_hashes, chain_hash FROM {table}"
            " WHERE first_position > ? ORDER BY first_position LIMIT ?"
        )
        with self.recorder.datastore.transaction(commit=False) as curs:
            curs.execute(sql, (after, limit))
            return [(r[0], r[1], bytes(r[2]), bytes(r[3])) for r in curs.fetchall()]
