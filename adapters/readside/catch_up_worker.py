"""Read models far behind the log, folded in a process of their own while ``serve``
starts.

On a first start (or after a fold changed) the read models must fold the whole log, and
the scheduler runtime must fold it too, into its state. In one process both share one
interpreter lock: the start takes as long as both folds together. A worker process
folds the read models from the store instead, on another core, while the runtime folds
its state here; then this process's runner folds what is left (what the runtime's
first pass appended), as after any restart.

Nothing here changes what is folded or how: the worker is the ordinary projection
runner over the same read store, and the positions it commits with its rows are what
the runner here starts from (exactly once, as between two runners on two nodes). A
worker that fails or is stopped loses only time: whatever it committed stays, and the
runner here folds the rest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from tierlog.adapters.readside.read_store import ReadStore
from tierlog.adapters.readside.runner import ProjectionRunner
from tierlog.adapters.runtime.process_memory import cyclic_gc_paused
from tierlog.adapters.settings import START_FOLD_BATCH, Settings
from tierlog.adapters.store.event_log import EventLog

log = logging.getLogger(__name__)


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worth_a_worker(settings: Settings, behind: int) -> bool:
    """Whether read models ``behind`` events behind the log are better folded by a
    worker: far enough behind (``projection_worker_start_events``; 0: never) and a
    second core to run it on."""
    threshold = settings.projection_worker_start_events
    return 0 < threshold <= behind and usable_cores() >= 2


def fold_read_models(settings: Settings, stop: int) -> int:
    """The worker's work: fold every read model of ``settings.store`` up to position
    ``stop``; returns the events folded."""
    events = EventLog(settings.store, connect_timeout_s=settings.store_connect_timeout_s)
    try:
        # A long stretch of the log: fewer, fuller transactions write each row fewer times.
        runner = ProjectionRunner(
            events, ReadStore(events), batch=max(settings.projection_batch, START_FOLD_BATCH)
        )
        try:
            runner.start()
            with cyclic_gc_paused():  # 34 s -> 19 s on 1,000,000 events, with the batch
                return runner.run_until_caught_up(stop)
        finally:
            runner.close()
    finally:
        events.close()


def settings_for_worker(settings: Settings) -> bytes:
    """``settings`` as JSON for the worker, without its secrets (it needs none)."""
    secrets = {
        name
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation)
    }
    return settings.model_dump_json(exclude=secrets).encode()


@contextmanager
def read_models_folded_aside(settings: Settings, stop: int) -> Iterator[subprocess.Popen[bytes]]:
    """While the block runs, a worker process folds the read models up to ``stop``;
    the block's end waits for it (a failure is logged: the caller's runner folds what
    it left). Leaving the block by an exception stops the worker."""
    # A plain subprocess of the installed package (``python -m``), so that no caller
    # needs the ``__main__`` guard that multiprocessing's spawn would; the settings go
    # on stdin, the worker's log lines to this process's stderr.
    worker = subprocess.Popen(
        [sys.executable, "-m", "tierlog.adapters.readside.catch_up_worker", str(stop)],
        stdin=subprocess.PIPE,
    )
    try:
        assert worker.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died at once: its exit code says
            worker.stdin.write(settings_for_worker(settings))
        with contextlib.suppress(BrokenPipeError):
            worker.stdin.close()
        yield worker
    except BaseException:
        worker.kill()
        worker.wait()
        raise
    if worker.wait() != 0:
        log.warning(
            "the read-model worker ended with exit code %s; the read models catch up here",
            worker.returncode,
        )


def main(argv: Sequence[str]) -> int:
    """The worker: settings as JSON on stdin, the position to fold up to as argument."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.model_validate_json(sys.stdin.buffer.read())
    stop = int(argv[0])
    folded = fold_read_models(settings, stop)
    log.info("read-model worker folded %d events up to position %d", folded, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
