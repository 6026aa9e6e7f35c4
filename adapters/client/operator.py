"""``Operator``: everything an operator (or a viewer, for the reads) does over HTTP.

Reads, and submissions that carry an idempotency key, are retried with backoff when the
server does not answer (or answers 503): sending them again cannot do anything twice.
Other writes are sent once; their errors are the typed exceptions of ``errors``.

Reads see this client's own writes: every write answers with its log position, and
each read of a read model asks for at least the highest one (``min_position``), so a
task just submitted is there to ``get``. ``catch_up()`` does the same for the log's
head (what anyone wrote so far).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from tierlog.adapters.client import api
from tierlog.adapters.client.errors import (
    ApiError,
    ClientError,
    NotFound,
    SubmissionsRefused,
    ValidationFailed,
    error_for,
    transient,
)

BATCH_LIMIT_HEADER = "Tierlog-Batch-Limit"
DEFAULT_BATCH_LIMIT = 1000  # the server's default max_batch_submit, until it says its own


@dataclass(frozen=True)
class Submitted:
    """The answer to a submission: the task, its state, whether it is new (``False``:
    the idempotency key named an earlier task), and the log position to read it at."""

    task_id: str
    state: str
    created: bool
    position: int


class Operator:
    """A client for the operator's (or viewer's) token.

    ``Operator(url, token)``; use it as a context manager, or call ``close()``.
    ``retries``: attempts after the first for reads and keyed submissions.
    """

    def __init__(
        self,
        url: str = api.DEFAULT_URL,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        retries: int = 4,
        backoff: api.Backoff | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.position = 0  # the highest log position a write of this client answered
        self.batch_limit = DEFAULT_BATCH_LIMIT
        """The most submissions one batch request carries (the server's, once it said)."""
        self._position_lock = threading.Lock()
        self.retries = retries
        self.backoff = backoff or api.Backoff()
        self._http = httpx.Client(
            base_url=self.url,
            headers=api.auth_headers(token),
            timeout=timeout_s,
            transport=transport,
        )

    def __enter__(self) -> Operator:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # --- sending ------------------------------------------------------------------------

    def send(self, call: api.Call, *, retry: bool = False) -> Any:
        """Send one request: the decoded answer, or a typed error (``retry``: transient
        failures are retried with backoff, ``retries`` times)."""
        attempt = 0
        while True:
            try:
                return self._once(call)
            except ClientError as exc:
                if not retry or not transient(exc) or attempt >= self.retries:
                    raise
                time.sleep(self.backoff.delay(attempt))
                attempt += 1

    def _once(self, call: api.Call) -> Any:
        return api.decode(self._answer(call))

    def _answer(self, call: api.Call) -> httpx.Response:
        try:
            return self._http.request(call.method, call.path, **api.request_args(call))
        except httpx.HTTPError as exc:
            raise api.unreachable(exc, self.url) from exc

    def _read(self, path: str, **params: Any) -> Any:
        """A read of a read model, as of this client's latest write at least."""
        return self._read_log(path, min_position=self.position or None, **params)

    def _read_log(self, path: str, **params: Any) -> Any:
        """A read of the log or of the server itself (no ``min_position``)."""
        return self.send(api.get(path, **params), retry=True)

    def _wrote(self, answer: Any) -> Any:
        """Note a write's log position, for the reads after it; the answer."""
        position = answer.get("position") if isinstance(answer, dict) else None
        if isinstance(position, int):
            with self._position_lock:
                self.position = max(self.position, position)
        return answer

    def catch_up(self) -> int:
        """Make the following reads reflect the whole log as it is now; its head."""
        head = self.head()
        with self._position_lock:
            self.position = max(self.position, head)
        return head

    # --- tasks --------------------------------------------------------------------------

    def submit(self, description: str, **fields: Any) -> Submitted:
        """Submit a task (SPEC §1.1 fields as keywords: ``priority``, ``complexity_tier``,
        ``needed_capabilities``, ``metadata``, ``idempotency_key``, ...)."""
        return self.submit_one({"description": description, **fields})

    def submit_one(self, body: Mapping[str, Any]) -> Submitted:
        """Submit one task from its JSON body."""
        body = dict(body)
        key = body.pop("idempotency_key", None)
        headers = {"Idempotency-Key": str(key)} if key is not None else None
        answer = self._wrote(self.send(api.post("/v1/tasks", body, headers), retry=key is not None))
        return Submitted(
            str(answer["task_id"]), answer["state"], bool(answer["created"]), answer["position"]
        )

    def submit_many(
        self,
        bodies: Iterable[Mapping[str, Any]],
        *,
        concurrency: int = 4,
        keyed: bool = True,
    ) -> list[Submitted]:
        """Submit many tasks through ``POST /v1/tasks/batch``, in requests of at most the
        server's limit (``batch_limit``), ``concurrency`` requests at a time; the answers
        in the given order. Each request's accepted tasks are appended in one commit.

        With ``keyed`` each body without an ``idempotency_key`` gets a fresh one, so a
        request whose answer was lost is retried without submitting anything twice.
        If the server refuses some, the others are submitted and ``SubmissionsRefused``
        says which (its ``results`` hold every answer). A server without the batch
        route gets the tasks one request each.
        """
        prepared = [
            {"idempotency_key": str(uuid.uuid4()), **body} if keyed else dict(body)
            for body in bodies
        ]
        if not prepared:
            return []
        first = self._submit_chunk(prepared[: self.batch_limit])
        if first is None:  # a server from before batches
            with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
                return list(pool.map(self.submit_one, prepared))
        done = len(first)  # the first request may have learned a smaller limit
        rest = prepared[done:]
        step = self.batch_limit
        chunks = [rest[i : i + step] for i in range(0, len(rest), step)]
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            answers = list(pool.map(self._submit_all, chunks))
        results = first + [result for answer in answers for result in answer]
        if any(isinstance(result, ApiError) for result in results):
            raise SubmissionsRefused(results)
        return [result for result in results if isinstance(result, Submitted)]

    def _submit_all(self, bodies: list[dict[str, Any]]) -> list[Submitted | ApiError]:
        """Every body, in requests of at most ``batch_limit``."""
        results: list[Submitted | ApiError] = []
        while len(results) < len(bodies):
            answer = self._submit_chunk(bodies[len(results) : len(results) + self.batch_limit])
            if answer is None:
                raise ClientError("the server stopped taking batch submissions")
            results += answer
        return results

    def _submit_chunk(self, bodies: list[dict[str, Any]]) -> list[Submitted | ApiError] | None:
        """Submit a prefix of ``bodies`` (all of them unless the server says its limit is
        smaller): one answer per body submitted; None if the server has no batch route."""
        while True:
            try:
                return self.submit_batch(bodies)
            except ValidationFailed as exc:
                if exc.field != "tasks" or len(bodies) <= self.batch_limit:
                    raise
                bodies = bodies[: self.batch_limit]  # it told its limit: send fewer
            except ApiError as exc:
                if exc.status in (404, 405) and exc.code == "http_error":
                    return None
                raise

    def submit_batch(self, bodies: Iterable[Mapping[str, Any]]) -> list[Submitted | ApiError]:
        """Submit tasks in one request (``POST /v1/tasks/batch``, at most the server's
        ``max_batch_submit``): per body, in order, its ``Submitted`` or the error it was
        refused with; the accepted ones are appended in one commit. Retried on no
        answer or 503 when every body has an ``idempotency_key``."""
        entries = [dict(body) for body in bodies]
        keyed = all(entry.get("idempotency_key") is not None for entry in entries)
        call = api.post("/v1/tasks/batch", {"tasks": entries})
        answer = self._wrote(self.send_batch(call, retry=keyed))
        results: list[Submitted | ApiError] = []
        for entry in answer["results"]:
            if "error" in entry:
                results.append(error_for(int(entry["status"]), entry["error"]))
            else:
                results.append(
                    Submitted(
                        str(entry["task_id"]),
                        entry["state"],
                        bool(entry["created"]),
                        answer["position"],
                    )
                )
        return results

    def send_batch(self, call: api.Call, *, retry: bool) -> Any:
        """``send`` for a batch request: also learns the server's batch limit from the
        answer's ``Tierlog-Batch-Limit`` header, error or not."""
        attempt = 0
        while True:
            try:
                response = self._answer(call)
                limit = response.headers.get(BATCH_LIMIT_HEADER, "")
                if limit.isdigit() and int(limit) > 0:
                    self.batch_limit = int(limit)
                return api.decode(response)
            except ClientError as exc:
                if not retry or not transient(exc) or attempt >= self.retries:
                    raise
                time.sleep(self.backoff.delay(attempt))
                attempt += 1

    def get(self, task_id: str) -> dict[str, Any]:
        """One task as the tasks read model has it."""
        task: dict[str, Any] = self._read(f"/v1/tasks/{task_id}")["task"]
        return task

    def tasks(
        self,
        *,
        state: str | None = None,
        tier: str | None = None,
        limit: int | None = 100,
        page_size: int = 1000,
    ) -> list[dict[str, Any]]:
        """Tasks in submission order, filtered by ``state`` and ``tier``; at most
        ``limit`` (None: all of them, page by page)."""
        return list(self.iter_tasks(state=state, tier=tier, limit=limit, page_size=page_size))

    def iter_tasks(
        self,
        *,
        state: str | None = None,
        tier: str | None = None,
        limit: int | None = None,
        page_size: int = 1000,
    ) -> Iterator[dict[str, Any]]:
        """Tasks in submission order, page by page."""
        cursor, given = None, 0
        while limit is None or given < limit:
            size = page_size if limit is None else min(page_size, limit - given)
            page = self._read("/v1/tasks", state=state, tier=tier, limit=size, cursor=cursor)
            for row in page["tasks"]:
                yield row
                given += 1
            cursor = page.get("next_cursor")
            if cursor is None:
                return

    def resolve(self, task_id: str) -> str:
        """The full id of the one task whose id starts or ends with ``task_id`` (a
        whole id is returned as it is; tables show an id's end, since ids made in the
        same minute share their start). ``NotFound`` if none does, ``ValidationFailed``
        if several."""
        text = task_id.strip().lower()
        try:
            return str(uuid.UUID(text))
        except ValueError:
            pass
        if not text or any(c not in "0123456789abcdef-" for c in text):
            raise ValidationFailed(422, "validation_error", f"{task_id!r} is no task id", "id")
        found = [
            row["task_id"]
            for row in self.iter_tasks()
            if row["task_id"].startswith(text) or row["task_id"].endswith(text)
        ]
        if not found:
            raise NotFound(404, "not_found", f"no task id starts or ends with {task_id!r}", "id")
        if len(found) > 1:
            shown = ", ".join(found[:5])
            raise ValidationFailed(
                422,
                "validation_error",
                f"{task_id!r} is the start or end of {len(found)} ids: {shown}",
            )
        return str(found[0])

    def timeline(self, task_id: str) -> list[dict[str, Any]]:
        """Every event of the task's stream, in order."""
        events: list[dict[str, Any]] = self._read_log(f"/v1/tasks/{task_id}/timeline")["events"]
        return events

    def cancel(self, task_id: str, reason: str | None = None) -> int:
        """Cancel a task; the log position of the cancellation."""
        body = {"reason": reason} if reason else None
        call = api.post(f"/v1/tasks/{task_id}/cancel", body)
        return int(self._wrote(self.send(call))["position"])

    def retry(self, task_id: str) -> int:
        """Put a dead-lettered task back in the queue; the log position."""
        return int(self._wrote(self.send(api.post(f"/v1/tasks/{task_id}/retry")))["position"])

    # --- the fleet ----------------------------------------------------------------------

    def queue(self, limit: int = 100) -> dict[str, Any]:
        """The queue's first ``limit`` tasks in order, with tier and why each waits."""
        page: dict[str, Any] = self._read("/v1/queue", limit=limit)
        return page

    def agents(self) -> list[dict[str, Any]]:
        """Every registered agent with its status and current task."""
        rows: list[dict[str, Any]] = self._read("/v1/agents")["agents"]
        return rows

    def register_agent(
        self, agent_id: str, capabilities: Iterable[str] = (), ollama_host: str | None = None
    ) -> str:
        """Register an agent; its bearer token (shown only this once)."""
        answer = self._wrote(self.send(api.register(agent_id, tuple(capabilities), ollama_host)))
        return str(answer["token"])

    def deregister_agent(self, agent_id: str) -> int:
        """Remove an agent (its task goes back to the queue); the log position."""
        return int(self._wrote(self.send(api.leave(agent_id)))["position"])

    def mark_agent_offline(self, agent_id: str, reason: str | None = None) -> int:
        """Mark an agent offline: it gets no work, and a task it held goes back to the
        queue; the log position. Its next poll does not bring it back (only a silence
        is undone by a poll): it registers again."""
        body = {"reason": reason} if reason else None
        call = api.post(f"/v1/agents/{agent_id}/offline", body)
        return int(self._wrote(self.send(call))["position"])

    def endpoints(self) -> list[dict[str, Any]]:
        """Every endpoint with its status, models and latest resources."""
        rows: list[dict[str, Any]] = self._read("/v1/endpoints")["endpoints"]
        return rows

    def deregister_endpoint(self, endpoint_id: str) -> int:
        """Take an endpoint (``host:port``) out of routing; the log position. Registering
        it again brings it back."""
        call = api.Call("DELETE", f"/v1/endpoints/{endpoint_id}")
        return int(self._wrote(self.send(call))["position"])

    def register_endpoint(self, host: str, port: int = 11434, models: Iterable[str] = ()) -> int:
        """Register (or update) an Ollama endpoint ``host:port``; the log position."""
        body = {"host": host, "port": port, "models": list(models)}
        call = api.Call("PUT", f"/v1/endpoints/{host}:{port}", body=body, has_body=True)
        return int(self._wrote(self.send(call))["position"])

    def report_health(self, endpoint_id: str, ok: bool, models: Iterable[str] | None = None) -> str:
        """A health check's result for ``host:port``; the endpoint's status after it."""
        body: dict[str, Any] = {"ok": ok}
        if models is not None:
            body["models"] = list(models)
        answer = self._wrote(self.send(api.post(f"/v1/endpoints/{endpoint_id}/health", body)))
        return str(answer["detail"]["status"])

    def report_resources(self, endpoint_id: str, **resources: Any) -> int:
        """An endpoint's resources (``cpu_percent``, ``ram_total_bytes``, ...)."""
        call = api.post(f"/v1/endpoints/{endpoint_id}/resources", resources)
        return int(self._wrote(self.send(call))["position"])

    def telemetry(self) -> dict[str, Any]:
        """The telemetry counters and histograms, and each read model's lag."""
        answer: dict[str, Any] = self._read("/v1/telemetry")
        return answer

    def health(self) -> dict[str, Any]:
        """``/healthz``: status, log head, read models' lag, node and scheduler."""
        answer: dict[str, Any] = self._read_log("/healthz")
        return answer

    # --- the log ------------------------------------------------------------------------

    def log(self, after: int = 0, limit: int = 100) -> dict[str, Any]:
        """One page of the raw log: events after position ``after``, and ``next_after``."""
        page: dict[str, Any] = self._read_log("/v1/log", after=after, limit=limit)
        return page

    def head(self) -> int:
        """The log's head position."""
        return int(self.health()["log_head"])

    def follow(
        self,
        after: int | None = None,
        *,
        poll_s: float = 0.5,
        page: int = 1000,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every event after position ``after`` (None: from the head now), in order, then
        each one appended later, as it comes; ends when ``stop()`` is true (checked
        between pages). Positions only grow: none is yielded twice or skipped (a gap on
        PostgreSQL holds no event). Through an outage it waits and goes on."""
        position = self.head() if after is None else after
        attempt = 0
        while stop is None or not stop():
            try:
                answer = self.send(api.get("/v1/log", after=position, limit=page))
            except ClientError as exc:
                if not transient(exc):
                    raise
                time.sleep(self.backoff.delay(attempt))
                attempt += 1
                continue
            attempt = 0
            for event in answer["events"]:
                if int(event["position"]) > position:  # never repeat, whatever comes
                    position = int(event["position"])
                    yield event
            if len(answer["events"]) < page:
                time.sleep(poll_s)
