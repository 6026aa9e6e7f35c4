"""The viewer token of a real ``tierlog serve``: from ``TIERLOG_VIEWER_TOKEN``, reads
everything, changes nothing, and is never printed."""

from __future__ import annotations

VIEWER = "viewer-secret-token-for-e2e"


def test_the_viewer_reads_everything_changes_nothing_and_is_never_printed(
    sqlite_url, server_factory
):
    server = server_factory(sqlite_url, TIERLOG_VIEWER_TOKEN=VIEWER)
    admin, viewer = server.client(), server.client(VIEWER)
    assert admin.post("/v1/tasks", json={"description": "fix typo in README"}).status_code == 201
    for path in ("/v1/log", "/v1/tasks", "/v1/queue", "/v1/agents", "/v1/telemetry", "/metrics"):
        assert viewer.get(path).status_code == 200, path
    head = server.log_length()
    for method, path, body in [
        ("POST", "/v1/tasks", {"description": "x"}),
        ("POST", "/v1/agents", {"agent_id": "a", "capabilities": []}),
        ("PUT", "/v1/endpoints/h:1", {"host": "h", "port": 1, "models": []}),
    ]:
        answer = viewer.request(method, path, json=body)
        assert (answer.status_code, answer.json()["error"]) == (403, "forbidden"), path
    assert server.log_length() == head
    server.process.terminate()  # the fixture's stop finds it stopped
    output, _ = server.process.communicate(timeout=15)
    assert "tierlog serving on" in output and VIEWER not in output
