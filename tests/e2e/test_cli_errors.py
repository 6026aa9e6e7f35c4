"""Every CLI command against a battery of bad stores, settings and flags: exit 2, one
line on stderr, no traceback, and never a store's password, in any output.

The assertions are the contract, not the wording: other checks (read-only opening,
start-up integrity) may say the same mistake first, in their own words.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PASSWORD = "pw-s3cret-9f"
ENCODED_PASSWORD = "p%40ss-4c7"  # "p@ss-4c7" in the URL's encoding
SECRETS = (PASSWORD, ENCODED_PASSWORD, "p@ss-4c7")
PG = os.environ.get("TIERLOG_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
TASK = "00000000-0000-4000-8000-000000000001"


def _exe() -> str:
    return shutil.which("tierlog") or str(Path(sys.executable).with_name("tierlog"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG, connect_timeout=3):
            return True
    except Exception:
        return False


def _with_password(url: str, password: str = PASSWORD) -> str:
    """``url`` (postgresql://user@host...) with a password added."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{password}@{host}"


def _other_app_log(path: Path) -> None:
    """A SQLite log written by another eventsourcing application."""
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate

    app: Application[uuid.UUID] = Application(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    )
    app.save(Aggregate())
    app.close()


@pytest.fixture(scope="module")
def bad_stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Store URLs that no command can use, by name."""
    root = tmp_path_factory.mktemp("bad-stores")
    (root / "corrupt.db").write_bytes(os.urandom(8192))
    (root / "folder.db").mkdir()
    _other_app_log(root / "other.db")
    stores = {
        "corrupt file": f"sqlite:///{root / 'corrupt.db'}",
        "folder as log": f"sqlite:///{root / 'folder.db'}",
        "another app's log": f"sqlite:///{root / 'other.db'}",
        "unknown scheme": f"mysql://root:{PASSWORD}@127.0.0.1/tierlog",
        "postgres refused": f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/test",
        "postgres refused, encoded password": (
            f"postgresql://postgres:{ENCODED_PASSWORD}@127.0.0.1:1/test"
        ),
    }
    if _pg_reachable():
        stores["postgres missing schema"] = _with_password(
            f"{PG}?schema=no_such_{uuid.uuid4().hex[:8]}"
        )
        stores["postgres missing database"] = _with_password(
            PG.rsplit("/", 1)[0] + "/no_such_db_for_tierlog"
        )
    mounted = None
    if os.geteuid() == 0:
        mount = root / "ro"
        mount.mkdir()
        if (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)]
            ).returncode
            == 0
        ):
            mounted = mount
            demo = [_exe(), "demo", "--tasks", "3", "--store", f"sqlite:///{mount / 'log.db'}"]
            subprocess.run(demo, capture_output=True, check=True, timeout=120)
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
            stores["read-only log"] = f"sqlite:///{mount / 'log.db'}"
    else:
        folder = root / "ro"
        folder.mkdir()
        demo = [_exe(), "demo", "--tasks", "3", "--store", f"sqlite:///{folder / 'log.db'}"]
        subprocess.run(demo, capture_output=True, check=True, timeout=120)
        for path in folder.iterdir():
            path.chmod(0o444)
        folder.chmod(0o555)
        stores["read-only log"] = f"sqlite:///{folder / 'log.db'}"
    yield stores
    if mounted is not None:
        subprocess.run(["umount", "-l", str(mounted)], check=False)


@pytest.fixture(scope="module")
def good_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "good.toml"
    path.write_text("lease_s = 45\n")
    return path


def _command(name: str, store: str, config: Path) -> list[str]:
    by_name = {
        "serve": ["serve", "--host", "127.0.0.1", "--port", str(_free_port())],
        "demo": ["demo", "--tasks", "3"],
        "audit": ["audit"],
        "at": ["at", "--position", "1"],
        "diff": ["diff", "0", "1"],
        "explain": ["explain", TASK],
        "whatif": ["whatif", "--config", str(config)],
        "project": ["project"],
    }
    return [*by_name[name], "--store", store]


COMMANDS = ("serve", "demo", "audit", "at", "diff", "explain", "whatif", "project")
STORE_CASES = (
    "corrupt file",
    "folder as log",
    "another app's log",
    "unknown scheme",
    "postgres refused",
    "postgres refused, encoded password",
    "postgres missing schema",
    "postgres missing database",
    "read-only log",
)


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "TIERLOG_ADMIN_TOKEN": "operator-secret-token", **env}
    environ.pop("TIERLOG_DEBUG", None)
    return subprocess.run(
        [_exe(), *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=90
    )


def assert_one_line_exit_2(done: subprocess.CompletedProcess[str]) -> None:
    """The contract: exit 2, one line on stderr, no traceback, no password anywhere."""
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("tierlog"), done.stderr
    assert "Traceback" not in said
    for secret in SECRETS:
        assert secret not in said, f"the password is printed: {said}"


@pytest.mark.parametrize(
    ("command", "case"),
    [
        (command, case)
        for command in COMMANDS
        for case in STORE_CASES
        # The demo never reads a log with events: it writes a fresh one beside it.
        if not (command == "demo" and case == "another app's log")
    ],
)
def test_every_command_refuses_a_bad_store_in_one_line(
    command, case, bad_stores, good_config, tmp_path
):
    if case not in bad_stores:
        pytest.skip(f"{case}: not available here (PostgreSQL unreachable, or no mount)")
    done = _run(_command(command, bad_stores[case], good_config), tmp_path)
    assert_one_line_exit_2(done)


BAD_CONFIGS = {
    "fallback_wait_s = 1e400": "fallback_wait_s = 1e400\n",
    "lease_s = nan": "lease_s = nan\n",
    "negative lease": "lease_s = -1\n",
    "unknown key": "no_such_key = 1\n",
    "not TOML": "lease_s = = 3\n",
    "bad ladder": "[[ladder]]\ntier = 7\n",
    "connect timeout zero": "store_connect_timeout_s = 0\n",
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("command", ["serve", "whatif"])
def test_a_bad_config_file_is_one_line(command, case, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(BAD_CONFIGS[case])
    store = f"sqlite:///{tmp_path / 'log.db'}"
    args = _command(command, store, config)
    if command == "serve":
        args += ["--config", str(config)]
    assert_one_line_exit_2(_run(args, tmp_path))


@pytest.mark.parametrize(
    "config", ["missing.toml", "a-folder"], ids=["missing file", "folder as config"]
)
def test_a_config_that_cannot_be_read_is_one_line(config, tmp_path):
    (tmp_path / "a-folder").mkdir()
    args = [
        "whatif",
        "--config",
        str(tmp_path / config),
        "--store",
        f"sqlite:///{tmp_path / 'l.db'}",
    ]
    assert_one_line_exit_2(_run(args, tmp_path))


BAD_ENV = {
    "TIERLOG_LEASE_S": "nan",
    "TIERLOG_FALLBACK_WAIT_S": "1e400",
    "TIERLOG_LADDER": "not json",
    "TIERLOG_STORE_CONNECT_TIMEOUT_S": "-3",
    "TIERLOG_STORE": f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/test",
}


# Every command reads its settings the same way: each variable is tried on two commands,
# the store (whose password must not show) on every one but the demo, which never reads
# TIERLOG_STORE (the log `serve` uses is never the demo's).
ENV_CASES = sorted(
    {(command, variable) for variable in BAD_ENV for command in ("serve", "audit")}
    | {(command, "TIERLOG_STORE") for command in COMMANDS if command != "demo"}
)


@pytest.mark.parametrize(("command", "variable"), ENV_CASES)
def test_a_bad_variable_is_one_line(command, variable, tmp_path, good_config):
    args = _command(command, "unused", good_config)[:-2]  # the store from the environment
    env = {variable: BAD_ENV[variable]}
    if variable != "TIERLOG_STORE":
        env["TIERLOG_STORE"] = f"sqlite:///{tmp_path / 'log.db'}"
    assert_one_line_exit_2(_run(args, tmp_path, **env))


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "--events", "0"],
        ["bench", "--tasks", "-5"],
        ["bench", "--batch", "many"],
        ["bench", "--store", "sqlite:///x.db"],
        ["bench", "--postgres", "sqlite:///x.db"],
        ["demo", "--tasks", "0"],
        ["serve", "--port", "70000"],
        ["at", "--position", "1", "--time", "2026-01-01T00:00:00+00:00"],
        ["explain", "not-a-uuid"],
        ["no-such-command"],
    ],
    ids=lambda args: " ".join(args),
)
def test_a_bad_command_line_is_one_line(args, tmp_path):
    assert_one_line_exit_2(_run(args, tmp_path, TIERLOG_STORE=f"sqlite:///{tmp_path / 'l.db'}"))


def test_bench_with_tiny_sizes_runs(tmp_path):
    args = [
        "bench",
        "--json",
        "--events",
        "200",
        "--tasks",
        "40",
        "--batch",
        "10",
        "--repeats",
        "1",
    ]
    done = _run(args, tmp_path)
    assert done.returncode == 0, done.stderr


def test_an_address_that_never_answers_fails_within_the_connect_timeout(tmp_path):
    """A server that accepts the connection and then says nothing (as a firewall that
    drops packets, or a wrong port) is given up after the connect timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        store = f"postgresql://tierlog:{PASSWORD}@127.0.0.1:{port}/fleet?schema=prod"
        started = time.monotonic()
        done = _run(["audit", "--store", store], tmp_path, TIERLOG_STORE_CONNECT_TIMEOUT_S="2")
        took = time.monotonic() - started
    assert_one_line_exit_2(done)
    assert took < 15, f"gave up after {took:.1f} s, not about 2 s"
    for part in ("127.0.0.1", str(port), "fleet", "prod"):
        assert part in done.stderr


def _drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.postgres
def test_serve_explains_a_missing_schema_and_creates_it_when_asked(tmp_path):
    if not _pg_reachable():
        pytest.skip(f"PostgreSQL not reachable at {PG}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    store = _with_password(f"{PG}?schema={schema}")
    refused = _run(["serve", "--port", str(_free_port()), "--store", store], tmp_path)
    assert_one_line_exit_2(refused)
    assert "--create-schema" in refused.stderr and schema in refused.stderr
    port = _free_port()
    environ = {**os.environ, "TIERLOG_ADMIN_TOKEN": "operator-secret-token"}
    args = [_exe(), "serve", "--create-schema", "--port", str(port), "--store", store]
    process = subprocess.Popen(
        args, cwd=tmp_path, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        banner: list[str] = []
        reader = threading.Thread(
            target=lambda: banner.append(process.stdout.readline() if process.stdout else "")
        )
        reader.start()
        reader.join(timeout=60)
        assert banner and "tierlog serving on" in banner[0], banner
        assert "***" in banner[0] and PASSWORD not in banner[0]
    finally:
        process.terminate()
        rest = process.communicate(timeout=30)[0]
        _drop_schema(schema)
    assert PASSWORD not in rest
