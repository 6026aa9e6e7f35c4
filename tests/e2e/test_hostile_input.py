"""Hostile bodies against a real ``tierlog serve``: limits, 413, and a fuzz run.

The fuzz run sends hostile bodies (deep nesting, huge strings, NaN literals, wrong
types, invalid UTF-8, absurd numbers, oversized bodies) concurrently with valid
submissions, bounded in count and time, and checks that every valid one landed (201),
no hostile one got a 5xx or appended anything, and the log still audits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tierlog.adapters.store.event_log import EventLog
from tierlog.domain import events as ev

MIB = 1024 * 1024
VALID = 120
ROUNDS = 3  # every hostile body is sent this many times, mixed in with the valid ones
DEADLINE_S = 120.0


def _deep(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def _submit(metadata: str = "{}", **fields: str) -> bytes:
    extra = "".join(f',"{k}":{v}' for k, v in fields.items())
    return f'{{"description":"hostile","metadata":{metadata}{extra}}}'.encode()


def _complete(result: str) -> bytes:
    return f'{{"generation":1,"result":{result}}}'.encode()


HOSTILE_SUBMISSIONS: list[bytes] = [
    _submit('{"d":' + _deep(100_000) + "}"),  # past any parser's recursion limit
    _submit('{"d":' + _deep(480) + "}"),
    _submit('{"d":' + _deep(40) + "}"),  # within the ceiling, past the default limit
    b'{"description":"' + b"x" * 200_000 + b'"}',
    _submit('{"s":"' + "y" * 150_000 + '"}'),
    _submit('{"n":NaN}'),
    _submit('{"n":Infinity}'),
    b'{"description":NaN}',
    _submit("{}", max_retries="1e400"),
    _submit('{"n":1e999}'),
    _submit('{"n":' + "9" * 40 + "}"),
    _submit('{"n":' + "9" * 5000 + "}"),
    _submit("{}", max_retries="99999999999999999999999"),
    _submit("{}", priority="7"),
    _submit("[]"),
    _submit('"text"'),
    b'{"description":5}',
    b'{"description":["a"]}',
    b"[]",
    b'"just a string"',
    b"null",
    b"",
    b"{",
    b'{"description":"\xff\xfe bad utf-8"}',
    b'{"description":"\\ud800 lone surrogate"}',
    _submit('{"k":"\\ud800"}'),
    b'{"description":"nul \\u0000 inside"}',
    _submit("{}", complete_by='"9999-12-31T23:59:59-23:59"'),
    _submit("{}", complete_by='"0001-01-01T00:00:00+23:59"'),
    _submit("{}", complete_by="1e308"),
    _submit("{}", needed_capabilities='["x", 1]'),
    _submit("{}", needed_capabilities="[" + ",".join(['"c"'] * 2000) + "]"),
    _submit('{"l":[' + ",".join(["0"] * 20_000) + "]}"),
    _submit("{}", unknown_field="1"),
]
HOSTILE_COMPLETIONS: list[bytes] = [
    _complete(_deep(480)),
    _complete(_deep(100_000)),
    _complete("NaN"),
    _complete('{"x":-Infinity}'),
    _complete('"' + "r" * 700_000 + '"'),  # past the default result size
    _complete("1" + "0" * 30),
    b'{"generation":"1","result":1}',
    b'{"generation":1e400,"result":1}',
    b'{"generation":-1,"result":1}',
    b'{"generation":1,"result":"\xc3\x28"}',
]


@pytest.fixture
def served(store_url: str, server_factory: Any) -> Iterator[Any]:
    server = server_factory(store_url)
    yield server


def _post(http: httpx.Client, path: str, body: bytes) -> httpx.Response:
    return http.post(path, content=body, headers={"Content-Type": "application/json"})


def _count(store_url: str, event_type: type) -> int:
    log = EventLog(store_url)
    try:
        return sum(isinstance(e, event_type) for _, e in log.iter_events())
    finally:
        log.close()


def test_hostile_bodies_among_valid_submissions(served, store_url):
    with served.client() as admin:
        answer = admin.post("/v1/agents", json={"agent_id": "fuzz-agent"})
        assert answer.status_code == 201, answer.text
        agent_token = answer.json()["token"]
        held = admin.post("/v1/tasks", json={"description": "held", "complexity_tier": "trivial"})
        assert held.status_code == 201
    task_path = f"/v1/tasks/{held.json()['task_id']}/complete"
    submitted_before = _count(store_url, ev.TaskSubmitted)

    jobs: list[tuple[str, str, bytes, str]] = [
        ("valid", "/v1/tasks", json.dumps({"description": f"valid {i}"}).encode(), "admin")
        for i in range(VALID)
    ]
    for _ in range(ROUNDS):
        jobs += [("hostile", "/v1/tasks", body, "admin") for body in HOSTILE_SUBMISSIONS]
        jobs += [("hostile", task_path, body, "agent") for body in HOSTILE_COMPLETIONS]
        jobs += [("hostile", "/v1/tasks", b'{"description":"' + b"z" * (2 * MIB) + b'"}', "admin")]
    # Interleave: hostile bodies land in the same group commits as valid ones.
    jobs.sort(key=lambda job: hash(job[2][:64] + job[1].encode()) % 97)
    started = time.monotonic()
    clients = {"admin": served.client(), "agent": served.client(agent_token)}

    def send(job: tuple[str, str, bytes, str]) -> tuple[str, bytes, int, str]:
        kind, path, body, who = job
        if time.monotonic() - started > DEADLINE_S:
            return kind, body, -1, "not sent: past the deadline"
        answer = _post(clients[who], path, body)
        return kind, body, answer.status_code, answer.text[:200]

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(send, jobs))
    finally:
        for client in clients.values():
            client.close()

    valid = [o for o in outcomes if o[0] == "valid"]
    hostile = [o for o in outcomes if o[0] == "hostile"]
    assert all(code == 201 for _, _, code, _ in valid), [o for o in valid if o[2] != 201][:3]
    bad = [(body[:60], code, text) for _, body, code, text in hostile if not 400 <= code < 500]
    assert bad == []
    with served.client() as admin:
        assert admin.get("/healthz").status_code == 200
    served.process.terminate()
    served.process.wait(timeout=15)
    assert _count(store_url, ev.TaskSubmitted) == submitted_before + VALID
    assert _count(store_url, ev.TaskCompleted) == 0


def test_an_oversized_body_is_413_with_tierlogs_error_before_it_is_read(served):
    body = b'{"description":"' + b"z" * (MIB + 10) + b'"}'
    with served.client() as admin:
        declared = _post(admin, "/v1/tasks", body)

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            for start in range(0, len(body), 64 * 1024):
                yield body[start : start + 64 * 1024]

        streamed = admin.post(
            "/v1/tasks", content=chunks(), headers={"Content-Type": "application/json"}
        )
        within = _post(admin, "/v1/tasks", b'{"description":"' + b"z" * 90_000 + b'"}')
    for answer in (declared, streamed):
        assert answer.status_code == 413, answer.text
        assert answer.json() == {
            "error": "body_too_large",
            "field": "body",
            "message": f"the request body is over the limit of {MIB} bytes (max_body_bytes)",
        }
    assert within.status_code == 201, within.text


def test_limits_are_configurable_and_named_in_errors(sqlite_url, server_factory):
    server = server_factory(
        sqlite_url,
        TIERLOG_MAX_BODY_BYTES="4096",
        TIERLOG_MAX_METADATA_BYTES="100",
        TIERLOG_MAX_JSON_DEPTH="4",
        TIERLOG_MAX_STRING_CHARS="300",
        TIERLOG_MAX_LIST_ITEMS="3",
    )
    cases = [
        ({"description": "d" * 5000}, 413, "body", "max_body_bytes"),
        ({"description": "d", "metadata": {"k": "v" * 150}}, 422, "metadata", "max_metadata_bytes"),
        ({"description": "d", "metadata": {"a": [[[[1]]]]}}, 422, "metadata", "max_json_depth"),
        ({"description": "d" * 301}, 422, "description", "max_string_chars"),
        (
            {"description": "d", "file_hints": ["a", "b", "c", "d"]},
            422,
            "file_hints",
            "max_list_items",
        ),
    ]
    with server.client() as admin:
        head = server.log_length()
        for body, status, field, limit in cases:
            answer = admin.post("/v1/tasks", json=body)
            assert answer.status_code == status, (body, answer.text)
            error = answer.json()
            assert error["field"] == field and limit in error["message"], error
        assert server.log_length() == head
        assert admin.post("/v1/tasks", json={"description": "fits"}).status_code == 201
