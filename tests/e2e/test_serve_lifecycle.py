"""serve stops gracefully on SIGTERM, answering waiting long-polls; small edge routes."""

from __future__ import annotations

import signal
import threading
import time

import httpx


def test_sigterm_answers_long_polls_and_stops_cleanly(sqlite_url, server_factory):
    server = server_factory(sqlite_url)
    with server.client() as admin:
        token = admin.post("/v1/agents", json={"agent_id": "a1"}).json()["token"]
    answers: list[int] = []

    def poll() -> None:
        with server.client(token) as agent:
            answers.append(agent.get("/v1/agents/a1/assignment", params={"wait": 30}).status_code)

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.5)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(timeout=20)
    poller.join(timeout=5)
    assert code == 0
    assert time.monotonic() - started < 10
    assert answers == [204]
    assert "tierlog stopped" in (server.process.stdout.read() if server.process.stdout else "")


def test_timeline_is_for_tasks_only(sqlite_url, server_factory):
    server = server_factory(sqlite_url)
    with server.client() as admin:
        admin.post("/v1/agents", json={"agent_id": "a1"})
        agent_stream = admin.get("/v1/log").json()["events"][-1]["aggregate_id"]
        answer = admin.get(f"/v1/tasks/{agent_stream}/timeline")
        assert answer.status_code == 404
        assert "token_sha256" not in answer.text
    assert httpx.get(server.url + "/healthz").status_code == 200
