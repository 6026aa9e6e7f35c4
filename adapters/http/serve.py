"""``tierlog serve``: the HTTP API, the scheduler runtime and the projection runner over
one store; the runner in a process of its own when two cores are usable
(``readside.runner_process``)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn

from tierlog.adapters import bootstrap
from tierlog.adapters.http.auth import admin_token_path
from tierlog.adapters.readside.runner_process import wants_process
from tierlog.adapters.runtime.process_memory import limit_process_memory, trimming_free_memory
from tierlog.adapters.settings import Settings
from tierlog.adapters.store.faults import redact_url

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Server(uvicorn.Server):
    """uvicorn's server, but a stop signal ends ``run()`` normally (so the runtime and
    the runner are stopped in order) and first answers every waiting long-poll."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Start a graceful stop; wake long-polls so they do not hold it up."""
        self._on_exit()
        super().handle_exit(sig, frame)

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Handle SIGINT/SIGTERM while serving; unlike uvicorn, do not re-raise them."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _announce(server: uvicorn.Server, settings: Settings) -> None:
    # Only once the socket listens: scripts wait for this line before connecting.
    while not server.started and not server.should_exit:
        time.sleep(0.01)
    if server.started:
        print(
            f"tierlog serving on http://{settings.host}:{settings.port} "
            f"(store {redact_url(settings.store)})",
            flush=True,
        )


def _start(system: bootstrap.System) -> None:
    """``system.start()``; if it fails on an event that does not decode, refuse to start
    with one line naming its position and type (the log is append-only: a server that
    cannot read it must not write to it)."""
    try:
        system.start()
    except Exception as exc:
        undecodable = bootstrap.undecodable_event(system.log)
        if undecodable is None:
            raise
        raise undecodable from exc


def serve(settings: Settings, *, accept_replaced_log: bool = False) -> None:
    """Check the store (``bootstrap.preflight``: refuses a corrupt store, or read models
    and checkpoints of another log unless ``accept_replaced_log``), then run until
    interrupted (SIGINT or SIGTERM), then stop every part in order.

    A store or setting that stops it from starting raises (the CLI says it in one line);
    "tierlog stopped" is said only by a server that ran.
    """
    for aside in bootstrap.preflight(settings, accept_replaced_log=accept_replaced_log):
        print(f"tierlog: kept {aside}; rebuilding from this log", file=sys.stderr, flush=True)
    limit_process_memory(  # before any thread starts
        arenas=settings.malloc_arenas,
        mmap_threshold_kb=settings.malloc_mmap_threshold_kb,
        sqlite_mb=settings.sqlite_memory_mb,
    )
    system = bootstrap.build_system(settings, runner_process=wants_process(settings))
    ran = False
    try:
        _start(system)
        token, generated = bootstrap.admin_token(settings, system.log)
        if generated:
            kept = admin_token_path(system.log)
            print(f"operator token (kept in {kept}, shown once): {token}", flush=True)
        app, ctx = bootstrap.build_app(system, token)
        system.start_background()
        server = _Server(
            uvicorn.Config(
                app,
                host=settings.host,
                port=settings.port,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=5,
            ),
            on_exit=ctx.polls.shutting_down,
        )
        threading.Thread(
            target=_announce, args=(server, settings), name="tierlog-announce", daemon=True
        ).start()
        ran = True
        with trimming_free_memory(settings.malloc_trim_every_s):
            server.run()
    finally:
        system.close()
        if ran:
            print("tierlog stopped", file=sys.stderr, flush=True)
