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


def test_the_long_poll_cap_setting_cuts_a_longer_wait(sqlite_url, server_factory):
    server = server_factory(sqlite_url, TIERLOG_LONG_POLL_MAX_S="0.5")
    with server.client() as admin:
        token = admin.post("/v1/agents", json={"agent_id": "a1"}).json()["token"]
    with server.client(token) as agent:
        started = time.monotonic()
        answer = agent.get("/v1/agents/a1/assignment", params={"wait": 30})
        waited = time.monotonic() - started
        assert answer.status_code == 204
        assert waited < 10, "the poll should have been cut to the configured 0.5 s"
        # Beyond what the API accepts at all: refused, whatever the setting.
        assert agent.get("/v1/agents/a1/assignment", params={"wait": 61}).status_code == 422
