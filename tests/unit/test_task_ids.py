"""Task ids in time order (RFC 9562 version 7): what the store's index gains from."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from tierlog.adapters.runtime.ids import TimeOrderedIds, UrandomBits, compose, time_ordered_id


def _clock(*values: int) -> Iterator[int]:
    yield from values


def test_an_id_is_a_version_7_uuid_with_its_millisecond_first() -> None:
    ids = TimeOrderedIds(now_ms=lambda: 1_767_225_600_000, random_bits=lambda: 12345)
    made = ids()
    assert made.version == 7
    assert made.variant == "specified in RFC 4122"
    assert made.int >> 80 == 1_767_225_600_000
    assert made == compose(1_767_225_600_000, 12345)


def test_ids_increase_within_a_millisecond_and_when_the_clock_steps_back() -> None:
    times = _clock(1000, 1000, 1000, 999, 1001)
    draws = _clock(5 << 42, 1 << 42, 0, 7, 3)
    ids = TimeOrderedIds(now_ms=lambda: next(times), random_bits=lambda: next(draws))
    made = [ids() for _ in range(5)]
    assert made == sorted(made) and len(set(made)) == 5
    # The same millisecond steps on by 1 plus the draw's top 32 bits (not by one only).
    assert made[1].int - made[0].int == 2
    assert made[2].int - made[1].int == 1
    assert all(m.int >> 80 == 1000 for m in made[:4])  # 999 does not go back
    assert made[4].int >> 80 == 1001


def test_a_full_millisecond_carries_into_the_next() -> None:
    top = (1 << 74) - 1
    times = _clock(50, 50)
    draws = _clock(top, 0)
    ids = TimeOrderedIds(now_ms=lambda: next(times), random_bits=lambda: next(draws))
    first, second = ids(), ids()
    assert first.int >> 80 == 50 and second.int >> 80 == 51
    assert second > first and second.version == 7


@pytest.mark.parametrize(
    ("ms", "sequence", "says"),
    [(-1, 0, "48 bits"), (1 << 48, 0, "48 bits"), (0, -1, "74 bits"), (0, 1 << 74, "74 bits")],
)
def test_compose_refuses_what_does_not_fit(ms: int, sequence: int, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        compose(ms, sequence)


def test_the_default_generator_is_ordered_and_unique_across_threads() -> None:
    made: list[list[object]] = [[] for _ in range(4)]

    def draw(n: int) -> None:
        made[n].extend(time_ordered_id() for _ in range(2000))

    threads = [threading.Thread(target=draw, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for part in made for i in part]
    assert len(set(every)) == 8000
    for part in made:  # each thread sees its own ids in order
        assert part == sorted(part)  # type: ignore[type-var]


def test_the_random_bits_are_74_bits_and_read_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    real = os.urandom

    def counting(size: int) -> bytes:
        reads.append(size)
        return real(size)

    monkeypatch.setattr(os, "urandom", counting)
    bits = UrandomBits(per_read=4)
    drawn = [bits() for _ in range(9)]
    assert reads == [40, 40, 40]  # 10 bytes a number, 4 numbers a read
    assert all(0 <= n < 1 << 74 for n in drawn) and len(set(drawn)) == 9
