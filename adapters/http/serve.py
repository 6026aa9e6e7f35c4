"""``tierlog serve``: the HTTP API, the scheduler runtime and the projection runner,
in one process over one store."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import uvicorn

from tierlog.adapters.http.app import create_app
from tierlog.adapters.http.auth import admin_token_path, load_admin_token
from tierlog.adapters.http.deps import ApiContext
from tierlog.adapters.readside.queries import AsyncReadModels
from tierlog.adapters.readside.runner import ProjectionRunner
from tierlog.adapters.runtime.clock import SystemClock
from tierlog.adapters.runtime.ollama_prober import OllamaProber
from tierlog.adapters.runtime.writer import SchedulerRuntime
from tierlog.adapters.settings import load_config
from tierlog.adapters.store.event_log import EventLog

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


def serve(
    store: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    config_path: str | Path | None = None,
    probe: bool = False,
    probe_interval_s: float = 10.0,
) -> None:
    """Run until interrupted (SIGINT or SIGTERM), then stop every part in order."""
    config = load_config(config_path)
    log = EventLog(store)
    runtime = SchedulerRuntime(log, config, SystemClock())
    runner = ProjectionRunner(EventLog(store))
    runner.run_until_caught_up()
    token, generated = load_admin_token(log)
    if generated:
        print(f"operator token (kept in {admin_token_path(log)}, shown once): {token}", flush=True)
    ctx = ApiContext.build(
        runtime=runtime, runner=runner, read_models=AsyncReadModels(log), admin_token=token
    )
    app = create_app(ctx)
    runtime.start()
    runner.start()
    prober = OllamaProber(runtime, interval_s=probe_interval_s, use_background_writer=True)
    if probe:
        prober.start()
    server = _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        ),
        on_exit=ctx.polls.shutting_down,
    )

    def announce() -> None:
        # Only once the socket listens: scripts wait for this line before connecting.
        while not server.started and not server.should_exit:
            time.sleep(0.01)
        if server.started:
            print(f"tierlog serving on http://{host}:{port} (store {store})", flush=True)

    threading.Thread(target=announce, name="tierlog-announce", daemon=True).start()
    try:
        server.run()
    finally:
        prober.stop()
        runner.close()
        runtime.stop()
        log.close()
        print("tierlog stopped", file=sys.stderr, flush=True)
