"""``tierlog serve`` as an operator meets it on a damaged store: a log truncated under
its read models, a file with a corrupt index. One line, exit 2, nothing written; and
``--accept-replaced-log`` starts over while keeping the old read models."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

from tierlog.adapters.tools.demo import run_demo


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(store: str, *flags: str) -> list[str]:
    exe = shutil.which("tierlog") or str(Path(sys.executable).with_name("tierlog"))
    return [
        exe,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--store",
        store,
        *flags,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "TIERLOG_ADMIN_TOKEN": "operator-secret-token"}


def _serve(store: str, cwd: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(store, *flags),
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tierlog: "), done.stderr
    return lines[0]


def test_serve_on_a_truncated_log_refuses_then_starts_over_only_when_told(tmp_path):
    store = f"sqlite:///{tmp_path / 'tierlog.db'}"
    run_demo(store, tasks=20, seed=2)  # the demo leaves caught-up read models
    reached = sqlite3.connect(tmp_path / "tierlog.read.db").execute(
        "SELECT MAX(position) FROM rm_positions WHERE name NOT LIKE '\\_\\_%' ESCAPE '\\'"
    )
    position = reached.fetchone()[0]
    (tmp_path / "tierlog.db").write_bytes(b"")  # truncated to 0 bytes
    before = _digests(tmp_path)
    line = _one_line(_serve(store, tmp_path))
    assert f"the read models are at position {position} but the log's head is at 0" in line
    assert "--accept-replaced-log" in line
    assert _digests(tmp_path) == before

    process = subprocess.Popen(
        [*_command(store, "--accept-replaced-log")],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        said = []
        for line in process.stdout:  # up to the banner
            said.append(line)
            if "tierlog serving on" in line:
                break
        assert any("kept the read models as" in line for line in said), said
    finally:
        process.terminate()
        process.wait(timeout=15)
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("tierlog.read.db.replaced-")]
    assert len(kept) == 1
    assert sqlite3.connect(kept[0]).execute("SELECT COUNT(*) FROM rm_tasks").fetchone()[0] > 0


def test_serve_on_a_copy_with_a_corrupt_index_refuses_and_writes_nothing(tmp_path):
    good = tmp_path / "good.db"
    run_demo(f"sqlite:///{good}", tasks=30, seed=3)
    conn = sqlite3.connect(good)
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    (root,) = conn.execute(
        "SELECT rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'stored_events'"
    ).fetchone()
    conn.close()
    copy = tmp_path / "copy" / "tierlog.db"
    copy.parent.mkdir()
    shutil.copy(good, copy)
    with copy.open("r+b") as handle:
        handle.seek((int(root) - 1) * page_size + 8)
        handle.write(b"\xa5" * (page_size - 8))
    before = _digests(copy.parent)
    line = _one_line(_serve(f"sqlite:///{copy}", tmp_path))
    assert "is corrupt" in line and "quick_check" in line
    assert _digests(copy.parent) == before
