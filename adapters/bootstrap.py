"""The composition root: the one place that builds tierlog's parts from ``Settings``.

``serve``, the demo, the benches, the CLI and the tests build through these functions,
so every entry point wires the system the same way; tests and the demo inject a clock
and a task-id factory. Building catches up with nothing, appends nothing and refolds
nothing (``EventLog`` and ``ReadStore`` do open their connections as they are
constructed): ``start()`` on the runtime, the runner or a ``System`` does that work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from tierlog.adapters.history.checkpoints import checkpoints_mismatch
from tierlog.adapters.history.checkpoints import keep_aside as checkpoints_keep_aside
from tierlog.adapters.http.auth import load_admin_token
from tierlog.adapters.readside.catch_up_worker import read_models_folded_aside, worth_a_worker
from tierlog.adapters.readside.lineage import keep_aside as read_models_keep_aside
from tierlog.adapters.readside.lineage import read_models_mismatch
from tierlog.adapters.readside.queries import AsyncReadModels
from tierlog.adapters.readside.read_store import ReadStore
from tierlog.adapters.readside.runner import ProjectionRunner
from tierlog.adapters.readside.runner_process import ReadModelProgress, RunnerProcess
from tierlog.adapters.runtime.checkpoints import SchedulerCheckpoints
from tierlog.adapters.runtime.clock import SystemClock
from tierlog.adapters.runtime.cluster import ClusterNode
from tierlog.adapters.runtime.ids import new_task_id as time_ordered_id
from tierlog.adapters.runtime.ollama_prober import OllamaProber
from tierlog.adapters.runtime.process_memory import cyclic_gc_paused, tune_collector
from tierlog.adapters.runtime.writer import SchedulerRuntime
from tierlog.adapters.settings import START_FOLD_BATCH, Settings
from tierlog.adapters.store.codec import why_undecodable
from tierlog.adapters.store.event_log import EventLog, sqlite_file, store_env
from tierlog.adapters.store.integrity import check_chain_at_head, quick_check
from tierlog.adapters.store.lineage import NoLog, ReplacedLogError, stamp
from tierlog.adapters.store.probe import StoreKind, store_kind
from tierlog.domain.clock import Clock
from tierlog.domain.errors import UndecodableEventError
from tierlog.projections.base import Projection

if TYPE_CHECKING:
    from fastapi import FastAPI
    from pydantic import SecretStr

    from tierlog.adapters.http.deps import ApiContext


def open_log(settings: Settings, *, read_only: bool = False, leader: bool = False) -> EventLog:
    """The event log at ``settings.store``, opened right away: for writing (created if
    new), or ``read_only`` (an existing tierlog log, else ``StoreUnusableError``; then
    nothing is created or changed). A ``leader``'s log (a ``serve`` node's writer) has
    its open transactions ended by PostgreSQL after ``leader_lease_s``, so a paused node
    cannot hold up a fail-over longer than that."""
    return EventLog(
        settings.store,
        read_only=read_only,
        connect_timeout_s=settings.store_connect_timeout_s,
        idle_in_transaction_s=settings.leader_lease_s if leader else None,
    )


def check_store(settings: Settings) -> EventLog | None:
    """The start-up integrity check, before anything is written: a new store (no file,
    an empty file or schema) passes; an existing one must be a tierlog log whose SQLite
    file passes ``quick_check`` and whose hash chain is whole at the head
    (``StoreUnusableError`` in one line if not). Returns that log opened read-only, or
    None for a new store."""
    env = store_env(
        settings.store, create=False, connect_timeout_s=settings.store_connect_timeout_s
    )
    path = sqlite_file(settings.store)
    kind = store_kind(env, path)
    if path is not None and kind is not StoreKind.MISSING and path.stat().st_size:
        quick_check(path)
    if kind is not StoreKind.TIERLOG:
        return None
    log = open_log(settings, read_only=True)
    try:
        check_chain_at_head(log)
    except BaseException:
        log.close()
        raise
    return log


def check_history(
    settings: Settings, log: EventLog | None, *, accept_replaced_log: bool = False
) -> list[str]:
    """Read models and checkpoints beside ``log`` (None: no log yet) that are ahead of
    it or disagree with its chain stop the start with ``ReplacedLogError``, both
    positions named; with ``accept_replaced_log`` they are kept under another name
    instead, and the places they were kept are returned (then they are rebuilt)."""
    when = stamp()
    view = log if log is not None else NoLog()
    found = [
        (mismatch, keep)
        for mismatch, keep in (
            (read_models_mismatch(settings.store, view, when), read_models_keep_aside),
            (checkpoints_mismatch(settings.store, view, when), checkpoints_keep_aside),
        )
        if mismatch is not None
    ]
    if found and not accept_replaced_log:
        raise ReplacedLogError(found[0][0].message())
    return [f"the {m.what} as {keep(settings.store, when)}" for m, keep in found]


def preflight(settings: Settings, *, accept_replaced_log: bool = False) -> list[str]:
    """What ``serve`` checks before it writes anything: ``check_store``, then
    ``check_history``; returns what was kept aside."""
    log = check_store(settings)
    try:
        return check_history(settings, log, accept_replaced_log=accept_replaced_log)
    finally:
        if log is not None:
            log.close()


def build_runtime(
    settings: Settings,
    log: EventLog,
    *,
    clock: Clock | None = None,
    new_task_id: Callable[[], UUID] = time_ordered_id,
    long_running: bool = False,
) -> SchedulerRuntime:
    """The scheduler runtime over ``log``, under ``settings.scheduler``; not started.

    ``clock`` defaults to the wall clock; the demo and tests pass a virtual one. A
    ``long_running`` runtime (``serve``'s) keeps only live work in memory
    (``settings.retention()``) and, with ``settings.checkpoints``, starts from and
    keeps checkpoints of its state. It raises the garbage collector's thresholds for the
    process (``tune_collector``).
    """
    tune_collector()  # a scheduler allocates fast; reference counting frees its garbage
    checkpoints = None
    if long_running and settings.checkpoints:
        checkpoints = SchedulerCheckpoints(
            log,
            every_events=settings.checkpoint_every_events,
            every_s=settings.checkpoint_every_s,
        )
    return SchedulerRuntime(
        log,
        settings.scheduler,
        clock or SystemClock(),
        new_task_id=new_task_id,
        read_batch=settings.read_batch,
        poll_interval=settings.writer_poll_s,
        max_batch=settings.max_batch,
        limits=settings.command_limits(),
        retention=settings.retention() if long_running else None,
        checkpoints=checkpoints,
    )


def build_runner(
    settings: Settings,
    log: EventLog,
    *,
    store: ReadStore | None = None,
    projections: Sequence[Projection] | None = None,
) -> ProjectionRunner:
    """The projection runner of ``log``; not started. ``store`` defaults to the log's
    own read models (a file beside a SQLite log, the log's PostgreSQL schema)."""
    return ProjectionRunner(
        log,
        store or ReadStore(log),
        projections,
        batch=settings.projection_batch,
        poll_interval=settings.projection_poll_s,
    )


def build_prober(settings: Settings, runtime: SchedulerRuntime) -> OllamaProber:
    """The Ollama health prober, recording through the runtime's background writer."""
    return OllamaProber(runtime, interval_s=settings.probe_interval_s, use_background_writer=True)


def build_app(
    system: System, admin_token: str, *, hot_path: bool = True
) -> tuple[FastAPI, ApiContext]:
    """The HTTP application over ``system`` (which must have been started), and the
    context its routes share (``hot_path``: see ``tierlog.adapters.http.hot_path``)."""
    # Imported here: only serve needs the web stack (about 30 MB and 0.3 s to load),
    # and every other command builds its system through this module too.
    from tierlog.adapters.http.app import create_app
    from tierlog.adapters.http.deps import ApiContext

    ctx = ApiContext.build(
        runtime=system.runtime,
        runner=system.read_progress,
        read_models=AsyncReadModels(system.log),
        admin_token=admin_token,
        viewer_token=_secret(system.settings.viewer_token),
        long_poll_max_s=system.settings.long_poll_max_s,
        max_body_bytes=system.settings.max_body_bytes,
        max_batch_submit=system.settings.max_batch_submit,
        threads=system.settings.http_threads,
    )
    return create_app(ctx, hot_path=hot_path), ctx


def undecodable_event(log: EventLog) -> UndecodableEventError | None:
    """The first stored event that does not decode, as the one-line error that names its
    position and type; None when every event decodes. It reads the whole log: ``serve``
    calls it only when starting failed, to say why."""
    codec = log.codec
    for rows in log.iter_raw():
        for position, _, _, topic, state in rows:
            try:
                codec.decode(topic, state)
            except Exception as exc:  # an upcaster can fail any way it likes
                return UndecodableEventError(
                    f"the log holds an event this tierlog cannot decode, at position "
                    f"{position}: {why_undecodable(topic, exc)}",
                    field="store",
                )
    return None


def _secret(value: SecretStr | None) -> str | None:
    """A secret setting's text, or None when unset or empty."""
    if value is None:
        return None
    return value.get_secret_value() or None


def admin_token(settings: Settings, log: EventLog) -> tuple[str, bool]:
    """The operator's token and whether it was generated just now: the configured one
    (``TIERLOG_ADMIN_TOKEN``), else the one kept beside the log, else a new one kept
    there (owner-only)."""
    if settings.admin_token is not None and settings.admin_token.get_secret_value():
        return settings.admin_token.get_secret_value(), False
    # The environment was read into the settings already: only the kept file is left.
    return load_admin_token(log, environ={})


@dataclass
class System:
    """One process's tierlog: the log, the scheduler runtime, the read side, the prober
    (only when ``settings.probe``)."""

    settings: Settings
    log: EventLog
    runtime: SchedulerRuntime
    runner: ProjectionRunner
    prober: OllamaProber | None = None
    start_worker_exit: int | None = None
    """The exit code of the worker process that folded the read models while this
    system started (``catch_up_worker``); None: there was none."""
    runner_process: RunnerProcess | None = None
    """Keeps the read models up to date in a process of its own once started (None: the
    runner's thread here does, fed by the writer's hand-over)."""

    @property
    def read_progress(self) -> ReadModelProgress:
        """Whoever keeps the read models up to date once started: the HTTP edge's view."""
        return self.runner if self.runner_process is None else self.runner_process

    def start(self) -> None:
        """Bring everything up to date in this thread: the read models are made ready
        (``ReplacedLogError`` before anything is appended if they were built from
        another log); the runtime catches up, records the configuration and runs its
        first pass (overdue timers fire); the read models catch up. Read models far
        behind the log fold in a worker process meanwhile, on another core
        (``catch_up_worker``); else in step with the runtime's fold."""
        with cyclic_gc_paused():
            self._start()

    def _start(self) -> None:
        self.runner.start()
        handover = self.runner.handover
        head = self.log.head()
        if not self.runtime.started and worth_a_worker(
            self.settings, head - self.runner.position()
        ):
            # Both folds of a long stretch of the log at once, on two cores.
            self.runtime.hand_off_to(None)
            try:
                with read_models_folded_aside(self.settings, head) as worker:
                    self.runtime.start()
                self.start_worker_exit = worker.returncode
            finally:
                self.runtime.hand_off_to(None if handover is None else handover.offer)
        elif handover is None or self.runtime.started:
            self.runtime.start()
        else:
            # While the runtime folds the log (from its checkpoint), the read models
            # fold the same decoded events in step: one read and one decoding of the
            # log instead of two.
            with self.runner.in_step(START_FOLD_BATCH) as fold:
                self.runtime.hand_off_to(fold)
                try:
                    self.runtime.start()
                    self.runner.run_until_caught_up()  # the last batch, held back
                finally:
                    self.runtime.hand_off_to(handover.offer)
        self.runner.run_until_caught_up()

    def start_background(self) -> None:
        """``start()``, then the writer, the projection runner and the prober threads."""
        self.start()
        if self.runner_process is not None:
            self.runtime.hand_off_to(None)  # the child reads the store
            self.runner_process.start()
        self.runtime.start_background()
        if self.runner_process is None:
            self.runner.start_background()
        if self.prober is not None:
            self.prober.start()

    def close(self) -> None:
        """Stop every thread (the prober first: it writes through the runtime) and
        close the stores."""
        if self.prober is not None:
            self.prober.stop()
        if self.runner_process is not None:
            self.runner_process.close()
        self.runner.close()
        self.runner.log.close()
        self.runtime.stop()
        if self.runtime.node is not None:
            self.runtime.node.close()
        self.log.close()


def build_system(
    settings: Settings,
    *,
    clock: Clock | None = None,
    new_task_id: Callable[[], UUID] = time_ordered_id,
    runner_process: bool = False,
) -> System:
    """Everything ``serve`` runs, built from ``settings``; nothing started.
    ``runner_process``: once started, the read models are kept up to date by a process
    of their own (``readside.runner_process``), not by a thread here."""
    log = open_log(settings, leader=True)
    try:
        runtime = build_runtime(
            settings, log, clock=clock, new_task_id=new_task_id, long_running=True
        )
        # The runner follows the log on its own thread, over its own connections.
        runner_log = open_log(settings)
        try:
            runner = build_runner(settings, runner_log)
        except BaseException:
            runner_log.close()
            raise
    except BaseException:
        log.close()
        raise
    if log.is_postgres:
        # Every serve node on PostgreSQL takes part in the election: one decides.
        runtime.attach(build_node(settings, log))
    if settings.projection_handover_events:
        # The runner folds what the writer commits as it is handed over, in memory.
        runtime.hand_off_to(runner.accept_handover(settings.projection_handover_events).offer)
    prober = build_prober(settings, runtime) if settings.probe else None
    child = RunnerProcess(settings, runner) if runner_process else None
    return System(settings, log, runtime, runner, prober, runner_process=child)


def build_node(settings: Settings, log: EventLog) -> ClusterNode:
    """This process's part among several nodes on one PostgreSQL log; not started."""
    return ClusterNode(
        log,
        node_id=settings.node_id,
        lease_s=settings.leader_lease_s,
        forward_timeout_s=settings.forward_timeout_s,
    )
