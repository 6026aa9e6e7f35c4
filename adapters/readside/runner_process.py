"""``serve``'s read models, kept up to date by a process of their own.

In one process the projection runner and the writer share one interpreter lock: every
event is decided, encoded and appended on it, and then folded into the read models on
it too. Measured with ``tierlog bench --http``'s batch submissions, the runner's thread
held the lock about a quarter of the time, and ``serve`` without it took batches about
1.5 times as fast. Here the runner runs in a child process on another core instead: the
ordinary ``ProjectionRunner``, following the log from the store.

The two talk over the child's pipes, one line at a time:

* ``serve`` writes the settings (as JSON, without secrets) on the first line of the
  child's stdin, then an empty line after each commit of its writer: the child reads
  the store at once instead of at its next poll. Wake-ups are coalesced on a thread of
  their own, so the writer never waits for the pipe.
* The child writes each position its read models reached on its stdout; ``serve``
  answers ``min_position`` reads and the dashboard from the last one.

Nothing here changes what is folded or how: the child's batches commit their rows with
their positions (exactly once, as between two runners on two nodes), so a child that is
killed loses only time. It is started again; after ``QUICK_FAILURES`` short lives in a
row the read models go back to a thread of ``serve`` (said once, as an error). The child
stops when its stdin closes: at ``serve``'s stop, or when ``serve`` dies.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, Protocol

from tierlog.adapters.readside.catch_up_worker import settings_for_worker, usable_cores
from tierlog.adapters.readside.read_store import ReadStore
from tierlog.adapters.readside.runner import ProjectionRunner
from tierlog.adapters.runtime.process_memory import limit_process_memory, trimming_free_memory
from tierlog.adapters.settings import Settings
from tierlog.adapters.store.event_log import EventLog

log = logging.getLogger(__name__)

QUICK_FAILURES = 3
"""Children in a row that die within ``QUICK_LIFE_S`` before serve folds in a thread."""
QUICK_LIFE_S = 10.0
RESTART_PAUSE_S = 1.0
STOP_WAIT_S = 10.0


class ReadModelProgress(Protocol):
    """What the HTTP edge needs of whoever keeps the read models up to date."""

    @property
    def committed_position(self) -> int:
        """The position every read model has reached."""
        ...

    def wake(self) -> None:
        """Look at the log now (the writer calls this after each commit)."""
        ...

    def status(self) -> dict[str, Any]:
        """Where the read models are folded and how far (``/healthz``)."""
        ...


def wants_process(settings: Settings) -> bool:
    """Whether ``serve`` keeps its read models in a process of their own."""
    if settings.projection_process == "auto":
        return usable_cores() >= 2
    return settings.projection_process == "on"


def child_command() -> list[str]:
    """The child's command line: the installed package, run as a module."""
    return [sys.executable, "-m", "tierlog.adapters.readside.runner_process"]


class RunnerProcess:
    """The parent's side: starts, feeds, hears and supervises the child.

    ``fallback`` is serve's own runner, started in a thread if children keep dying.
    """

    def __init__(
        self,
        settings: Settings,
        fallback: ProjectionRunner,
        *,
        command: Callable[[], list[str]] = child_command,
    ) -> None:
        self.settings = settings
        self.fallback = fallback
        self.command = command
        self.restarts = 0
        """Children started again after one died."""
        self.in_thread = False
        """Whether the read models went back to a thread of serve (children kept dying)."""
        self._position = 0
        self._reported = False  # whether the running child said where it stands yet
        self._position_lock = threading.Lock()
        self._spawning = threading.Lock()  # a restart against a stop
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []

    @property
    def committed_position(self) -> int:
        """The last position the child reported (or serve's runner, in a thread)."""
        if self.in_thread:
            return self.fallback.committed_position
        return self._position

    def _reached(self, position: int) -> None:
        with self._position_lock:  # reports never move it back
            self._position = max(self._position, position)

    @property
    def pid(self) -> int | None:
        """The running child's process id (None: none running)."""
        child = self._child
        return None if child is None or child.poll() is not None else child.pid

    def start(self) -> None:
        """Start the child, from the position serve's runner brought the read models to."""
        self._reached(self.fallback.committed_position)
        self._spawn()
        for target, name in ((self._feed, "feed"), (self._supervise, "watch")):
            thread = threading.Thread(target=target, name=f"tierlog-projections-{name}")
            thread.daemon = True
            thread.start()
            self._threads.append(thread)

    def status(self) -> dict[str, Any]:
        """Where the read models are folded (``process``, or ``thread`` once children
        kept dying), the child's process id, how often it was started again, the
        position last reported, and whether the running child reported one yet."""
        if self.in_thread:
            return {**self.fallback.status(), "restarts": self.restarts}
        return {
            "in": "process",
            "pid": self.pid,
            "restarts": self.restarts,
            "position": self._position,
            "reported": self._reported,
        }

    def wake(self) -> None:
        """Tell the child to look at the log now (never blocks)."""
        if self.in_thread:
            self.fallback.wake()
        else:
            self._wake.set()

    def _spawn(self) -> None:
        # A session of its own: a terminal's Ctrl-C stops serve, which stops the child by
        # closing its stdin (a child stopped first would be started again meanwhile).
        child = subprocess.Popen(
            self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
        )
        assert child.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died at once: the watch says
            child.stdin.write(settings_for_worker(self.settings) + b"\n")
            child.stdin.flush()
        self._child = child

    def _feed(self) -> None:
        """One line per burst of wake-ups, on this thread: a slow child or a full pipe
        holds up this thread, not the writer."""
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            child = self._child
            if self._stop.is_set() or child is None or child.stdin is None:
                continue
            with contextlib.suppress(OSError, ValueError):  # it died: the watch restarts it
                child.stdin.write(b"\n")
                child.stdin.flush()

    def _supervise(self) -> None:
        """Hear the child's positions; when it dies, start another (or fold here)."""
        quick = 0
        while not self._stop.is_set():
            child = self._child
            assert child is not None and child.stdout is not None
            started = time.monotonic()
            self._hear(child.stdout)
            code = child.wait()
            for pipe in (child.stdin, child.stdout):
                with contextlib.suppress(OSError):
                    if pipe is not None:
                        pipe.close()
            if self._stop.is_set():
                return
            quick = quick + 1 if time.monotonic() - started < QUICK_LIFE_S else 1
            if quick >= QUICK_FAILURES:
                log.error(
                    "the read models' process died %d times in a row (exit code %s); "
                    "folding them in serve's own thread from now on",
                    quick,
                    code,
                )
                self._fold_here()
                return
            log.warning("the read models' process ended with exit code %s; starting another", code)
            if self._stop.wait(RESTART_PAUSE_S):
                return
            with self._spawning:
                if self._stop.is_set():
                    return
                self.restarts += 1
                self._spawn()
            self._wake.set()  # whatever was committed meanwhile

    def _hear(self, lines: IO[bytes]) -> None:
        self._reported = False
        for line in lines:
            with contextlib.suppress(ValueError):  # a torn line from a dying child
                self._reached(int(line))
                self._reported = True

    def _fold_here(self) -> None:
        self.in_thread = True
        self.fallback.start_background()
        self.fallback.wake()

    def close(self) -> None:
        """Stop the child (its stdin closes: it ends its batch and exits) and the
        threads; a child that does not stop in ``STOP_WAIT_S`` is killed."""
        with self._spawning:  # no child is started after this: the last one is stopped
            self._stop.set()
        self._wake.set()
        self._stop_child()  # which lets the watch thread end
        for thread in self._threads:
            thread.join(STOP_WAIT_S)
        if self.in_thread:
            self.fallback.stop()

    def _stop_child(self) -> None:
        child = self._child
        if child is None:
            return
        if child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()
        try:
            child.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            log.warning("the read models' process did not stop; killing it")
            child.kill()
            child.wait()


def follow(settings: Settings, wakes: IO[bytes], report: Callable[[int], None]) -> None:
    """The child's work: keep the read models of ``settings.store`` up to date, reading
    the store at each line of ``wakes`` (and at every poll), and ``report`` each
    position reached; return once ``wakes`` ends."""
    # As ``bootstrap.build_runner`` builds serve's (the composition root imports this
    # module: calling it from here would be an import cycle).
    events = EventLog(settings.store, connect_timeout_s=settings.store_connect_timeout_s)
    try:
        runner = ProjectionRunner(
            events,
            ReadStore(events),
            batch=settings.projection_batch,
            poll_interval=settings.projection_poll_s,
        )
        try:
            runner.on_position = report
            runner.start()
            report(runner.committed_position)  # also when it did not move (from 0)
            runner.start_background()
            for _ in wakes:
                runner.wake()
        finally:
            runner.close()
    finally:
        events.close()


def main(argv: Sequence[str]) -> int:
    """The child: settings as JSON on the first line of stdin, then a line per wake-up;
    positions out, one per line."""
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    wakes, out = sys.stdin.buffer, sys.stdout.buffer
    settings = Settings.model_validate_json(wakes.readline())
    limit_process_memory(  # serve's limits: this process runs as long as it does
        arenas=settings.malloc_arenas,
        mmap_threshold_kb=settings.malloc_mmap_threshold_kb,
        sqlite_mb=settings.sqlite_memory_mb,
    )
    lock = threading.Lock()

    def report(position: int) -> None:
        with lock, contextlib.suppress(BrokenPipeError):
            out.write(b"%d\n" % position)
            out.flush()

    with trimming_free_memory(settings.malloc_trim_every_s):
        follow(settings, wakes, report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
