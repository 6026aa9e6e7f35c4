"""``tierlog bench --clients``: what the client library costs, end to end.

Tasks per second from submission to completion (submit → assigned → completed) through
a real ``tierlog serve`` on 127.0.0.1, driven two ways in the same run: by
``Operator.submit_many`` and 100 ``Agent``s (threads), and by the same flow written with
bare httpx calls (a thread per agent: long-poll, complete; the tasks submitted through
``POST /v1/tasks/batch`` in batches of 1000, each with an idempotency key, as
``submit_many`` sends them). Each run gets a fresh server
and log; the two ways alternate (each goes first in every other repeat), and the
figures are the medians of the repeats.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tierlog.adapters.client import Agent, Operator, Task
from tierlog.adapters.tools.bench_http import ADMIN, _start_server

POLL_WAIT_S = 2.0  # the same long poll for both ways
SUBMITTERS = 8
BATCH = 1000  # the server's default max_batch_submit
DEADLINE_S = 600.0


def _bodies(tasks: int) -> list[dict[str, Any]]:
    return [{"description": f"fix typo {n}", "complexity_tier": "trivial"} for n in range(tasks)]


def _register(url: str, agents: int) -> dict[str, str]:
    with Operator(url, ADMIN) as op:
        return {f"bench-{n}": op.register_agent(f"bench-{n}") for n in range(agents)}


def _wait_for(done: Callable[[], int], tasks: int) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while done() < tasks:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done()} of {tasks} tasks completed in {DEADLINE_S:g} s")
        time.sleep(0.002)


def _library(url: str, tokens: dict[str, str], tasks: int) -> float:
    """Seconds for ``tasks`` tasks through ``Operator.submit_many`` and ``Agent``s."""
    agents = [Agent(url, name, token=tok, poll_wait_s=POLL_WAIT_S) for name, tok in tokens.items()]

    def handler(task: Task) -> dict[str, Any]:
        return {"ok": True}

    threads = [
        threading.Thread(target=a.run, args=(handler,), kwargs={"handle_signals": False})
        for a in agents
    ]
    for thread in threads:
        thread.start()
    with Operator(url, ADMIN) as op:
        started = time.perf_counter()
        op.submit_many(_bodies(tasks), concurrency=SUBMITTERS)
        _wait_for(lambda: sum(a.stats.completed for a in agents), tasks)
        elapsed = time.perf_counter() - started
    for agent in agents:
        agent.stop()
    for thread in threads:
        thread.join(30)
    return elapsed


def _bare(url: str, tokens: dict[str, str], tasks: int) -> float:
    """Seconds for the same flow with bare httpx calls."""
    stop, lock, completed = threading.Event(), threading.Lock(), [0]

    def agent(name: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            while not stop.is_set():
                answer = http.get(f"/v1/agents/{name}/assignment", params={"wait": POLL_WAIT_S})
                if answer.status_code != 200:
                    continue
                task = answer.json()
                done = http.post(
                    f"/v1/tasks/{task['task_id']}/complete",
                    json={"generation": task["generation"], "result": {"ok": True}},
                )
                if done.status_code == 200:
                    with lock:
                        completed[0] += 1

    threads = [threading.Thread(target=agent, args=item) for item in tokens.items()]
    for thread in threads:
        thread.start()
    headers = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        started = time.perf_counter()
        # As submit_many sends them: keyed, in batches of the server's default limit.
        bodies = [{"idempotency_key": str(uuid.uuid4()), **body} for body in _bodies(tasks)]
        chunks = [bodies[i : i + BATCH] for i in range(0, len(bodies), BATCH)]
        with ThreadPoolExecutor(max_workers=SUBMITTERS) as pool:
            list(
                pool.map(lambda chunk: http.post("/v1/tasks/batch", json={"tasks": chunk}), chunks)
            )
        _wait_for(lambda: completed[0], tasks)
        elapsed = time.perf_counter() - started
    stop.set()
    for thread in threads:
        thread.join(30)
    return elapsed


def _one_run(way: Callable[[str, dict[str, str], int], float], tasks: int, agents: int) -> float:
    with tempfile.TemporaryDirectory(prefix="tierlog-bench-clients-") as tmp:
        process, url = _start_server(Path(tmp))
        try:
            return tasks / way(url, _register(url, agents), tasks)
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def run_clients_bench(
    tasks: int = 3000,
    agents: int = 100,
    repeats: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Tasks/s end to end with the library and with bare httpx, and their ratio."""
    library: list[float] = []
    bare: list[float] = []
    ways = [("bare", _bare, bare), ("library", _library, library)]
    for n in range(repeats):
        for name, way, figures in ways if n % 2 == 0 else ways[::-1]:  # neither always first
            figures.append(_one_run(way, tasks, agents))
            if progress is not None:
                progress(f"run {n + 1}/{repeats} {name}: {figures[-1]:,.0f} tasks/s")
    lib, raw = statistics.median(library), statistics.median(bare)
    return {
        "tasks": tasks,
        "agents": agents,
        "repeats": repeats,
        "poll_wait_s": POLL_WAIT_S,
        "library_tasks_per_s": round(lib, 1),
        "bare_httpx_tasks_per_s": round(raw, 1),
        "ratio": round(lib / raw, 3),
        "library_cost_percent": round(100 * (1 - lib / raw), 1),
        "runs": {"library": [round(x, 1) for x in library], "bare": [round(x, 1) for x in bare]},
    }
