"""Accounts and the audit log at the command line (issue 11 items 1, 2, 6): medge fleet
add|list|show|remove with the contract-11 JSON, the password shown once and stored
only as a hash; medge audit verify passes on an untouched store and fails naming the
edited or deleted row; medge broker --db refuses anonymous clients, lets a new account
in and closes a removed one's connection within a second or two.  (medge sim with
authentication: tests/test_sim_fleet.py's CLI run, which provisions its devices.)"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from host.broker.launch import free_port

MEDGE = str(Path(sys.executable).with_name("medge"))


def medge(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MEDGE_DB"}
    return subprocess.run([MEDGE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_fleet_accounts_and_the_audit_log(tmp_path: Path) -> None:
    db = str(tmp_path / "m.db")
    added = medge("fleet", "add", "bed-1", "--json", "--db", db, "--actor", "alice",
                  cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    doc = json.loads(added.stdout)
    assert (doc["device_id"], doc["role"], doc["username"]) == ("bed-1", "device", "bed-1")
    password = doc["password"]
    assert len(password) >= 32 and len(doc["incarnation"]) == 16
    again = medge("fleet", "add", "bed-1", "--db", db, cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.startswith("medge fleet add: account bed-1 "
                                                             "exists")
    assert len(again.stderr.splitlines()) == 1
    pw_file = tmp_path / "ingest.pw"
    host = medge("fleet", "add", "ingest-1", "--role", "host", "--password-file", str(pw_file),
                 "--json", "--db", db, cwd=tmp_path)
    assert host.returncode == 0, host.stderr
    assert "password" not in json.loads(host.stdout)
    assert oct(pw_file.stat().st_mode & 0o777) == "0o600" and len(pw_file.read_text()) > 32
    # The store keeps hashes only.
    raw = Path(db).read_bytes()
    assert password.encode() not in raw and pw_file.read_text().strip().encode() not in raw

    listed = json.loads(medge("fleet", "list", "--json", "--accounts", "--db", db,
                              cwd=tmp_path).stdout)
    assert [(d["id"], d["role"], d["credentials"], d["state"]) for d in listed] == [
        ("bed-1", "device", "set", "offline"), ("ingest-1", "host", "set", None)]
    shown = json.loads(medge("fleet", "show", "bed-1", "--json", "--db", db,
                             cwd=tmp_path).stdout)
    assert shown["account"]["incarnation"] == doc["incarnation"]
    assert shown["account"]["credentials"] == "set" and "password" not in shown["account"]
    removed = medge("fleet", "remove", "bed-1", "--db", db, "--actor", "bob", cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr

    rows = json.loads(medge("audit", "list", "--json", "--db", db, cwd=tmp_path).stdout)
    assert [(r["id"], r["actor"], r["action"], r["subject"]) for r in rows] == [
        (1, "alice", "account.add", "bed-1"), (2, os.environ.get("USER") or rows[1]["actor"],
                                                "account.add", "ingest-1"),
        (3, "bob", "account.remove", "bed-1")]
    assert rows[2]["before"]["credentials"] == "set" and rows[2]["after"]["credentials"] == "none"
    assert password not in json.dumps(rows)
    ok = medge("audit", "verify", "--json", "--db", db, cwd=tmp_path)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    assert json.loads(ok.stdout)["head"] == f"3:{rows[2]['hash']}"

    with sqlite3.connect(db) as conn:  # someone edits the removal away
        conn.execute("UPDATE audit_log SET actor = 'nobody' WHERE id = 2")
    edited = medge("audit", "verify", "--db", db, cwd=tmp_path)
    assert edited.returncode == 1
    assert edited.stdout.strip() == ("audit log FAILED at row 2: row 2 edited (its content no "
                                     "longer matches its hash)")
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit_log WHERE id = 2")
    deleted = medge("audit", "verify", "--json", "--db", db, cwd=tmp_path)
    assert deleted.returncode == 1
    assert json.loads(deleted.stdout)["bad_id"] == 2
    assert "row 2 deleted" in json.loads(deleted.stdout)["reason"]


def _connect(port: int, user: str | None, password: str | None) -> tuple[mqtt.Client, dict]:
    state: dict = {"disconnected": threading.Event()}
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=user or "anon",
                    protocol=mqtt.MQTTv311)
    if user:
        c.username_pw_set(user, password)
    c.on_connect = lambda cl, ud, fl, rc, pr: (state.update(rc=str(rc)), done.set())
    c.on_disconnect = lambda *_: state["disconnected"].set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    done.wait(5)
    return c, state


def test_medge_broker_with_the_registry(tmp_path: Path) -> None:
    db = str(tmp_path / "m.db")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MEDGE_DB"}
    broker = subprocess.Popen([MEDGE, "broker", "--kind", "mosquitto", "--port", str(port),
                               "--db", db, "--data-dir", str(tmp_path / "broker")],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(100):
            c, st = _connect(port, None, None) if _port_open(port) else (None, {})
            if c is not None:
                c.loop_stop()
                break
            time.sleep(0.05)
        assert st.get("rc") == "Not authorized"  # anonymous refused
        doc = json.loads(medge("fleet", "add", "bed-2", "--json", "--db", db,
                               cwd=tmp_path).stdout)
        deadline = time.monotonic() + 5
        while True:  # the broker picks the new account up (poll 0.5 s + SIGHUP)
            c, st = _connect(port, "bed-2", doc["password"])
            if st.get("rc") == "Success" or time.monotonic() > deadline:
                break
            c.loop_stop()
            time.sleep(0.2)
        assert st.get("rc") == "Success"
        t0 = time.monotonic()
        assert medge("fleet", "remove", "bed-2", "--db", db, cwd=tmp_path).returncode == 0
        assert st["disconnected"].wait(5), "the removed account is still connected"
        assert time.monotonic() - t0 < 3
        c.loop_stop()
    finally:
        broker.terminate()
        out, _ = broker.communicate(timeout=15)
    assert "anonymous clients refused" in out and "AUTHENTICATION OFF" not in out
    assert "accounts changed" in out
    assert doc["password"] not in out


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_insecure_says_so(tmp_path: Path) -> None:
    assert shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MEDGE_DB"}
    proc = subprocess.Popen([MEDGE, "broker", "--insecure", "--kind", "mosquitto", "--port",
                             str(port), "--data-dir", str(tmp_path / "b")], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(100):
            if _port_open(port):
                break
            time.sleep(0.05)
        c, st = _connect(port, None, None)
        c.loop_stop()
        assert st.get("rc") == "Success"  # anonymous allowed: development only
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert "AUTHENTICATION OFF" in out and "--insecure" in out
