"""The optional Ollama health prober (SPEC §1.7, ``tierlog serve --probe``).

Every ``interval_s`` seconds the prober reads the registered endpoints from the
runtime's state, asks each one for Ollama's real ``GET /api/tags`` with separate
connect and read timeouts, and records each result in the log as a command:
``report_health(ok=True, models=[...])`` on success, ``report_health(ok=False)`` on
failure. The domain turns those reports into status: healthy at once on a success,
unhealthy after ``health_failures_to_unhealthy`` consecutive failures.

A check that cannot connect, times out, answers anything but ``200``, or answers
something that is not Ollama's ``{"models": [{"name": ...}, ...]}`` is a failure.
One endpoint's failure never stops the others or the loop: failures are logged.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tierlog.adapters.runtime.writer import SchedulerRuntime
from tierlog.adapters.settings import PROBE_INTERVAL_S
from tierlog.domain import commands as cmd
from tierlog.domain.errors import TierlogError, ValidationError
from tierlog.domain.state import SchedulerState

log = logging.getLogger("tierlog.prober")

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""The largest ``/api/tags`` body read; a bigger answer is a failed check."""


class ProbeError(Exception):
    """A health check failed; the message says where and why."""


def tags_url(host: str, port: int) -> str:
    """The ``/api/tags`` URL of an Ollama server (IPv6 literals get brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/api/tags"


def parse_tags(body: bytes, url: str = "/api/tags") -> list[str]:
    """The model names in an Ollama ``/api/tags`` body; ``ProbeError`` if malformed."""
    try:
        document = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise ProbeError(f"GET {url} answered malformed JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("models"), list):
        raise ProbeError(f'GET {url} answered JSON without a "models" list')
    names: list[str] = []
    for index, entry in enumerate(document["models"]):
        name = entry.get("name", entry.get("model")) if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise ProbeError(f'GET {url} answered models[{index}] without a "name" string')
        names.append(name)
    return names


def fetch_models(
    host: str,
    port: int,
    *,
    connect_timeout: float,
    read_timeout: float,
    max_bytes: int = MAX_RESPONSE_BYTES,
) -> list[str]:
    """Ask the Ollama server at ``host:port`` which models it serves.

    Sends a real ``GET http://host:port/api/tags``. ``connect_timeout`` bounds the
    connection, ``read_timeout`` each wait for data; the body must also arrive in full
    within ``connect_timeout + read_timeout`` of the start (so a server that trickles
    bytes cannot hold the check) and be at most ``max_bytes`` long. Environment proxy
    settings are ignored: the check goes straight to the endpoint.

    Raises ``ProbeError`` on a connection error, a timeout, a status other than 200,
    an oversized body, or a body that is not Ollama's ``{"models": [{"name": ...}]}``.
    """
    url = tags_url(host, port)
    timeout = httpx.Timeout(
        connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
    )
    deadline = time.monotonic() + connect_timeout + read_timeout
    body = bytearray()
    try:
        with (
            httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False) as client,
            client.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise ProbeError(
                    f"GET {url} answered HTTP {response.status_code} {response.reason_phrase}"
                )
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise ProbeError(f"GET {url} answered more than {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise ProbeError(
                        f"GET {url} timed out: the body took longer than "
                        f"{connect_timeout + read_timeout:g} s"
                    )
    except httpx.ConnectTimeout:
        raise ProbeError(f"GET {url} timed out connecting after {connect_timeout:g} s") from None
    except httpx.ReadTimeout:
        raise ProbeError(f"GET {url} timed out reading after {read_timeout:g} s") from None
    except httpx.TimeoutException as exc:
        raise ProbeError(f"GET {url} timed out ({type(exc).__name__})") from None
    except httpx.ConnectError as exc:
        raise ProbeError(f"GET {url} could not connect: {exc}") from None
    except httpx.HTTPError as exc:  # protocol errors, a dropped connection, ...
        raise ProbeError(f"GET {url} failed: {type(exc).__name__}: {exc}") from None
    return parse_tags(bytes(body), url)


def _report(endpoint_id: str, ok: bool, models: list[str] | None) -> cmd.ReportHealth:
    """The command recording one health check; models the log cannot hold are left out
    (the server answers, so it is healthy; it keeps the models it had before)."""
    try:
        return cmd.ReportHealth(
            endpoint_id=endpoint_id, ok=ok, models=None if models is None else tuple(models)
        )
    except ValidationError as exc:
        log.warning("models of %s not recorded: %s", endpoint_id, exc)
        return cmd.ReportHealth(endpoint_id=endpoint_id, ok=ok)


def _targets(state: SchedulerState) -> list[tuple[str, str, int]]:
    """``(endpoint_id, host, port)`` of every endpoint still registered, in id order."""
    return sorted(
        (e.endpoint_id, e.host, e.port)
        for e in state.endpoints.values()
        if e.status != "deregistered"
    )


class OllamaProber:
    """Checks every registered endpoint's ``/api/tags`` and records the results.

    ``use_background_writer`` picks how results reach the log: through the runtime's
    background writer (``runtime.call``, sharing its group commits; the runtime must
    have been started) or, by default, through ``runtime.execute_batch`` from the
    prober's own thread (safe whether or not the writer runs). Checks run in parallel
    on at most ``max_workers`` threads.
    """

    def __init__(
        self,
        runtime: SchedulerRuntime,
        interval_s: float = PROBE_INTERVAL_S,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        *,
        use_background_writer: bool = False,
        max_workers: int = 8,
    ) -> None:
        for name, value in (
            ("interval_s", interval_s),
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value!r}")
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers!r}")
        self.runtime = runtime
        self.interval_s = interval_s
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.use_background_writer = use_background_writer
        self.max_workers = max_workers
        self.rounds = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one round ------------------------------------------------------------------

    def check(self, host: str, port: int) -> list[str]:
        """Check one endpoint; its model names, or ``ProbeError``."""
        return fetch_models(
            host, port, connect_timeout=self.connect_timeout, read_timeout=self.read_timeout
        )

    def probe_once(self) -> dict[str, bool]:
        """Check every registered endpoint once and record each result in the log.

        Returns ``{endpoint_id: ok}`` for every result the log accepted (an endpoint
        deregistered while it was being checked is left out). Check failures are
        logged, never raised; a failure of the store itself is raised.
        """
        targets = self.runtime.read(_targets)
        if not targets:
            return {}
        with ThreadPoolExecutor(
            max_workers=min(self.max_workers, len(targets)), thread_name_prefix="tierlog-probe"
        ) as pool:
            outcomes = list(pool.map(lambda t: self._outcome(t[0], t[1], t[2]), targets))
        commands = [_report(endpoint_id, ok, models) for endpoint_id, ok, models in outcomes]
        results = self._record(commands)
        recorded: dict[str, bool] = {}
        for (endpoint_id, ok, _), result in zip(outcomes, results, strict=True):
            if isinstance(result, TierlogError):
                log.info("health of %s not recorded: %s", endpoint_id, result)
            else:
                recorded[endpoint_id] = ok
        self.rounds += 1
        return recorded

    def _outcome(
        self, endpoint_id: str, host: str, port: int
    ) -> tuple[str, bool, list[str] | None]:
        try:
            models = self.check(host, port)
        except ProbeError as exc:
            log.warning("health check of %s failed: %s", endpoint_id, exc)
            return endpoint_id, False, None
        except Exception:  # a bug must not cost the other endpoints their round
            log.exception("health check of %s failed unexpectedly", endpoint_id)
            return endpoint_id, False, None
        return endpoint_id, True, models

    def _record(self, commands: Sequence[cmd.Command]) -> list[Any]:
        """Each command's result or the error it failed with, as ``execute_batch`` gives them."""
        if not self.use_background_writer:
            return self.runtime.execute_batch(commands)
        futures = [self.runtime.submit(command) for command in commands]
        return [future.result() for future in futures]

    # --- the loop -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the background loop is running."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Probe now and then every ``interval_s`` in a daemon thread, until ``stop()``."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tierlog-prober", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and wait for it.

        Returns at once between rounds; a round in flight finishes first, which its
        timeouts bound (about ``connect_timeout + 2 * read_timeout``).
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.probe_once()
            except Exception:  # the store or the writer failed: try again next round
                log.exception("health probe round failed")
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
