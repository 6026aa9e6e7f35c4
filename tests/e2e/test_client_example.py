"""``examples/ollama_agent.py`` as a user runs it, against a real ``tierlog serve`` and a
stand-in for Ollama's ``/api/generate`` on 127.0.0.1 (the real one needs a model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tierlog.client import Operator

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ollama_agent.py"


class _Generate(BaseHTTPRequestHandler):
    """Answers ``POST /api/generate`` as Ollama does (``stream: false``)."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ok = self.path == "/api/generate" and body.get("stream") is False
        answer = json.dumps(
            {"model": body["model"], "response": f"echo: {body['prompt']}", "done": True}
        ).encode()
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_: Any) -> None:
        return None


def test_the_example_agent_sends_standard_tasks_to_the_chosen_endpoint_and_model(
    sqlite_url: str, server_factory: Any
) -> None:
    ollama = ThreadingHTTPServer(("127.0.0.1", 0), _Generate)
    threading.Thread(target=ollama.serve_forever, daemon=True).start()
    port = ollama.server_address[1]
    server = server_factory(sqlite_url)
    env = {**os.environ, "TIERLOG_URL": server.url, "TIERLOG_TOKEN": server.admin_token}
    agent = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "example-agent"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        with Operator(server.url, server.admin_token) as op:
            op.register_endpoint("127.0.0.1", port, ["llama3"])
            op.report_health(f"127.0.0.1:{port}", True, ["llama3"])
            standard = op.submit("add tests for the parser", complexity_tier="standard").task_id
            trivial = op.submit("fix typo in readme", complexity_tier="trivial").task_id
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                rows = {t: op.get(t) for t in (standard, trivial)}
                if all(r["state"] == "completed" for r in rows.values()):
                    break
                time.sleep(0.1)
        assert rows[standard]["result"] == {
            "answer": "echo: add tests for the parser",
            "model": "llama3",
        }
        assert rows[trivial]["result"] == {"answer": "done: fix typo in readme"}
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(20)
        ollama.shutdown()
    assert agent.returncode == 0, agent.stderr.read() if agent.stderr else ""
