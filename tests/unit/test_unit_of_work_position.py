"""The state's position is put back by the unit of work, not by an undo step per event."""

from __future__ import annotations

from typing import Any

from tierlog.domain.commands import COMMANDS
from tierlog.domain.errors import DomainError
from tierlog.domain.unit_of_work import UnitOfWork


def _submit(description: str) -> Any:
    return COMMANDS["submit_task"](description=description)


def test_a_rolled_back_batch_puts_the_position_and_the_state_back(h: Any) -> None:
    h.agent("a1")
    before = h.state.snapshot()
    with UnitOfWork(h.state) as uow:
        h.svc.handle(_submit("add tests for the parser"), uow, h.now())
        h.svc.schedule(uow, h.now())
        assert h.state.position == before["position"] + len(uow.events) > before["position"]
        # left without commit(): rolled back
    assert h.state.snapshot() == before


def test_a_failed_command_gives_back_only_its_own_positions(h: Any) -> None:
    start = h.state.position
    with UnitOfWork(h.state) as uow:
        first = uow.attempt(lambda: h.svc.handle(_submit("write the docs"), uow, h.now()))
        kept = len(uow.events)
        assert not isinstance(first, DomainError) and kept > 0

        def fails_after_emitting() -> None:
            h.svc.handle(_submit("write more docs"), uow, h.now())
            raise DomainError("refused after its events were applied")

        failed = uow.attempt(fails_after_emitting)
        assert isinstance(failed, DomainError)
        assert len(uow.events) == kept
        assert h.state.position == start + kept
        # The next event takes the position the failed command's first one had.
        uow.attempt(lambda: h.svc.handle(_submit("and a changelog"), uow, h.now()))
        assert h.state.position == start + len(uow.events)
        uow.commit()
    assert h.state.position == start + len(uow.events)


def test_a_committed_batch_keeps_its_positions(h: Any) -> None:
    start = h.state.position
    _, events = h.run("submit_task", description="fix typo in README")
    assert h.state.position == start + len(events)
