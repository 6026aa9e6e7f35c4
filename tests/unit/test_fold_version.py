"""Checkpoints carry the fold they were made under: one from an earlier fold lacks what
the state now keeps (issue #13: deadlines of queued tasks, submission digests, the
agent a running task was cancelled from), so it is refused and the log folded again."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from tierlog.domain.snapshot import FOLD_VERSION, OlderFoldError, dump_state, load_state


def test_a_checkpoint_round_trips_with_the_deadlines_of_queued_tasks(h):
    deadline = h.now() + timedelta(seconds=30)
    h.submit("trivial", complete_by=deadline, idempotency_key="k")
    loaded = load_state(dump_state(h.state))
    assert loaded.next_deadline() == deadline.timestamp()
    assert loaded.tasks == h.state.tasks


@pytest.mark.parametrize("older", [None, FOLD_VERSION - 1])
def test_a_checkpoint_of_an_earlier_fold_is_refused(h, older):
    h.submit("trivial")
    raw = msgspec.msgpack.decode(dump_state(h.state))
    if older is None:
        del raw["fold_version"]  # written before the field existed: fold 1
    else:
        raw["fold_version"] = older
    with pytest.raises(OlderFoldError, match="folded by an earlier tierlog") as info:
        load_state(msgspec.msgpack.encode(raw))
    assert info.value.found == (older or 1)
