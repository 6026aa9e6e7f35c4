"""The demo's log, reduced to what must never change by accident: the golden file's form.

``tierlog demo`` runs on a virtual clock with a seeded random, so its events follow one
another in the same order with the same fields on every run. What a rewrite of the
scheduler may change without changing behaviour is left out or made stable:

- ids (UUIDs anywhere in an event) become placeholders in first-seen order
  (``task-1``, ``task-2``, ...), named by the field that first holds them; the
  aggregate ids derived from a name the demo sets (its agents and endpoints) and the
  scheduler's id are named after that name, since the demo chose them;
- times (the timestamp and every other instant) become seconds after the first event's;
- ``scoring_duration_us`` is dropped: it is measured on the wall clock.

Log positions named inside events (``endpoint_state_position``, ``config_position``)
are kept: the events are the same only if they come in the same places.

Regenerate the golden file (only when a change of behaviour is intended, and say so
in the commit) with::

    .venv/bin/python tests/demo_golden.py

It writes ``tests/data/demo-events.golden.jsonl``, one event a line:
``[type, fields]``.
"""

from __future__ import annotations

import re
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from tierlog.adapters.store.event_log import EventLog
from tierlog.adapters.tools import demo
from tierlog.domain.events import SCHEDULER_ID, agent_aggregate_id, endpoint_aggregate_id

GOLDEN = Path(__file__).parent / "data" / "demo-events.golden.jsonl"
WALL_CLOCK_FIELDS = frozenset({"scoring_duration_us"})
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
_KIND_OF_FIELD = {"originator_id": "aggregate", "task_id": "task"}


class _Normaliser:
    """Placeholders for ids and offsets for times, stable across runs."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {str(SCHEDULER_ID): "scheduler"}
        for agent_id, _caps, _host in demo.AGENTS:
            self.names[str(agent_aggregate_id(agent_id))] = f"agent:{agent_id}"
        for host, _models in demo.ENDPOINTS:
            endpoint_id = f"{host}:11434"
            self.names[str(endpoint_aggregate_id(endpoint_id))] = f"endpoint:{endpoint_id}"
        self.counts: dict[str, int] = {}
        self.origin: datetime | None = None

    def _id(self, text: str, kind: str) -> str:
        name = self.names.get(text)
        if name is None:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            name = self.names[text] = f"{kind}-{self.counts[kind]}"
        return name

    def _time(self, text: str) -> str:
        when = datetime.fromisoformat(text)
        if self.origin is None:
            self.origin = when
        return f"+{(when - self.origin).total_seconds():.6f}s"

    def value(self, value: Any, key: str) -> Any:
        """``value`` (found under ``key``) with its ids and times made stable."""
        if isinstance(value, dict):
            return {k: self.value(v, k) for k, v in value.items() if k not in WALL_CLOCK_FIELDS}
        if isinstance(value, list):
            return [self.value(v, key) for v in value]
        if isinstance(value, str):
            if _UUID.fullmatch(value):
                # A task's own stream is named task-N: its id is first seen as the
                # originator of its TaskSubmitted.
                return self._id(value, _KIND_OF_FIELD.get(key, key.removesuffix("_id")))
            if _INSTANT.fullmatch(value):
                return self._time(value)
        return value


def normalised_events(url: str) -> list[list[Any]]:
    """Every event of the log at ``url`` as ``[type, fields]``, ids and times made stable."""
    normaliser = _Normaliser()
    log = EventLog(url)
    try:
        rows: list[list[Any]] = []
        for _position, event in log.iter_events():
            fields = msgspec.to_builtins(event)
            if type(event).__name__ == "TaskSubmitted":
                # Name the task's id by what it is before any other field names it.
                normaliser._id(fields["originator_id"], "task")
            rows.append([type(event).__name__, normaliser.value(fields, "")])
        return rows
    finally:
        log.close()


def demo_events(folder: Path) -> list[list[Any]]:
    """Run ``tierlog demo`` (its defaults) on a fresh log in ``folder``; its events."""
    url = f"sqlite:///{folder / 'demo-golden.db'}"
    demo.run_demo(url)
    return normalised_events(url)


def encode(rows: list[list[Any]]) -> bytes:
    """The golden file's bytes: one event a line, keys in a stable order."""
    return b"".join(msgspec.json.encode(row, order="sorted") + b"\n" for row in rows)


def main() -> int:
    """Regenerate the golden file from the demo as the code runs it now."""
    with tempfile.TemporaryDirectory() as folder:
        data = encode(demo_events(Path(folder)))
    GOLDEN.write_bytes(data)
    print(f"wrote {GOLDEN} ({len(data.splitlines())} events)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
