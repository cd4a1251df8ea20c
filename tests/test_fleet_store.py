"""The fleet's records on both stores (SQLite and a real PostgreSQL server): commands
and the acks ingest stored, desired settings against the newest birth, and model
update campaigns with their jobs; the network below them is a recorded sender."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from test_store import db  # noqa: F401  (the backend-parametrised store fixture)

from firmware.net import protocol
from host.services import accounts, audit, commands, fleetconfig, ota
from host.services.store import Store, now_ms

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "beatnet"


def birth(device_id: str, seq: int, period_ms: int, patient: str, t0: int) -> dict:
    return protocol.birth(device_id, seq, t0 + seq, {
        "fw_version": "0.1.0", "model_version": "beatnet-1", "patient_id": patient,
        "sample_rate_hz": 250, "report_period_ms": period_ms, "boot_id": 1})


def test_commands_settings_and_campaigns_on_both_stores(db) -> None:  # noqa: F811
    T0 = now_ms()  # received now: an online device, not a stale one
    with Store(db) as store:
        for dev in ("bed-1", "bed-2"):
            accounts.add(store, dev, "device", actor="t")
        store.add("status", "bed-1", birth("bed-1", 0, 1000, "p-1", T0), T0)
        # a command and its ack: answered once ingest has the ack
        msg = commands.command_message("bed-1", "ping", {}, ts_ms=T0, expires_ms=T0 + 60_000)
        commands.record(store, msg, "alice")
        commands.mark_sent(store, msg["cmd_id"], T0 + 1)
        [row] = commands.list_commands(store, "bed-1", now=T0 + 2)
        assert (row.status, row.created_by, row.sent_ms) == ("unanswered", "alice", T0 + 1)
        assert commands.list_commands(store, now=T0 + 61_000)[0].status == "expired"
        ack = protocol.ack("bed-1", 1, T0 + 3, msg["cmd_id"], "ok", None, {"boot_id": 1})
        store.add("ack", "bed-1", ack, T0 + 3)
        [row] = commands.list_commands(store, "bed-1", now=T0 + 61_000)
        assert (row.status, row.data, row.answered_ms) == ("ok", {"boot_id": 1}, T0 + 3)
        # desired settings: upserted, audited, compared with the newest birth
        fleetconfig.set_desired(store, "bed-1", {"report_period_ms": 2000}, [], "bob")
        fleetconfig.set_desired(store, "bed-1", {"patient_id": "p-9"}, [], "bob")
        [d] = fleetconfig.drift(store, "bed-1")
        assert d.desired == {"patient_id": "p-9", "report_period_ms": 2000}
        assert d.pending == d.desired and d.state == "online"
        store.add("status", "bed-1", birth("bed-1", 2, 2000, "p-9", T0), T0 + 5)
        assert fleetconfig.drift(store, "bed-1")[0].pending == {}
        fleetconfig.set_desired(store, "bed-1", {}, ["patient_id"], "bob")
        assert fleetconfig.desired(store, "bed-1") == {"report_period_ms": 2000}
        changes = [e for e in audit.entries(store, action="config.set")]
        assert [e.after for e in changes][-1] == {"report_period_ms": 2000}
        # a campaign: the first device installs, the second refuses, none is left
        key = ec.generate_private_key(ec.SECP256R1())
        update = ota.prepare(SHIPPED, key)
        sent: list[tuple[str, str]] = []

        def send(device_id: str, name: str, args: dict) -> dict:
            sent.append((device_id, name))
            if device_id == "bed-2":
                return {"result": "rejected", "reason": "bad args: bad signature"}
            return {"result": "ok"}

        doc = ota.push(store, update, ["bed-1", "bed-2"], send, "carol")
        assert doc["state"] == "failed"
        assert doc["devices"]["bed-1"] == {"state": "installed", "commands": 9}
        assert doc["devices"]["bed-2"]["reason"] == \
            "model_begin: rejected: bad args: bad signature"
        assert sent.count(("bed-2", "model_begin")) == 1 and len(sent) == 10
        [camp] = ota.campaigns(store)
        assert (camp["state"], camp["created_by"], camp["version"]) == (
            "failed", "carol", "beatnet-1")
        assert {j["device_id"]: j["state"] for j in camp["jobs"]} == {
            "bed-1": "installed", "bed-2": "failed"}
        assert audit.verify(store).ok
