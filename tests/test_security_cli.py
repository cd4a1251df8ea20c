"""Accounts and the audit log at the command line (issue 11 items 1, 2, 6): medge fleet
add|list|show|remove with the contract-11 JSON, the password shown once and stored
only as a hash; medge audit verify passes on an untouched store and fails naming the
edited or deleted row; medge broker --db refuses anonymous clients, lets a new account
in and closes a removed one's connection within a second or two.  (medge sim with
authentication: tests/test_sim_fleet.py's CLI run, which provisions its devices.)"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from test_security_tls import tls_connack

from host.broker.launch import free_port
from host.services.audit import default_actor

MEDGE = str(Path(sys.executable).with_name("medge"))


def medge(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``medge ARGS`` in a new process (what a user runs)."""
    env = {k: v for k, v in os.environ.items() if k != "MEDGE_DB"}
    return subprocess.run([MEDGE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


class Run:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    """``medge ARGS`` in this process (host.cli.main: the same parser and commands,
    without a Python start-up per call)."""
    from host.cli import main

    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return Run(code, out.out, out.err)


def test_fleet_accounts_and_the_audit_log(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "m.db")
    added = medge("fleet", "add", "bed-1", "--json", "--db", db, "--actor", "alice",
                  cwd=tmp_path)  # one real process: the contract-11 output
    assert added.returncode == 0, added.stderr
    doc = json.loads(added.stdout)
    assert (doc["device_id"], doc["role"], doc["username"]) == ("bed-1", "device", "bed-1")
    password = doc["password"]
    assert len(password) >= 32 and len(doc["incarnation"]) == 16
    again = cli(capsys, "fleet", "add", "bed-1", "--db", db)
    assert again.returncode == 2 and again.stderr.startswith("medge fleet add: account bed-1 "
                                                             "exists")
    assert len(again.stderr.splitlines()) == 1
    pw_file = tmp_path / "ingest.pw"
    host = cli(capsys, "fleet", "add", "ingest-1", "--role", "host", "--password-file",
               str(pw_file), "--json", "--db", db)
    assert host.returncode == 0, host.stderr
    assert "password" not in json.loads(host.stdout)
    assert oct(pw_file.stat().st_mode & 0o777) == "0o600" and len(pw_file.read_text()) > 32
    # The store keeps hashes only.
    raw = Path(db).read_bytes()
    assert password.encode() not in raw and pw_file.read_text().strip().encode() not in raw

    listed = json.loads(cli(capsys, "fleet", "list", "--json", "--accounts", "--db", db).stdout)
    assert [(d["id"], d["role"], d["credentials"], d["state"]) for d in listed] == [
        ("bed-1", "device", "set", "offline"), ("ingest-1", "host", "set", None)]
    shown = json.loads(cli(capsys, "fleet", "show", "bed-1", "--json", "--db", db).stdout)
    assert shown["account"]["incarnation"] == doc["incarnation"]
    assert shown["account"]["credentials"] == "set" and "password" not in shown["account"]
    removed = cli(capsys, "fleet", "remove", "bed-1", "--db", db, "--actor", "bob")
    assert removed.returncode == 0, removed.stderr

    rows = json.loads(cli(capsys, "audit", "list", "--json", "--db", db).stdout)
    assert [(r["id"], r["actor"], r["action"], r["subject"]) for r in rows] == [
        (1, "alice", "account.add", "bed-1"), (2, default_actor(), "account.add", "ingest-1"),
        (3, "bob", "account.remove", "bed-1")]
    assert rows[2]["before"]["credentials"] == "set" and rows[2]["after"]["credentials"] == "none"
    assert password not in json.dumps(rows)
    ok = cli(capsys, "audit", "verify", "--json", "--db", db)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    assert json.loads(ok.stdout)["head"] == f"3:{rows[2]['hash']}"

    with sqlite3.connect(db) as conn:  # someone rewrites who made ingest's account
        conn.execute("UPDATE audit_log SET actor = 'nobody' WHERE id = 2")
    edited = cli(capsys, "audit", "verify", "--db", db)
    assert edited.returncode == 1
    assert edited.stdout.strip() == ("audit log FAILED at row 2: row 2 edited (its content no "
                                     "longer matches its hash)")
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit_log WHERE id = 2")
    deleted = cli(capsys, "audit", "verify", "--json", "--db", db)
    assert deleted.returncode == 1
    assert json.loads(deleted.stdout)["bad_id"] == 2
    assert "row 2 deleted" in json.loads(deleted.stdout)["reason"]


def test_certificates_at_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "m.db")
    no_ca = cli(capsys, "fleet", "add", "bed-3", "--cert", "--db", db)
    assert no_ca.returncode == 2 and "medge fleet ca init" in no_ca.stderr
    made = cli(capsys, "fleet", "ca", "init", "--json", "--db", db)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["ca_file"] == str(tmp_path / "m.db.d" / "ca" / "ca.pem")
    assert cli(capsys, "fleet", "ca", "init", "--db", db).returncode == 2  # kept, not replaced
    doc = json.loads(cli(capsys, "fleet", "add", "bed-3", "--cert", "--json", "--db",
                         db).stdout)
    cert = doc["cert"]
    assert Path(cert["cert_file"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert oct(Path(cert["key_file"]).stat().st_mode & 0o777) == "0o600"
    assert "PRIVATE KEY" not in json.dumps(doc)
    bad = cli(capsys, "ingest", "--tls-cert", cert["cert_file"], "--db", db)
    assert bad.returncode == 2 and "need --tls-ca" in bad.stderr
    bad = cli(capsys, "broker", "--insecure", "--tls", "--db", db)
    assert bad.returncode == 2 and "--tls needs accounts" in bad.stderr


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


def test_medge_broker_with_the_registry(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "m.db")
    port, tls_port = free_port(), free_port()
    assert cli(capsys, "fleet", "ca", "init", "--db", db).returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "MEDGE_DB"}
    broker = subprocess.Popen([MEDGE, "broker", "--kind", "mosquitto", "--port", str(port),
                               "--db", db, "--data-dir", str(tmp_path / "broker"), "--tls",
                               "--tls-port", str(tls_port)],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20  # a loaded machine: the CLI's start-up imports
        st: dict = {}
        while time.monotonic() < deadline:
            c, st = _connect(port, None, None) if _port_open(port) else (None, {})
            if c is not None:
                c.loop_stop()
                break
            time.sleep(0.05)
        assert st.get("rc") == "Not authorized"  # anonymous refused
        doc = json.loads(cli(capsys, "fleet", "add", "bed-2", "--cert", "--json", "--db",
                             db).stdout)
        # the broker picks the new account up (poll 0.5 s + SIGHUP); 15 s: under a
        # loaded CI machine this took more than 5 s once
        deadline = time.monotonic() + 15
        while True:
            c, st = _connect(port, "bed-2", doc["password"])
            if st.get("rc") == "Success" or time.monotonic() > deadline:
                break
            c.loop_stop()
            time.sleep(0.2)
        if st.get("rc") != "Success":
            broker.terminate()
            pytest.fail("the broker did not take the new account within 15 s:\n"
                        + broker.communicate(timeout=15)[0][-3000:])
        # ... and on the TLS listener with its certificate (and its password).
        tls = doc["cert"]
        assert tls_connack("127.0.0.1", tls_port, tls, "bed-2", doc["password"]) == "Success"
        assert tls_connack("127.0.0.1", tls_port, {"ca_file": tls["ca_file"]}, "bed-2",
                           doc["password"]) != "Success"  # no client certificate
        t0 = time.monotonic()
        assert cli(capsys, "fleet", "remove", "bed-2", "--db", db).returncode == 0
        assert st["disconnected"].wait(5), "the removed account is still connected"
        assert time.monotonic() - t0 < 3
        c.loop_stop()
    finally:
        broker.terminate()
        out, _ = broker.communicate(timeout=15)
    assert "anonymous clients refused" in out and "AUTHENTICATION OFF" not in out
    assert f"TLS with client certificates on port {tls_port}" in out
    assert "accounts changed" in out
    assert doc["password"] not in out


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
