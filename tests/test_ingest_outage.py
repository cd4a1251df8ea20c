"""Storage outages of 30 s, a full disk and a locked database at the same time,
against a real mosquitto: nothing is acknowledged while the store cannot take it,
health says why, and once the outage ends every message arrives exactly once,
without a restart (issue 10).

The full disk is real: a 16 MB tmpfs mounted in a private mount namespace
(``unshare -m``, root; CI runs as root), ingest running inside it as the real
``medge ingest`` process (``nsenter``), filled to the last byte with a file that
is deleted when the outage ends.  Where mounting is not permitted the disk is
"full" through SQLite's own limit (``PRAGMA max_page_count``: the same
SQLITE_FULL error a full disk gives) on an in-process ingest, so the test runs
everywhere and says which way it ran.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_ingest import wait_for  # tests/ is on sys.path (pytest rootdir import)
from test_ingest_poison import TOPIC, publish_all, vitals

from firmware.net.wire import encode
from host.broker.launch import Broker
from host.services.ingest import Ingest
from host.services.store import Store

OUTAGE_S = 30
N = 300
REPO = Path(__file__).resolve().parents[1]


class Namespace:
    """A private mount namespace holding a small tmpfs at ``folder``."""

    def __init__(self, folder: Path, size: str = "16m") -> None:
        self.folder = folder
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             'mount -t tmpfs -o size="$1" tmpfs "$0" && echo mounted && exec sleep 600',
             str(folder), size], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "mounted":
            self.proc.kill()
            raise OSError(self.proc.stderr.read().strip() if self.proc.stderr else "no mount")

    def cmd(self, *args: str) -> list[str]:
        return ["nsenter", "-t", str(self.proc.pid), "-m", "--", *args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=60,
                              check=False)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def _namespace(folder: Path) -> Namespace | None:
    """The namespace, or None where mounting is not permitted (or
    ``MEDGE_TEST_NO_MOUNT=1``, to run the fallback on purpose)."""
    if os.environ.get("MEDGE_TEST_NO_MOUNT") == "1":
        return None
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("nsenter")):
        return None
    try:
        return Namespace(folder)
    except OSError:
        return None


@pytest.fixture
def broker(tmp_path: Path):
    with Broker("mosquitto", data_dir=tmp_path / "broker") as b:
        yield b


_READ_STORE = """
import json, sys
from host.services.store import Store
with Store(sys.argv[1], readonly=True) as s:
    print(json.dumps({"seqs": s.seqs("dev-1"), "vitals": s.vitals_count("dev-1"),
                      "counters": s.counters()}))
"""


def test_a_30_s_full_disk_and_a_30_s_locked_database_heal_without_a_restart(
        broker: Broker, tmp_path: Path) -> None:
    # -- the locked database: an in-process ingest, another connection holds the lock
    locked_db = tmp_path / "locked.db"
    locked = Ingest(locked_db, broker.host, broker.port, client_id="ingest-locked")
    locked.start()
    assert locked.wait_connected(10)
    locker = sqlite3.connect(locked_db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")

    # -- the full disk
    folder = tmp_path / "small"
    folder.mkdir()
    ns = _namespace(folder)
    log = tmp_path / "full-ingest.log"
    full_db = folder / "full.db"
    proc = None
    full = None
    if ns is not None:
        with open(log, "w") as out:
            proc = subprocess.Popen(ns.cmd(
                sys.executable, "-m", "host.cli", "ingest", "--host", broker.host, "--port",
                str(broker.port), "--db", str(full_db), "--client-id", "ingest-full"),
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        assert wait_for(lambda: "connected to" in log.read_text(), 20), log.read_text()
        filler = ns.run("sh", "-c", f'cat /dev/zero > "{folder}/filler"')
        assert "No space left" in filler.stderr, filler.stderr
    else:  # no mount namespace here: SQLite's own "database or disk is full"
        full = Ingest(full_db, broker.host, broker.port, client_id="ingest-full")
        full.start()
        assert full.wait_connected(10)
        (pages,) = full.store.db.execute("PRAGMA page_count").fetchone()
        full.store.db.execute(f"PRAGMA max_page_count={pages}")
    try:
        publish_all(broker, [(TOPIC, encode(vitals(i))) for i in range(N)])
        assert wait_for(lambda: "locked" in str(locked.stats()["storage"]), 10)
        if proc is not None:
            assert wait_for(lambda: "storage failing" in log.read_text(), 10), log.read_text()
            assert "full" in log.read_text()
        else:
            assert full is not None
            assert wait_for(lambda: "full" in str(full.stats()["storage"]), 10)
        time.sleep(OUTAGE_S)
        assert locked.stats()["stored"] == 0
        assert str(locked.stats()["storage"]).startswith("storage failing since ")
        assert proc is None or proc.poll() is None  # ingest kept running
    finally:
        locker.execute("ROLLBACK")
        locker.close()
        if ns is not None:
            ns.run("rm", "-f", f"{folder}/filler")
        elif full is not None:
            full.store.db.execute("PRAGMA max_page_count=1073741823")
    try:
        assert wait_for(lambda: locked.stats()["stored"] == N, 30)
        assert locked.stats()["storage"] == "ok"
        if proc is not None:
            assert ns is not None
            assert wait_for(lambda: "storage back after" in log.read_text(), 30), \
                log.read_text()
            read = lambda: json.loads(ns.run(sys.executable, "-c", _READ_STORE,  # noqa: E731
                                             str(full_db)).stdout or "{}")
            assert wait_for(lambda: read().get("vitals") == N, 30), read()
            got = read()
        else:
            assert full is not None
            assert wait_for(lambda: full.stats()["stored"] == N, 30)
    finally:
        locked.stop()
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        if full is not None:
            full.stop()
    if proc is None:
        with Store(full_db, readonly=True) as store:
            got = {"seqs": store.seqs("dev-1"), "vitals": store.vitals_count("dev-1"),
                   "counters": store.counters()}
    with Store(locked_db, readonly=True) as store:
        assert store.seqs("dev-1") == list(range(N))
        assert store.counters()["stored"] == N
    assert got["seqs"] == list(range(N)) and got["vitals"] == N
    assert got["counters"].get("duplicate", 0) == 0 and got["counters"]["stored"] == N
    if ns is not None:
        ns.close()
    print(f"full disk: {'tmpfs in a mount namespace' if ns else 'SQLite max_page_count'}")
