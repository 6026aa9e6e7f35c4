"""Agent liveness across a restart (issue #13): a new process counts as hearing from
every agent when it starts, and the offline it then decides is in the log."""

from __future__ import annotations

from wiring import runtime_on

from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.clock import VirtualClock
from tierlog.domain.config import SchedulerConfig

CONFIG = SchedulerConfig(agent_idle_timeout_s=60.0)


def _offline(url: str) -> list[ev.AgentWentOffline]:
    log = EventLog(url)
    try:
        return [e for _, e in log.read(0, 10_000) if isinstance(e, ev.AgentWentOffline)]
    finally:
        log.close()


def test_a_restart_gives_every_agent_a_full_timeout_then_decides(sqlite_url):
    clock = VirtualClock()
    first = runtime_on(sqlite_url, CONFIG, clock)
    first.execute(cmd.RegisterAgent(agent_id="a1"))
    first.stop()
    clock.advance(3600.0)  # no process ran: nobody could hear the agent
    second = runtime_on(sqlite_url, CONFIG, clock)
    try:
        assert second.read(lambda s: s.agents["a1"].status) == "idle"
        clock.advance(59.0)
        second.tick()
        assert second.read(lambda s: s.agents["a1"].status) == "idle"
        second.heard("a1")  # a poll
        polled_at = clock.now()
        clock.advance(59.0)
        second.tick()
        assert second.read(lambda s: s.agents["a1"].status) == "idle"
        clock.advance(1.0)
        assert second.tick_if_needed() == 1  # the sweep is due: it runs with no traffic
        assert second.read(lambda s: s.agents["a1"].status) == "offline"
    finally:
        second.stop()
    (offline,) = _offline(sqlite_url)
    assert offline.reason == "idle_timeout"
    assert (offline.last_seen_at, offline.timestamp) == (polled_at, clock.now())
