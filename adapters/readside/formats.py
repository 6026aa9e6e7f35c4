"""How read-model rows read in answers: each column as the ``Kind`` its table declares
(``projections.base``) says, so task ids read as UUID text, times as ISO 8601, codes as
names and JSON columns as objects. Paid per row served, not per event folded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tierlog.projections.base import TIME, Kind
from tierlog.projections.registry import all_projections


def _readers() -> dict[str, Callable[[Any], Any]]:
    """How each column name reads, from the kinds the tables declare (a name has one
    kind in every table; ``task_updated_at`` is the dashboard's alias of a time)."""
    kinds: dict[str, Kind] = {"task_updated_at": TIME}
    for projection in all_projections():
        for table in projection.tables:
            for name, kind in zip(table.column_names, table.kinds, strict=True):
                if kinds.setdefault(name, kind) != kind:
                    raise AssertionError(f"column {name} has two kinds")
    return {name: kind.read for name, kind in kinds.items() if kind.read is not None}


_READERS = _readers()


def answer_row(columns: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
    """One row of a query (its column names and values) as the answers show it."""
    row: dict[str, Any] = {}
    readers = _READERS
    for name, value in zip(columns, values, strict=True):
        read = readers.get(name)
        row[name] = value if read is None or value is None else read(value)
    return row
