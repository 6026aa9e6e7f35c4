"""``tierlog audit``: verify the chain, replay the log checking invariants and routing
decisions, and compare read models rebuilt from the log with the live ones.

The two halves read the log independently, so on a machine with more than one core
the projection check runs in a worker process while this one replays: the audit takes
as long as the slower half, and each process's memory stays its own and bounded.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec

from tierlog.adapters.audit.projections import (
    PendingCheck,
    ProjectionCheck,
    begin_check,
    finish_check,
)
from tierlog.adapters.audit.replay import replay_check
from tierlog.adapters.audit.seal import SEAL, Seal, load_seal, write_seal
from tierlog.adapters.store.event_log import EventLog
from tierlog.domain.replay.determinism import DeterminismChecker
from tierlog.domain.replay.invariants import InvariantChecker, Violation
from tierlog.domain.replay.resume import StaleCheckersError, dump_checkers, load_checkers
from tierlog.projections.registry import all_projections


@dataclass
class AuditReport:
    """The verdict: how much was read, and every violation found (the hash chain's
    first; past ``MAX_FINDINGS`` of them the rest are only counted in ``omitted``)."""

    events: int = 0
    violations: list[Violation] = field(default_factory=list)
    omitted: int = 0
    checked: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    workers: int = 0  # processes the projection check ran in beside this one
    # The seal the checks went on from (its position; None: checked from 0), and the
    # position of the seal this audit left (None: not clean, or none could be kept).
    resumed_from: int | None = None
    sealed_at: int | None = None

    @property
    def clean(self) -> bool:
        """True when nothing is wrong."""
        return not self.violations and not self.omitted

    @property
    def total(self) -> int:
        """Every violation found, listed or not."""
        return len(self.violations) + self.omitted

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "clean": self.clean,
            "events": self.events,
            "checked": self.checked,
            "violations": [asdict(v) for v in self.violations],
            "omitted_violations": self.omitted,
            "resumed_from_seal": self.resumed_from,
            "sealed_at": self.sealed_at,
        }


# How the projection check is shared out when there is more than one core: each group
# but the last folds in a worker process of its own (reading and decoding the log
# again); the last folds here, on the events the replay pass decodes. About equal
# shares, measured on a 1,000,000-event log: tasks and queue ≈ 10 s in a worker; the
# replay ≈ 4 s plus agents, endpoints and telemetry ≈ 5 s here.
WORKER_GROUPS: tuple[tuple[str, ...], ...] = (
    ("tasks", "queue"),
    ("agents", "endpoints", "telemetry"),
)


def worker_groups() -> list[list[str]]:
    """Every projection's name in exactly one group (new ones join the last)."""
    names = [p.name for p in all_projections()]
    groups = [[n for n in group if n in names] for group in WORKER_GROUPS]
    listed = {n for group in groups for n in group}
    groups[-1].extend(n for n in names if n not in listed)
    return [g for g in groups if g]


def _start_projection_worker(
    url: str, names: list[str], seal: Seal | None
) -> tuple[subprocess.Popen[bytes], threading.Thread]:
    """The projection check in a worker process (``python -m
    tierlog.adapters.audit.projections``): a plain subprocess of the installed package,
    so no caller needs a ``__main__`` guard as multiprocessing's spawn would. The
    sealed folds of its projections are handed over on stdin by a thread, at once (a
    pipe holds far less than they may need, and the worker must not wait for this
    process's pass)."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "tierlog.adapters.audit.projections", url, *names],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    sealed = {n: f for n, f in seal.projections.items() if n in names} if seal else {}
    given = msgspec.msgpack.encode(sealed)

    def hand_over() -> None:
        pipe = worker.stdin
        assert pipe is not None
        with contextlib.suppress(BrokenPipeError):  # it died: ``communicate`` says why
            pipe.write(given)
        with contextlib.suppress(BrokenPipeError):
            pipe.close()
        worker.stdin = None  # closed: nothing left for ``communicate`` to send

    feeder = threading.Thread(target=hand_over, name="audit-worker-stdin", daemon=True)
    feeder.start()
    return worker, feeder


def _finish_projection_worker(
    worker: subprocess.Popen[bytes], feeder: threading.Thread
) -> ProjectionCheck:
    feeder.join()
    out, err = worker.communicate()
    if worker.returncode != 0:
        raise RuntimeError(f"the projection check failed: {err.decode(errors='replace').strip()}")
    return msgspec.msgpack.decode(out, type=ProjectionCheck)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _merge(parts: list[ProjectionCheck]) -> ProjectionCheck:
    """One result from the workers' results."""
    parts = [part for part in parts if part.checked] or parts  # none left here: no part
    return ProjectionCheck(
        violations=[v for part in parts for v in part.violations],
        checked="projections: "
        + "; ".join(part.checked.removeprefix("projections: ") for part in parts),
        rows_compared=sum(part.rows_compared for part in parts),
        seconds=max(part.seconds for part in parts),
        sealed={name: fold for part in parts for name, fold in part.sealed.items()},
        resumed={name: at for part in parts for name, at in part.resumed.items()},
    )


def audit(
    log: EventLog,
    *,
    progress: Callable[[int, int], None] | None = None,
    batch: int = 5000,
    parallel: bool | None = None,
    full: bool = False,
    seal: bool = True,
) -> AuditReport:
    """Verify the chain, check invariants and decisions while replaying, and compare
    the read models with a rebuild. With ``parallel`` (by default: when this machine
    has more than one core) part of the projection check runs in worker processes
    (``WORKER_GROUPS``); the rest is folded here on the replay's decoded events.

    Unless ``full``, the checks go on from the seal a clean audit left beside the log
    (``adapters.audit.seal``), if it fits: the whole chain is verified, the rest only
    from the seal. A seal that does not fit is a finding, and everything is checked
    from 0. With ``seal``, a clean audit leaves a seal at the position it reached."""
    report = AuditReport()
    started = time.perf_counter()
    found: Seal | None = None
    checkers: Resumed | None = None
    if not full:
        found, seal_findings = load_seal(log)
        report.violations.extend(seal_findings)
        checkers = _checkers(found, report) if found else None
        if checkers is None:
            found = None
    _run(log, report, found, checkers, progress, batch, parallel, seal)
    report.timings["total"] = round(time.perf_counter() - started, 2)
    return report


Resumed = tuple[int, InvariantChecker, DeterminismChecker]


def _checkers(found: Seal, report: AuditReport) -> Resumed | None:
    """The sealed checkers, or None (another release's: ignored; broken: a finding)."""
    try:
        resumed = load_checkers(found.checkers, [])
    except StaleCheckersError:
        return None
    except (msgspec.MsgspecError, ValueError) as exc:  # OlderFoldError is a ValueError
        detail = f"the seal's checkers do not load: {exc}"
        report.violations.append(Violation(found.position, SEAL, "seal_intact", detail))
        return None
    if resumed[0] != found.position:
        detail = f"the seal at {found.position} holds checkers folded to {resumed[0]}"
        report.violations.append(Violation(found.position, SEAL, "seal_intact", detail))
        return None
    return resumed


def _run(
    log: EventLog,
    report: AuditReport,
    found: Seal | None,
    checkers: Resumed | None,
    progress: Callable[[int, int], None] | None,
    batch: int,
    parallel: bool | None,
    seal: bool,
) -> None:
    """One audit pass (from ``found``, or from 0), its findings added to ``report``."""
    started = time.perf_counter()
    if parallel is None:
        parallel = _cores() > 1
    everything = [p.name for p in all_projections()]
    if not parallel:
        groups = [everything]
    elif checkers is not None:
        # From a seal, this process verifies the whole chain, which is most of the
        # work; the read models' few new events and the digests of their live tables
        # (every row) go to one worker.
        groups = [everything, []]
    else:
        groups = worker_groups()
    workers = [_start_projection_worker(log.url, names, found) for names in groups[:-1]]
    report.workers = len(workers)
    try:
        resume = found.projections if found else None
        here: PendingCheck | ProjectionCheck = ProjectionCheck()
        if groups[-1]:
            here = begin_check(log, names=groups[-1], resume=resume)
        consumers = [here.fold.feed] if isinstance(here, PendingCheck) else []
        after = here.fold.start if isinstance(here, PendingCheck) else 0
        replay = replay_check(
            log,
            progress=progress,
            batch=batch,
            consumers=consumers,
            resume=checkers,
            consumers_after=after,
        )
        replay_done = time.perf_counter() - started
        local = finish_check(log, here) if isinstance(here, PendingCheck) else here
    except BaseException:
        for worker, _ in workers:
            worker.kill()
            worker.wait()
        raise
    try:
        projections = _merge([local, *(_finish_projection_worker(*w) for w in workers)])
    finally:
        for worker, _ in workers:  # those a failing one left running
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    report.events = replay.events
    report.violations.extend(replay.violations)
    report.omitted = replay.omitted
    report.checked += ["hash chain", "invariants", "routing decisions recomputed"]
    report.violations.extend(projections.violations)
    report.checked.append(projections.checked)
    if found is not None:
        report.resumed_from = found.position
        report.checked.append(f"the rest from the seal at {found.position}")
    sealed_s = 0.0
    if seal and report.clean and replay.checkers is not None and replay.head > 0:
        sealing = time.perf_counter()
        state = dump_checkers(replay.head, *replay.checkers)
        if write_seal(log, replay.head, state, projections.sealed):
            report.sealed_at = replay.head
        sealed_s = time.perf_counter() - sealing
    report.timings = {
        **{f"replay_{part}": round(s, 2) for part, s in replay.timings.items()},
        "replay": round(replay_done, 2),
        "projections": round(projections.seconds, 2),
        "seal": round(sealed_s, 2),
    }
