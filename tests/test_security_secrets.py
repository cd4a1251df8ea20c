"""No password is ever written to a log or an error message (issue 11 item 4): a whole
short demo run (mosquitto with accounts, ingest, two devices), every log record at
DEBUG, its printed output, every file it left (broker config, password and ACL files,
broker logs, device state, the store itself) is scanned for every password it issued;
and the demo still accounts for every message with authentication on."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from host.services import accounts
from host.services.demo import INGEST_ACCOUNT, OPERATOR_ACCOUNT, Demo
from host.services.store import Store


def test_a_demo_run_writes_no_secret_anywhere(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "var" / "medge.db"
    caplog.set_level(logging.DEBUG)
    demo = Demo(devices=2, duration_s=3, db_path=db, speed=4.0, broker_kind="mosquitto")
    out = io.StringIO()
    assert demo.run(out) == 0, out.getvalue()
    # Issued: the accounts' passwords and the broker's own admin login (its plugin).
    # The operator's password is in its 0600 file, for the user's medge fleet cmd: that
    # file is its one home, and it must appear nowhere else.
    pw_file = demo.operator_password_file
    assert pw_file.stat().st_mode & 0o777 == 0o600
    secrets = [*demo._passwords.values(), demo._ingest_password, demo.broker._admin_password,
               pw_file.read_text().strip()]
    assert len(set(secrets)) == 5 and all(len(s) >= 32 for s in secrets)
    text = out.getvalue()
    assert "demo: OK, nothing lost" in text and "accounts enforced" in text
    assert demo.broker.secure
    # The accounts exist and are enforced: the broker's files name them.
    with Store(db, readonly=True) as store:
        names = sorted(a.username for a in accounts.accounts(store) if a.active)
    assert names == [OPERATOR_ACCOUNT, INGEST_ACCOUNT, "sim-0001", "sim-0002"]
    passwd = (demo.broker.data_dir / "mosquitto.passwd").read_text()
    assert [line.split(":")[0] for line in passwd.splitlines()] == names
    # Every stored device message carries the incarnation its account was provisioned
    # with (the registry's, sent by the device from its config).
    with Store(db, readonly=True) as store:
        provisioned = {a.username: a.incarnation for a in accounts.accounts(store)
                       if a.role == "device"}
        sent = dict(store.db.execute(
            "SELECT device_id, group_concat(DISTINCT incarnation) FROM messages "
            "GROUP BY device_id").fetchall())
    assert all(provisioned.values()) and sent == provisioned
    places = {"log records": "\n".join(r.getMessage() + (r.exc_text or "")
                                       for r in caplog.records),
              "printed output": text}
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != pw_file:
            places[str(path.relative_to(tmp_path))] = path.read_bytes().decode("latin-1")
    assert len(places) > 8, sorted(places)  # logs, config, store, WAL, device state ...
    leaks = [(where, i) for where, body in places.items() for i, secret in enumerate(secrets)
             if secret in body]
    assert leaks == []
