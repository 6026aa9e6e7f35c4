"""The Ollama health prober against a stand-in Ollama on 127.0.0.1 and a real SQLite log."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from wiring import runtime_on

from tierlog.adapters.runtime.clock import SystemClock
from tierlog.adapters.runtime.ollama_prober import OllamaProber, ProbeError, fetch_models
from tierlog.adapters.runtime.writer import SchedulerRuntime
from tierlog.domain import commands as cmd
from tierlog.domain import events as ev

HANG_S = 2.0
READ_TIMEOUT = 0.3
CONNECT_TIMEOUT = 0.5


class StandInOllama:
    """Answers ``GET /api/tags`` like Ollama; ``mode`` switches how it answers."""

    def __init__(self, models: list[str]) -> None:
        self.mode = "ok"
        self.models = models
        self.requests = 0
        self._release = threading.Event()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stand_in.requests += 1
                with contextlib.suppress(OSError):  # the prober gave up on a hung request
                    stand_in.answer(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path != "/api/tags":
            self._send(handler, 404, b'{"error": "not found"}')
        elif self.mode == "fail":
            self._send(handler, 500, b'{"error": "model runner crashed"}')
        elif self.mode == "hang":
            self._release.wait(HANG_S)  # bounded; released at teardown
            self._send(handler, 200, self._tags())
        elif self.mode == "malformed":
            self._send(handler, 200, b'{"models": [{"name": "llama3:8b"')
        elif self.mode == "badshape":
            self._send(handler, 200, b'{"models": [{"size": 1}]}')
        else:
            self._send(handler, 200, self._tags())

    def _tags(self) -> bytes:
        entries = [
            {"name": m, "model": m, "size": 4_661_224_676, "digest": "0" * 64} for m in self.models
        ]
        return json.dumps({"models": entries}).encode()

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def new_ollama() -> Iterator[Callable[[list[str]], StandInOllama]]:
    started: list[StandInOllama] = []

    def new(models: list[str]) -> StandInOllama:
        started.append(StandInOllama(models))
        return started[-1]

    yield new
    for stand_in in started:
        stand_in.close()


@pytest.fixture
def ollama(new_ollama: Callable[[list[str]], StandInOllama]) -> StandInOllama:
    return new_ollama(["llama3:8b", "qwen2.5-coder:7b"])


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[SchedulerRuntime]:
    rt = runtime_on(f"sqlite:///{tmp_path / 'log.db'}", clock=SystemClock(), writer_poll_s=0.01)
    yield rt
    rt.stop()
    rt.log.close()


def _register(runtime: SchedulerRuntime, port: int) -> str:
    endpoint_id: str = runtime.execute(cmd.RegisterEndpoint(host="127.0.0.1", port=port, models=[]))
    return endpoint_id


def _prober(
    runtime: SchedulerRuntime, *, interval_s: float = 10.0, use_background_writer: bool = False
) -> OllamaProber:
    return OllamaProber(
        runtime,
        interval_s=interval_s,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        use_background_writer=use_background_writer,
    )


def _health_events(runtime: SchedulerRuntime, endpoint_id: str) -> list[ev.EndpointHealthReported]:
    return [
        e
        for _, e in runtime.log.iter_events()
        if isinstance(e, ev.EndpointHealthReported) and e.endpoint_id == endpoint_id
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# --- fetch_models -----------------------------------------------------------------------


def test_fetch_models_returns_the_names_ollama_lists(ollama: StandInOllama) -> None:
    models = fetch_models(
        "127.0.0.1", ollama.port, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT
    )
    assert models == ["llama3:8b", "qwen2.5-coder:7b"]


def test_fetch_models_reports_an_http_error_status(ollama: StandInOllama) -> None:
    ollama.mode = "fail"
    with pytest.raises(ProbeError, match=r"/api/tags answered HTTP 500"):
        fetch_models(
            "127.0.0.1", ollama.port, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT
        )


def test_fetch_models_reports_a_read_timeout_within_its_bound(ollama: StandInOllama) -> None:
    ollama.mode = "hang"
    started = time.monotonic()
    with pytest.raises(ProbeError, match=r"timed out reading after 0\.3 s"):
        fetch_models(
            "127.0.0.1", ollama.port, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT
        )
    assert time.monotonic() - started < 1.5


def test_fetch_models_reports_malformed_json(ollama: StandInOllama) -> None:
    ollama.mode = "malformed"
    with pytest.raises(ProbeError, match=r"answered malformed JSON"):
        fetch_models(
            "127.0.0.1", ollama.port, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT
        )


def test_fetch_models_reports_json_of_the_wrong_shape(ollama: StandInOllama) -> None:
    ollama.mode = "badshape"
    with pytest.raises(ProbeError, match=r'models\[0\] without a "name" string'):
        fetch_models(
            "127.0.0.1", ollama.port, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT
        )


def test_fetch_models_reports_a_refused_connection() -> None:
    port = _free_port()
    with pytest.raises(ProbeError, match=rf"127\.0\.0\.1:{port}/api/tags could not connect"):
        fetch_models("127.0.0.1", port, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT)


def test_fetch_models_reports_an_oversized_body(ollama: StandInOllama) -> None:
    with pytest.raises(ProbeError, match=r"more than 64 bytes"):
        fetch_models(
            "127.0.0.1",
            ollama.port,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            max_bytes=64,
        )


def test_prober_rejects_non_positive_settings(runtime: SchedulerRuntime) -> None:
    with pytest.raises(ValueError, match="interval_s must be positive"):
        OllamaProber(runtime, interval_s=0)
    with pytest.raises(ValueError, match="read_timeout must be positive"):
        OllamaProber(runtime, read_timeout=-1.0)


# --- probe_once against the log ---------------------------------------------------------


def test_success_makes_the_endpoint_healthy_at_once_with_its_models(
    runtime: SchedulerRuntime, ollama: StandInOllama
) -> None:
    endpoint_id = _register(runtime, ollama.port)
    assert endpoint_id == f"127.0.0.1:{ollama.port}"
    assert runtime.state.endpoints[endpoint_id].status == "unknown"

    assert _prober(runtime).probe_once() == {endpoint_id: True}

    endpoint = runtime.state.endpoints[endpoint_id]
    assert endpoint.status == "healthy"
    assert endpoint.models == ("llama3:8b", "qwen2.5-coder:7b")
    assert endpoint.consecutive_failures == 0
    [event] = _health_events(runtime, endpoint_id)
    assert event.ok is True
    assert event.status == "healthy"
    assert event.models == ("llama3:8b", "qwen2.5-coder:7b")
    assert event.consecutive_failures == 0


def test_one_failure_keeps_the_status_and_two_make_it_unhealthy(
    runtime: SchedulerRuntime, ollama: StandInOllama, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint_id = _register(runtime, ollama.port)
    prober = _prober(runtime)
    prober.probe_once()
    ollama.mode = "fail"

    with caplog.at_level(logging.WARNING, logger="tierlog.prober"):
        assert prober.probe_once() == {endpoint_id: False}
    assert any("HTTP 500" in r.getMessage() for r in caplog.records)
    endpoint = runtime.state.endpoints[endpoint_id]
    assert (endpoint.status, endpoint.consecutive_failures) == ("healthy", 1)
    assert endpoint.models == ("llama3:8b", "qwen2.5-coder:7b"), "a failure keeps the models"

    assert prober.probe_once() == {endpoint_id: False}
    endpoint = runtime.state.endpoints[endpoint_id]
    assert (endpoint.status, endpoint.consecutive_failures) == ("unhealthy", 2)

    events = _health_events(runtime, endpoint_id)
    assert [(e.ok, e.status, e.consecutive_failures) for e in events] == [
        (True, "healthy", 0),
        (False, "healthy", 1),
        (False, "unhealthy", 2),
    ]
    assert [e.models for e in events[1:]] == [None, None]


def test_a_hang_is_a_failure_and_probe_once_returns_within_its_bound(
    runtime: SchedulerRuntime, ollama: StandInOllama
) -> None:
    endpoint_id = _register(runtime, ollama.port)
    prober = _prober(runtime)
    prober.probe_once()
    ollama.mode = "hang"

    for expected in [("healthy", 1), ("unhealthy", 2)]:
        started = time.monotonic()
        assert prober.probe_once() == {endpoint_id: False}
        assert time.monotonic() - started < 2.0
        endpoint = runtime.state.endpoints[endpoint_id]
        assert (endpoint.status, endpoint.consecutive_failures) == expected
    assert [e.ok for e in _health_events(runtime, endpoint_id)] == [True, False, False]


def test_malformed_json_is_a_failure(runtime: SchedulerRuntime, ollama: StandInOllama) -> None:
    endpoint_id = _register(runtime, ollama.port)
    ollama.mode = "malformed"
    prober = _prober(runtime)

    assert prober.probe_once() == {endpoint_id: False}
    endpoint = runtime.state.endpoints[endpoint_id]
    assert (endpoint.status, endpoint.consecutive_failures) == ("unknown", 1)
    assert prober.probe_once() == {endpoint_id: False}
    assert runtime.state.endpoints[endpoint_id].status == "unhealthy"
    assert [(e.ok, e.status) for e in _health_events(runtime, endpoint_id)] == [
        (False, "unknown"),
        (False, "unhealthy"),
    ]


def test_recovery_makes_it_healthy_at_once_with_the_new_models(
    runtime: SchedulerRuntime, ollama: StandInOllama
) -> None:
    endpoint_id = _register(runtime, ollama.port)
    prober = _prober(runtime)
    prober.probe_once()
    ollama.mode = "fail"
    prober.probe_once()
    ollama.mode = "hang"
    prober.probe_once()
    assert runtime.state.endpoints[endpoint_id].status == "unhealthy"

    ollama.mode = "ok"
    ollama.models = ["mistral:7b"]
    assert prober.probe_once() == {endpoint_id: True}

    endpoint = runtime.state.endpoints[endpoint_id]
    assert (endpoint.status, endpoint.consecutive_failures) == ("healthy", 0)
    assert endpoint.models == ("mistral:7b",)
    last = _health_events(runtime, endpoint_id)[-1]
    assert (last.ok, last.status, last.models) == (True, "healthy", ("mistral:7b",))


def test_a_failing_endpoint_does_not_stop_the_others(
    runtime: SchedulerRuntime, new_ollama: Callable[[list[str]], StandInOllama]
) -> None:
    good, bad, gone = new_ollama(["llama3:8b"]), new_ollama([]), new_ollama(["phi3"])
    bad.mode = "hang"
    good_id, bad_id = _register(runtime, good.port), _register(runtime, bad.port)
    refused_id = _register(runtime, _free_port())
    gone_id = _register(runtime, gone.port)
    runtime.execute(cmd.DeregisterEndpoint(endpoint_id=gone_id))

    started = time.monotonic()
    results = _prober(runtime).probe_once()
    assert time.monotonic() - started < 2.0

    assert results == {good_id: True, bad_id: False, refused_id: False}
    assert runtime.state.endpoints[good_id].status == "healthy"
    assert runtime.state.endpoints[bad_id].consecutive_failures == 1
    assert runtime.state.endpoints[refused_id].consecutive_failures == 1
    assert runtime.state.endpoints[gone_id].status == "deregistered"
    assert gone.requests == 0, "a deregistered endpoint is not probed"
    assert _health_events(runtime, gone_id) == []


def test_no_endpoints_is_an_empty_round(runtime: SchedulerRuntime) -> None:
    position = runtime.state.position
    assert _prober(runtime).probe_once() == {}
    assert runtime.state.position == position


# --- the background loop ----------------------------------------------------------------


def test_start_runs_the_loop_in_the_background_and_stop_is_prompt(
    runtime: SchedulerRuntime, ollama: StandInOllama
) -> None:
    endpoint_id = _register(runtime, ollama.port)
    runtime.start_background()
    prober = _prober(runtime, interval_s=0.05, use_background_writer=True)
    prober.start()
    try:
        assert prober.running
        assert _wait_until(
            lambda: runtime.read(lambda s: s.endpoints[endpoint_id].status) == "healthy"
        )
        assert _wait_until(lambda: prober.rounds >= 3)
    finally:
        started = time.monotonic()
        prober.stop()
        assert time.monotonic() - started < 2.0
    assert not prober.running

    rounds, requests = prober.rounds, ollama.requests
    time.sleep(0.2)
    assert (prober.rounds, ollama.requests) == (rounds, requests), "nothing runs after stop()"
    # Only the change to healthy is a fact worth a log entry; the same answer again
    # appends nothing (SPEC §1.7: every change is an event).
    assert rounds >= 3
    assert len(_health_events(runtime, endpoint_id)) == 1


def test_the_loop_keeps_going_through_failures_and_records_recovery(
    runtime: SchedulerRuntime, ollama: StandInOllama
) -> None:
    endpoint_id = _register(runtime, ollama.port)
    ollama.mode = "fail"
    prober = _prober(runtime, interval_s=0.05)
    prober.start()
    try:
        assert _wait_until(
            lambda: runtime.read(lambda s: s.endpoints[endpoint_id].status) == "unhealthy"
        )
        ollama.mode = "malformed"
        failures = prober.rounds
        assert _wait_until(lambda: prober.rounds >= failures + 2)
        assert prober.running
        ollama.mode, ollama.models = "ok", ["gemma2:9b"]
        assert _wait_until(
            lambda: runtime.read(lambda s: s.endpoints[endpoint_id].status) == "healthy"
        )
    finally:
        started = time.monotonic()
        prober.stop()
        assert time.monotonic() - started < 2.0
    assert runtime.state.endpoints[endpoint_id].models == ("gemma2:9b",)
    oks = [e.ok for e in _health_events(runtime, endpoint_id)]
    assert oks[0] is False and True in oks


def test_stop_interrupts_a_long_interval(runtime: SchedulerRuntime, ollama: StandInOllama) -> None:
    _register(runtime, ollama.port)
    prober = _prober(runtime, interval_s=60.0)
    prober.start()
    assert _wait_until(lambda: prober.rounds >= 1)
    started = time.monotonic()
    prober.stop()
    assert time.monotonic() - started < 0.5
    assert prober.rounds == 1
