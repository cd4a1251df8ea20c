"""``medge fleet cmd`` / ``medge fleet commands`` end to end on a real mosquitto with
accounts: a host account commands a running device (paho link, and the MicroPython
board's umqtt link), the device answers, ingest stores the acks, the store and the
audit log record who sent what; rejections, an unknown device and an offline device
give one line and the right exit status."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from test_device_commands import PacedSource, StepClock
from test_security_cli import cli, medge

from firmware.device import Device, DeviceConfig
from firmware.hw.state import MemoryState
from firmware.net.links.paho import PahoLink
from firmware.net.links.umqtt import UmqttLink
from host.broker.launch import Broker, registry_accounts
from host.services import accounts, audit
from host.services.ingest import Ingest
from host.services.store import Store

FS = 250


class Running:
    """A device stepped on a thread: flat-line samples, real link, until stopped."""

    def __init__(self, device_id: str, link) -> None:
        self.dev = Device(DeviceConfig(device_id, FS), PacedSource(), link, StepClock(),
                          MemoryState())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not link.connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert link.connected()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.dev.source.allowed = FS // 50
            self.dev.clock.ms += 20
            self.dev.step()
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.dev.link.disconnect()


@pytest.fixture(scope="module")
def ward(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("cmd")
    db = tmp / "medge.db"
    with Store(db) as store:
        pw = {name: accounts.add(store, name, role, actor="test")[1]
              for name, role in (("bed-5", "device"), ("bed-6", "device"),
                                 ("bed-9", "device"), ("ops", "host"), ("ingest", "host"))}
    (tmp / "ops.pw").write_text(pw["ops"] + "\n")
    with Broker("mosquitto", data_dir=tmp / "b", accounts=registry_accounts(db)) as broker:
        ingest = Ingest(db, broker.host, broker.port, username="ingest", password=pw["ingest"])
        ingest.start()
        assert ingest.wait_connected(10)
        devices = {
            "bed-5": Running("bed-5", PahoLink(broker.host, broker.port, "bed-5",
                                               username="bed-5", password=pw["bed-5"])),
            "bed-6": Running("bed-6", UmqttLink(broker.host, broker.port, "bed-6",
                                                user="bed-6", password=pw["bed-6"])),
        }
        try:
            yield {"db": str(db), "tmp": tmp, "broker": broker, "ingest": ingest,
                   "devices": devices,
                   "login": ["--host", broker.host, "--port", str(broker.port),
                             "--username", "ops", "--password-file", str(tmp / "ops.pw"),
                             "--db", str(db)]}
        finally:
            for d in devices.values():
                d.stop()
            ingest.stop()


def test_a_device_answers_ping_and_set_config_through_the_broker(ward, capsys) -> None:
    for device_id in ("bed-5", "bed-6"):  # paho link, and the board's umqtt link
        run = cli(capsys, "fleet", "cmd", device_id, "ping", "--json", "--actor", "alice",
                  *ward["login"])
        assert run.returncode == 0, run.stderr
        doc = json.loads(run.stdout)
        assert (doc["device_id"], doc["result"]) == (device_id, "ok")
        assert doc["data"]["fw_version"] == "0.1.0" and doc["data"]["report_period_ms"] == 1000
    run = cli(capsys, "fleet", "cmd", "bed-5", "set_config", "--set", "report_period_ms=2000",
              "--actor", "alice", *ward["login"])
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("bed-5 set_config c-") and " ok " in run.stdout
    dev = ward["devices"]["bed-5"].dev
    deadline = time.monotonic() + 10
    while dev.cfg.report_period_ms != 2000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dev.cfg.report_period_ms == 2000
    with Store(ward["db"], readonly=True) as store:
        sent = [e for e in audit.entries(store, action="command.send") if e.actor == "alice"]
        assert [e.subject for e in sent] == ["bed-5", "bed-6", "bed-5"]
        assert sent[-1].after["args"] == {"report_period_ms": 2000}
        assert sent[-1].after["cmd_id"].startswith("c-")


def test_rejections_and_bad_input_are_one_line_with_the_exit_status(ward, capsys) -> None:
    run = cli(capsys, "fleet", "cmd", "bed-5", "set_config", "--set", "sample_rate_hz=360",
              "--json", *ward["login"])
    assert run.returncode == 1
    doc = json.loads(run.stdout)
    assert doc["result"] == "rejected" and "'sample_rate_hz' cannot be set" in doc["reason"]
    run = cli(capsys, "fleet", "cmd", "bed-5", "fly", *ward["login"])
    assert run.returncode == 1 and "rejected unknown command 'fly'" in run.stdout
    run = cli(capsys, "fleet", "cmd", "bed-404", "ping", *ward["login"])
    assert run.returncode == 2
    assert run.stderr.strip() == "medge fleet cmd: no device bed-404 (medge fleet list --accounts)"
    run = cli(capsys, "fleet", "cmd", "bed-5", "ping", "--set", "oops", *ward["login"])
    assert run.returncode == 2 and "--set 'oops': expected KEY=VALUE" in run.stderr
    run = cli(capsys, "fleet", "cmd", "bed-5", "Bad Name", *ward["login"])
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr


def test_an_offline_device_gets_nothing_and_the_command_stays_unanswered(ward, capsys) -> None:
    run = cli(capsys, "fleet", "cmd", "bed-9", "ping", "--wait", "1", *ward["login"])
    assert run.returncode == 1
    assert "bed-9 did not answer c-" in run.stderr and "recorded unanswered" in run.stderr
    assert run.stderr.count("\n") == 1


def test_medge_fleet_commands_lists_the_answers_ingest_stored(ward, capsys) -> None:
    assert cli(capsys, "fleet", "cmd", "bed-9", "ping", "--wait", "0.5",
               *ward["login"]).returncode == 1
    assert cli(capsys, "fleet", "cmd", "bed-6", "fly", *ward["login"]).returncode == 1
    assert cli(capsys, "fleet", "cmd", "bed-6", "ping", *ward["login"]).returncode == 0
    assert cli(capsys, "fleet", "cmd", "bed-6", "reboot", *ward["login"]).returncode == 0
    assert ward["devices"]["bed-6"].dev.restart_requested
    deadline = time.monotonic() + 10
    while True:
        run = medge("fleet", "commands", "bed-6", "--json", "--db", ward["db"],
                    cwd=ward["tmp"])  # what a user runs, a process of its own
        assert run.returncode == 0, run.stderr
        rows = json.loads(run.stdout)
        if all(r["status"] != "unanswered" for r in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [(r["name"], r["status"]) for r in rows][:3] == [
        ("reboot", "ok"), ("ping", "ok"), ("fly", "rejected")]
    assert rows[1]["data"]["boot_id"] == 1 and "unknown command" in rows[2]["reason"]
    assert all(r["sent_ms"] >= r["created_ms"] and r["created_by"] for r in rows)
    everything = json.loads(medge("fleet", "commands", "--json", "--db", ward["db"],
                                  cwd=ward["tmp"]).stdout)
    assert {"ok", "rejected", "unanswered"} <= {r["status"] for r in everything}
    table = medge("fleet", "commands", "--db", ward["db"], cwd=ward["tmp"]).stdout
    assert table.splitlines()[0].split()[:3] == ["sent", "(UTC)", "device"]
