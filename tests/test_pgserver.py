"""The throw-away PostgreSQL server the tests use (host/services/storage/pgserver.py,
the ``postgres`` fixture): a real server that psycopg 3 talks to, and that is gone once stopped."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from host.services.storage import pgserver
from host.services.storage.pgserver import PgServer, PgServerError, find_bin_dir

START_BUDGET_S = 10.0  # about 1 s here; the hard bound is PgServer's 30 s timeout


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.timeout(60)
def test_fixture_server_takes_a_table_and_a_transaction(postgres: str) -> None:
    assert postgres.startswith("postgresql://medge@127.0.0.1:") and postgres.endswith("/medge")
    with psycopg.connect(postgres, connect_timeout=10) as conn:
        conn.execute("CREATE TABLE t_pgserver (id int PRIMARY KEY, v text NOT NULL)")
        with conn.transaction():
            conn.execute("INSERT INTO t_pgserver VALUES (%s, %s), (%s, %s)",
                         (1, "one", 2, "two"))
        with conn.transaction():  # rolled back: nothing of it stays
            conn.execute("INSERT INTO t_pgserver VALUES (3, 'three')")
            raise psycopg.Rollback()
    with psycopg.connect(postgres, connect_timeout=10) as conn:  # a second session sees it
        rows = conn.execute("SELECT id, v FROM t_pgserver ORDER BY id").fetchall()
        assert rows == [(1, "one"), (2, "two")]
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
        conn.execute("DROP TABLE t_pgserver")


@pytest.mark.timeout(60)
def test_start_is_bounded_and_stop_leaves_nothing_behind() -> None:
    server = PgServer()
    try:
        server.start()
        assert server.start_s is not None and server.start_s < START_BUDGET_S, server.start_s
        port, tmp, pid = server.port, server.tmp, server.proc.pid  # type: ignore[union-attr]
        assert port is not None and tmp is not None and _port_open(port)
        conn = psycopg.connect(server.url, connect_timeout=10)
        assert conn.execute("SELECT current_database(), current_user").fetchone() == (
            "medge", "medge")
        conn.execute("CREATE TABLE t (x int)")  # an open transaction does not hold up stop
        server.stop()
        conn.close()
    finally:
        server.stop()
    assert server.proc is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not _port_open(port)
    assert not Path(tmp).exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://medge@127.0.0.1:{port}/medge", connect_timeout=2)
    server.stop()  # idempotent


def test_missing_binaries_are_one_line_naming_the_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pgserver, "PG_LIB_DIR", tmp_path)
    assert find_bin_dir() is None
    with pytest.raises(PgServerError) as exc:
        PgServer().start()
    msg = str(exc.value)
    assert "\n" not in msg and msg.endswith("apt-get install -y postgresql"), msg


@pytest.mark.timeout(60)
def test_a_sigkilled_parent_takes_its_server_down() -> None:
    """No finally or atexit runs after SIGKILL: the parent-death signal stops the server."""
    script = ("import sys, time; sys.path.insert(0, sys.argv[1]);"
              "from host.services.storage.pgserver import PgServer;"
              "s = PgServer().start(); print(s.proc.pid, s.tmp, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script, str(Path(__file__).parents[1])],
                              stdout=subprocess.PIPE, text=True)
    try:
        pid_text, tmp = parent.stdout.readline().split()  # type: ignore[union-attr]
    finally:
        parent.kill()
        parent.wait(10)
    pid = int(pid_text)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid), f"postgres {pid} outlived its SIGKILLed parent"
    shutil.rmtree(tmp, ignore_errors=True)  # what only a finally would have removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
