"""The README's quick start, run as written: its blocks are taken from README.md
(between the ``quickstart`` markers), the Python one saved as the file the text names,
the shell ones run in order in one bash, in a fresh folder beside this test's
installation. Only the port changes (8000 may be taken here)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
SCRIPT_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _quickstart() -> tuple[str, list[tuple[str, str]]]:
    text = README.read_text()
    part = text[text.index("<!-- quickstart:begin -->") : text.index("<!-- quickstart:end -->")]
    return part, re.findall(r"```(\w+)\n(.*?)```", part, flags=re.S)


def test_the_quick_start_runs_as_written(tmp_path: Path) -> None:
    prose, blocks = _quickstart()
    assert [lang for lang, _ in blocks] == ["sh", "python", "sh"]
    saved_as = re.search(r"Save this as `([\w.]+)`", prose)
    assert saved_as is not None, "the quick start names the file its Python block is saved as"
    (tmp_path / saved_as.group(1)).write_text(blocks[1][1])
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)  # "the folder above"
    port = str(_free_port())
    # The harness's own lines: stop at the first failure, and then stop the server too
    # (else its open output would hold this test until the timeout).
    harness = "set -e\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
    script = harness + "\n".join(code for lang, code in blocks if lang == "sh")
    script = script.replace("8000", port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERLOG_")}
    shell = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the server it starts is in its group: killed below
    )
    try:
        output, _ = shell.communicate(timeout=SCRIPT_TIMEOUT_S)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
    assert shell.returncode == 0, output
    assert f"tierlog serving on http://127.0.0.1:{port}" in output
    assert "'completed': 1" in output  # the agent's own summary as it stopped
    assert re.search(r"state\s+│ completed", output), output
    assert '{"summary": "done: add tests for the parser module"}' in output
    assert "ollama 127.0.0.1:11434/llama3" in output  # routed to the endpoint fleet.py made
    assert "tierlog stopped" in output  # `kill %1` stopped the server cleanly
