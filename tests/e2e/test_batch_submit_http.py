"""``POST /v1/tasks/batch`` against a real ``tierlog serve``: accepted and refused entries
side by side, per-entry idempotency, the configured limit, one commit per batch, bad
input appends nothing; ``Operator.submit_many`` sends batches of the server's limit."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from tierlog.client import Operator, SubmissionsRefused, ValidationFailed

LIMIT = 7
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def server(server_factory, tmp_path):
    return server_factory(f"sqlite:///{tmp_path / 'log.db'}", TIERLOG_MAX_BATCH_SUBMIT=str(LIMIT))


def _log(http: httpx.Client, after: int = 0) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        page = http.get("/v1/log", params={"after": after, "limit": 1000}).json()["events"]
        if not page:
            return events
        events += page
        after = page[-1]["position"]


def _head(http: httpx.Client) -> int:
    return int(http.get("/healthz").json()["log_head"])


def test_a_batch_answers_each_entry_with_its_task_or_its_own_error(server):
    with server.client() as http:
        before = _head(http)
        tasks = [
            {"description": "fix typo in README", "priority": "high"},
            {"description": ""},  # too short
            "not an object",
            {"description": "refactor the parser", "max_retries": "3"},  # strict number
            {"description": "add tests", "bogus": 1},  # unknown field
            {"description": "update docs", "complexity_tier": "trivial"},
        ]
        answer = http.post("/v1/tasks/batch", json={"tasks": tasks})
        assert answer.status_code == 200, answer.text
        assert answer.headers["Tierlog-Batch-Limit"] == str(LIMIT)
        body = answer.json()
        assert (body["accepted"], body["rejected"]) == (2, 4)
        results = body["results"]
        assert [r["index"] for r in results] == list(range(6))
        assert [r["status"] for r in results] == [201, 422, 422, 422, 422, 201]
        assert results[1]["error"]["field"] == "description"
        assert results[2]["error"] == {
            "error": "validation_error",
            "field": None,
            "message": results[2]["error"]["message"],
        }
        assert results[3]["error"]["field"] == "max_retries"
        assert results[4]["error"]["field"] == "bogus"
        # The accepted ones are tasks like any other, readable at the answer's position.
        task = http.get(
            f"/v1/tasks/{results[0]['task_id']}", params={"min_position": body["position"]}
        ).json()["task"]
        assert task["priority"] == "high" and task["state"] == "queued"
        submitted = [e for e in _log(http, before) if e["type"] == "TaskSubmitted"]
        assert {e["aggregate_id"] for e in submitted} == {
            results[0]["task_id"],
            results[5]["task_id"],
        }


def test_each_entry_has_its_own_idempotency_key(server):
    with server.client() as http:
        first = {"description": "fix typo", "idempotency_key": "batch-k1"}
        answer = http.post("/v1/tasks/batch", json={"tasks": [first]}).json()
        task_id = answer["results"][0]["task_id"]
        before = _head(http)
        again = http.post(
            "/v1/tasks/batch",
            json={
                "tasks": [
                    first,  # same key, same body: the same task
                    {**first, "priority": "urgent"},  # same key, another body: 409
                    {"description": "fresh", "idempotency_key": "batch-k2"},
                    {"description": "fresh", "idempotency_key": "batch-k2"},  # in one batch
                ]
            },
        ).json()
        statuses = [r["status"] for r in again["results"]]
        assert statuses == [200, 409, 201, 200]
        assert again["results"][0] == {
            "index": 0,
            "status": 200,
            "task_id": task_id,
            "state": "queued",
            "created": False,
        }
        conflict = again["results"][1]["error"]
        assert conflict["error"] == "idempotency_conflict"
        assert conflict["field"] == "idempotency_key"
        assert again["results"][2]["task_id"] == again["results"][3]["task_id"]
        # The single submission agrees: the key names the batch's task.
        single = http.post("/v1/tasks", json=first)
        assert single.status_code == 200 and single.json()["task_id"] == task_id
        appended = _log(http, before)
        assert [e["type"] for e in appended if e["type"] == "TaskSubmitted"] == ["TaskSubmitted"]
        # One key for the whole batch is refused: it could not name many tasks.
        header = http.post(
            "/v1/tasks/batch",
            json={"tasks": [{"description": "x"}]},
            headers={"Idempotency-Key": "whole"},
        )
        assert header.status_code == 422 and header.json()["field"] == "idempotency_key"


TOO_MANY = b'{"tasks": [' + b'{"description": "x"},' * LIMIT + b'{"description": "y"}]}'


@pytest.mark.parametrize(
    ("content", "status", "field", "says"),
    [
        (b'{"tasks": [{"description": "x"}', 422, "body", "JSON"),
        (b'[{"description": "x"}]', 422, "body", "dictionary"),
        (b'{"tasks": {"description": "x"}}', 422, "tasks", "list"),
        (b'{"tasks": []}', 422, "tasks", "at least 1"),
        (b'{"tasks": [{"description": "x"}], "extra": 1}', 422, "extra", "not permitted"),
        (TOO_MANY, 422, "tasks", f"8 entries, over the limit of {LIMIT} per request"),
        (b'{"tasks": ["' + b"x" * (1024 * 1024) + b'"]}', 413, "body", "max_body_bytes"),
    ],
)
def test_a_malformed_or_oversized_batch_is_refused_whole_and_appends_nothing(
    server, content, status, field, says
):
    with server.client() as http:
        before = _head(http)
        answer = http.post("/v1/tasks/batch", content=content, headers=JSON)
        assert answer.status_code == status, answer.text
        assert set(answer.json()) == {"error", "field", "message"}
        assert answer.json()["field"] == field
        assert says in answer.json()["message"]
        if content == TOO_MANY:
            assert answer.headers["Tierlog-Batch-Limit"] == str(LIMIT)
        assert _head(http) == before


def test_only_the_operator_submits_batches(server):
    with server.client() as http:
        token = http.post("/v1/agents", json={"agent_id": "a1"}).json()["token"]
        before = _head(http)
    with server.client(token) as agent:
        answer = agent.post("/v1/tasks/batch", json={"tasks": [{"description": "x"}]})
        assert answer.status_code == 403 and answer.json()["error"] == "forbidden"
    with httpx.Client(base_url=server.url) as nobody:
        answer = nobody.post("/v1/tasks/batch", json={"tasks": [{"description": "x"}]})
        assert answer.status_code == 401
    with server.client() as http:
        assert _head(http) == before


def test_a_batch_is_one_commit_beside_concurrent_submissions(server):
    """Single submissions race the batches; no other task's event lands inside a
    batch's run of positions."""
    stop = threading.Event()

    def singles() -> None:
        with server.client() as http:
            while not stop.is_set():
                http.post(
                    "/v1/tasks", json={"description": "fix typo", "complexity_tier": "trivial"}
                )

    racers = [threading.Thread(target=singles) for _ in range(3)]
    for racer in racers:
        racer.start()
    batches: list[set[str]] = []
    try:
        with server.client() as http:
            for round_ in range(15):
                tasks = [{"description": f"batch {round_} task {n}"} for n in range(LIMIT)]
                answer = http.post("/v1/tasks/batch", json={"tasks": tasks}).json()
                assert answer["accepted"] == LIMIT
                batches.append({r["task_id"] for r in answer["results"]})
    finally:
        stop.set()
        for racer in racers:
            racer.join()
    with server.client() as http:
        events = _log(http)
    singles_seen = sum(
        1
        for e in events
        if e["type"] == "TaskSubmitted" and e["payload"]["description"] == "fix typo"
    )
    assert singles_seen > 0, "the single submissions never ran beside the batches"
    for ids in batches:
        mine = [
            e["position"]
            for e in events
            if e["type"] == "TaskSubmitted" and e["aggregate_id"] in ids
        ]
        assert len(mine) == LIMIT
        inside = [
            e
            for e in events
            if min(mine) <= e["position"] <= max(mine) and e["type"] == "TaskSubmitted"
        ]
        assert {e["aggregate_id"] for e in inside} == ids
        # And the commit's positions are consecutive (SQLite has no gaps).
        span = [e["position"] for e in events if min(mine) <= e["position"] <= max(mine)]
        assert span == list(range(min(mine), max(mine) + 1))


def test_submit_many_sends_batches_of_the_servers_limit(server):
    bodies = [{"description": f"fix typo {n}", "complexity_tier": "trivial"} for n in range(30)]
    with Operator(server.url, server.admin_token) as op:
        before = op.head()
        submitted = op.submit_many(bodies, concurrency=2)
        assert op.batch_limit == LIMIT  # learned from the server's answers
        assert len({s.task_id for s in submitted}) == 30 and all(s.created for s in submitted)
        events = op.log(after=before, limit=1000)["events"]
        described = {
            e["aggregate_id"]: e["payload"]["description"]
            for e in events
            if e["type"] == "TaskSubmitted"
        }
        assert [described[s.task_id] for s in submitted] == [b["description"] for b in bodies]
        # Keyed: sending the same bodies again (as after a lost answer) makes nothing new.
        keyed = [{**b, "idempotency_key": f"many-{n}"} for n, b in enumerate(bodies[:10])]
        first = op.submit_many(keyed)
        again = op.submit_many(keyed)
        assert [s.task_id for s in again] == [s.task_id for s in first]
        assert not any(s.created for s in again)
        # One refused: the others are submitted, and the error says which.
        mixed = [{"description": "ok 1"}, {"description": ""}, {"description": "ok 2"}]
        with pytest.raises(SubmissionsRefused) as refused:
            op.submit_many(mixed)
        assert list(refused.value.refused) == [1]
        assert isinstance(refused.value.refused[1], ValidationFailed)
        assert refused.value.refused[1].field == "description"
        assert [type(r).__name__ for r in refused.value.results] == [
            "Submitted",
            "ValidationFailed",
            "Submitted",
        ]
        assert op.submit_many([]) == []
