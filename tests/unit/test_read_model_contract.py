"""The typed read-model contract (issue #16): what a fold stores and how the read side
shows it, exactly and back again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest

from tierlog.adapters.readside.formats import answer_row
from tierlog.projections.base import (
    ID,
    STATES,
    STATUSES,
    TIERS,
    Table,
    id_bytes,
    id_text,
    micros,
    time_text,
)
from tierlog.projections.registry import all_projections


@pytest.mark.parametrize(
    "when",
    [
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 2, 52, 500000, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(9000, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
    ],
)
def test_a_utc_time_reads_back_as_the_text_it_had(when: datetime) -> None:
    assert time_text(micros(when)) == when.isoformat()


def test_a_time_in_another_zone_reads_back_as_the_same_instant_in_utc() -> None:
    there = datetime(2026, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert time_text(micros(there)) == "2026-01-01T00:00:00+00:00"


def test_micros_is_exact_where_a_float_would_round() -> None:
    when = datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC)
    assert micros(when) == 9_223_372_036_854_775
    assert micros(when + timedelta(microseconds=1)) == micros(when) + 1


def test_the_conversion_caches_give_each_value_its_own_result() -> None:
    first, second = uuid4(), uuid4()
    assert id_bytes(first) == first.bytes and id_bytes(second) == second.bytes
    assert id_bytes(UUID(str(first))) == first.bytes  # equal, not the same object
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert micros(t0) != micros(t0 + timedelta(microseconds=1))
    assert id_text(first.bytes) == str(first)


def test_codes_name_every_value_once_and_refuse_an_unknown_one() -> None:
    assert STATES.names[STATES.code["dead_lettered"]] == "dead_lettered"
    assert TIERS.name(None) is None
    assert len(set(STATUSES.code.values())) == len(STATUSES.names)
    with pytest.raises(KeyError):
        STATES.code["paused"]
    with pytest.raises(IndexError):
        STATES.name(len(STATES.names))


def test_a_table_needs_its_key_first() -> None:
    with pytest.raises(ValueError, match="key columns must come first"):
        Table("t", (("value", "BIGINT"), ("name", "TEXT")), key=("name",))


def test_every_column_name_has_one_kind_across_the_read_models() -> None:
    kinds: dict[str, str] = {}
    for projection in all_projections():
        for table in projection.tables:
            for name, kind in zip(table.column_names, table.kinds, strict=True):
                assert kinds.setdefault(name, kind.name) == kind.name, name


def test_a_row_reads_as_the_answers_show_it() -> None:
    task = uuid4()
    row = answer_row(
        ["task_id", "state", "tier", "priority", "updated_at", "submission", "position", "n"],
        [task.bytes, 1, 2, 0, 0, '{"a":[1]}', 7, 3],
    )
    assert row == {
        "task_id": str(task),
        "state": "assigned",
        "tier": "complex",
        "priority": "urgent",
        "updated_at": "1970-01-01T00:00:00+00:00",
        "submission": {"a": [1]},
        "position": 7,
        "n": 3,
    }
    assert answer_row(["task_id", "lease_expires_at"], [None, None]) == {
        "task_id": None,
        "lease_expires_at": None,
    }


def test_task_ids_are_stored_as_their_bytes_everywhere() -> None:
    for projection in all_projections():
        for table in projection.tables:
            if "task_id" in table.column_names:
                kind = table.kinds[table.index("task_id")]
                assert kind is ID, table.name
