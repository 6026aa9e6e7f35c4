"""Batch submission's pieces without a server: the body model, each entry checked as a
single submission would be, the answer's shape, and ``Operator.submit_many`` over an
in-memory transport (chunks of the server's limit, a 503 retried, an old server)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from pydantic import ValidationError as PydanticValidationError

from tierlog.adapters.http import batch
from tierlog.adapters.http.errors import ApiError
from tierlog.adapters.http.models import SubmitBatch, SubmitTask
from tierlog.adapters.settings import MAX_BATCH_SUBMIT, MAX_BATCH_SUBMIT_CEILING, Settings
from tierlog.client import Backoff, Operator, ServerUnavailable, SubmissionsRefused
from tierlog.domain.errors import IdempotencyConflictError, InternalError
from tierlog.domain.service import SubmitResult

FAST = Backoff(base_s=0.001, cap_s=0.002)


def test_the_body_is_a_list_of_anything_each_entry_checked_later():
    assert SubmitBatch.model_validate({"tasks": [{}, "x", 3]}).tasks == [{}, "x", 3]
    for bad in ({}, {"tasks": {}}, {"tasks": [], "more": 1}, []):
        with pytest.raises(PydanticValidationError):
            SubmitBatch.model_validate(bad)


def test_the_limit_is_a_setting_declared_once():
    assert Settings().max_batch_submit == MAX_BATCH_SUBMIT
    assert Settings(max_batch_submit=5).max_batch_submit == 5
    for bad in (0, MAX_BATCH_SUBMIT_CEILING + 1):
        with pytest.raises(Exception, match="max_batch_submit"):
            Settings(max_batch_submit=bad)


@pytest.mark.parametrize(
    ("count", "says"), [(0, "at least 1"), (6, "6 entries, over the limit of 5")]
)
def test_an_empty_or_oversized_batch_is_a_422_on_tasks_naming_the_limit(count, says):
    batch.check_size(5, 5)
    with pytest.raises(ApiError) as refused:
        batch.check_size(count, 5)
    assert (refused.value.status, refused.value.field) == (422, "tasks")
    assert says in refused.value.message
    assert refused.value.headers == {batch.LIMIT_HEADER: "5"}


def test_an_entry_is_checked_as_the_single_submission_body():
    good = batch.command_of({"description": "fix typo", "complete_by": "2030-01-01T00:00:00Z"})
    assert good == SubmitTask.model_validate(
        {"description": "fix typo", "complete_by": "2030-01-01T00:00:00Z"}
    )
    cases = {
        "x": None,
        None: None,
        3: None,
        (): None,
    }
    for entry, field in cases.items():
        refused = batch.command_of(entry)
        assert isinstance(refused, ApiError) and refused.field == field, entry
    for entry, field in [
        ({}, "description"),
        ({"description": ""}, "description"),
        ({"description": "x", "max_retries": "3"}, "max_retries"),
        ({"description": "x", "max_retries": True}, "max_retries"),
        ({"description": "x", "priority": "soon"}, "priority"),
        ({"description": "x", "needed_capabilities": [1]}, "needed_capabilities"),
        ({"description": "x", "metadata": {"a": float("nan")}}, "metadata"),
        ({"description": "x", "unknown": 1}, "unknown"),
    ]:
        refused = batch.command_of(entry)
        assert isinstance(refused, ApiError), entry
        assert (refused.status, refused.code, refused.field) == (422, "validation_error", field)


def test_the_answer_lists_every_entry_in_order_with_its_task_or_error():
    first, second = uuid.uuid4(), uuid.uuid4()
    checked: list[Any] = [
        batch.command_of({"description": "a"}),
        ApiError(422, "validation_error", "too short", "description"),
        batch.command_of({"description": "b"}),
        batch.command_of({"description": "c"}),
        batch.command_of({"description": "d"}),
    ]
    results = [
        SubmitResult(task_id=first, state="queued", created=True),
        SubmitResult(task_id=second, state="assigned", created=False),
        IdempotencyConflictError("another body", field="idempotency_key"),
        InternalError("a bug"),
    ]
    body = json.loads(batch.answer(checked, results, 42))
    assert (body["position"], body["accepted"], body["rejected"]) == (42, 2, 3)
    assert body["results"] == [
        {"index": 0, "status": 201, "task_id": str(first), "state": "queued", "created": True},
        {
            "index": 1,
            "status": 422,
            "error": {"error": "validation_error", "field": "description", "message": "too short"},
        },
        {"index": 2, "status": 200, "task_id": str(second), "state": "assigned", "created": False},
        {
            "index": 3,
            "status": 409,
            "error": {
                "error": "idempotency_conflict",
                "field": "idempotency_key",
                "message": "another body",
            },
        },
        {
            "index": 4,
            "status": 500,
            "error": {"error": "internal_error", "field": None, "message": "a bug"},
        },
    ]


class _Server:
    """Answers batches as the server does, with a limit and some 503s first."""

    def __init__(self, limit: int, unavailable: int = 0, has_batches: bool = True) -> None:
        self.limit, self.unavailable, self.has_batches = limit, unavailable, has_batches
        self.sizes: list[int] = []
        self.keys: dict[str, str] = {}
        self.singles = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/v1/tasks":
            self.singles += 1
            return httpx.Response(201, json=self._task(body) | {"position": 1})
        if not self.has_batches:
            return httpx.Response(
                405, json={"error": "http_error", "field": None, "message": "Method Not Allowed"}
            )
        limit = {batch.LIMIT_HEADER: str(self.limit)}
        if self.unavailable:
            self.unavailable -= 1
            return httpx.Response(503, json={"error": "storage_unavailable"}, headers=limit)
        tasks = body["tasks"]
        if len(tasks) > self.limit:
            error = {"error": "validation_error", "field": "tasks", "message": "too many"}
            return httpx.Response(422, json=error, headers=limit)
        self.sizes.append(len(tasks))
        results = []
        for index, task in enumerate(tasks):
            if not task.get("description"):
                error = {"error": "validation_error", "field": "description", "message": "empty"}
                results.append({"index": index, "status": 422, "error": error})
            else:
                results.append({"index": index, "status": 201, **self._task(task)})
        answer = {"position": len(self.sizes), "accepted": 0, "rejected": 0, "results": results}
        return httpx.Response(200, json=answer, headers=limit)

    def _task(self, body: dict[str, Any]) -> dict[str, Any]:
        key = body.get("idempotency_key") or str(uuid.uuid4())
        created = key not in self.keys
        task_id = self.keys.setdefault(key, str(uuid.uuid4()))
        return {"task_id": task_id, "state": "queued", "created": created}


def _operator(server: _Server) -> Operator:
    return Operator(
        "http://tierlog.test", "op", transport=httpx.MockTransport(server), backoff=FAST
    )


def test_submit_many_learns_the_servers_limit_and_keeps_the_order():
    server = _Server(limit=4)
    bodies = [{"description": f"task {n}"} for n in range(11)]
    with _operator(server) as op:
        submitted = op.submit_many(bodies, concurrency=1)
        assert op.batch_limit == 4
    assert len(submitted) == 11 and len({s.task_id for s in submitted}) == 11
    # The first request (the client's default size) was refused whole and cut down.
    assert server.sizes == [4, 4, 3]
    assert list(server.keys) and all(len(key) == 36 for key in server.keys)  # keyed


def test_submit_many_retries_a_503_when_every_entry_is_keyed():
    server = _Server(limit=10, unavailable=2)
    with _operator(server) as op:
        submitted = op.submit_many([{"description": "a"}, {"description": "b"}])
    assert len(submitted) == 2 and server.sizes == [2]
    unkeyed = _Server(limit=10, unavailable=1)
    with _operator(unkeyed) as op, pytest.raises(ServerUnavailable):
        op.submit_many([{"description": "a"}], keyed=False)


def test_submit_many_raises_with_every_answer_when_some_are_refused():
    server = _Server(limit=2)
    bodies = [{"description": "a"}, {"description": ""}, {"description": "c"}]
    with _operator(server) as op, pytest.raises(SubmissionsRefused) as refused:
        op.submit_many(bodies)
    assert list(refused.value.refused) == [1]
    assert "1 of 3 submissions refused; the first, #1: 422 validation_error" in str(refused.value)
    assert refused.value.results[0].task_id != refused.value.results[2].task_id


def test_submit_many_falls_back_to_single_submissions_on_a_server_without_batches():
    server = _Server(limit=2, has_batches=False)
    with _operator(server) as op:
        submitted = op.submit_many(
            [{"description": "a"}, {"description": "b"}, {"description": "c"}]
        )
    assert len(submitted) == 3 and server.singles == 3
