"""Following other writers' appends: the body of a thread that wakes a reader or a
writer when another process appends to the log (LISTEN/NOTIFY on PostgreSQL; SQLite
has no notifications, so there it only waits out ``stop``, a second at a time)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from tierlog.adapters.store.event_log import EventLog

log = logging.getLogger("tierlog.store")


def follow_appends(
    event_log: EventLog, stop: threading.Event, on_append: Callable[[], None]
) -> None:
    """Call ``on_append`` each time another writer appends to ``event_log``, until
    ``stop`` is set. A LISTEN that fails is logged and made again after 1 s: the thread
    must outlive a dropped connection, and a missed notification only delays a poll."""
    while not stop.is_set():
        try:
            notified = event_log.wait_for_append(1.0)
        except Exception:
            log.exception("LISTEN failed; reconnecting")
            stop.wait(1.0)
            continue
        if notified:
            on_append()
