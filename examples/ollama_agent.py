"""A complete tierlog agent: standard-tier tasks go to the Ollama endpoint and model the
scheduler chose (`/api/generate`), anything else is answered by the agent itself.

    TIERLOG_TOKEN=... python examples/ollama_agent.py agent-1
"""

import os
import sys

import httpx

from tierlog.client import Agent, Task


def handle(task: Task) -> dict[str, object]:
    """Answer one task: through Ollama at the standard tier, by itself otherwise."""
    if task.tier != "standard" or not task.endpoint:  # trivial: the sidecar does it itself
        return {"answer": f"done: {task.description}"}
    body = {"model": task.model, "prompt": task.description, "stream": False}
    reply = httpx.post(f"http://{task.endpoint}/api/generate", json=body, timeout=600)
    reply.raise_for_status()  # an error fails the task with its text
    return {"answer": reply.json()["response"], "model": task.model}


if __name__ == "__main__":
    url = os.environ.get("TIERLOG_URL", "http://127.0.0.1:8000")
    Agent(url, sys.argv[1], operator_token=os.environ["TIERLOG_TOKEN"]).run(handle)
