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
from pathlib import Path

import pytest
from test_device_commands import PacedSource, StepClock
from test_security_cli import cli, medge

from firmware.device import Device, DeviceConfig
from firmware.hw.state import FileState, MemoryState
from firmware.ml.infer import ModelSlot
from firmware.ml.update import ModelUpdater
from firmware.net.links.paho import PahoLink
from firmware.net.links.umqtt import UmqttLink
from host.broker.launch import Broker, registry_accounts
from host.services import accounts, audit, ota
from host.services.ingest import Ingest
from host.services.store import Store

FS = 250
SHIPPED = Path(__file__).resolve().parents[1] / "models" / "beatnet"


class Running:
    """A device stepped on a thread: flat-line samples, real link, until stopped; with
    ``update_key``, the shipped beat model and signed model updates (state in ``tmp``)."""

    def __init__(self, device_id: str, link, update_key: bytes | None = None,
                 tmp: Path | None = None) -> None:
        model = updater = None
        state = MemoryState()
        if update_key is not None:
            model = ModelSlot()
            assert model.install_files(str(SHIPPED) + ".tflite", str(SHIPPED) + ".json")
            state = FileState(str(tmp / f"{device_id}.json"))
            updater = ModelUpdater(model, state, str(tmp / f"{device_id}.model"),
                                   factory=str(SHIPPED), key=update_key)
        self.dev = Device(DeviceConfig(device_id, FS, mains_hz=50), PacedSource(), link,
                          StepClock(), state, model=model, updater=updater)
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
                                 ("bed-7", "device"), ("bed-9", "device"), ("ops", "operator"),
                                 ("ingest", "host"))}
    key = ota.load_key(ota.init_key(ota.default_dir(db)).parent)
    update_key = bytes.fromhex(ota.public_key_hex(key))
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
            "bed-7": Running("bed-7", PahoLink(broker.host, broker.port, "bed-7",
                                               username="bed-7", password=pw["bed-7"]),
                             update_key, tmp),
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
    login = list(ward["login"])
    login[login.index("ops")] = "ingest"  # a host account: reads data, sends no commands
    run = cli(capsys, "fleet", "cmd", "bed-5", "ping", *login)
    assert run.returncode == 2 and "a host account; commands need an operator account" \
        in run.stderr
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


def test_a_signed_model_update_is_installed_and_a_forged_one_refused(ward, capsys, tmp_path
                                                                      ) -> None:
    base = tmp_path / "beatnet-2"
    base.with_suffix(".tflite").write_bytes(SHIPPED.with_suffix(".tflite").read_bytes())
    meta = json.loads(SHIPPED.with_suffix(".json").read_text())
    meta["version"] = "beatnet-2"
    base.with_suffix(".json").write_text(json.dumps(meta))
    dev = ward["devices"]["bed-7"].dev
    assert dev.model.version == "beatnet-1"
    run = cli(capsys, "fleet", "ota", "push", "bed-7", "--model", str(base), "--json",
              "--actor", "carol", *ward["login"])
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["state"] == "done" and doc["devices"]["bed-7"]["state"] == "installed"
    assert doc["devices"]["bed-7"]["commands"] == 9  # begin, 7 chunks, commit
    assert dev.model.version == "beatnet-2" and dev.updater.active() == "a"
    deadline = time.monotonic() + 10  # the new birth reaches the fleet list
    while True:
        fleet = json.loads(cli(capsys, "fleet", "list", "--json", "--db", ward["db"]).stdout)
        model = {d["id"]: d["model_version"] for d in fleet}.get("bed-7")
        if model == "beatnet-2" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert model == "beatnet-2"
    # a key the device does not trust: refused at model_begin, the campaign failed,
    # the next device skipped
    other = tmp_path / "other-key"
    ota.init_key(other)
    run = cli(capsys, "fleet", "ota", "push", "bed-7", "bed-5", "--model", str(SHIPPED),
              "--key-dir", str(other), *ward["login"])
    assert run.returncode == 1
    assert "bed-7: model_begin: rejected: bad args: bad signature" in run.stdout
    assert dev.model.version == "beatnet-2"
    listed = json.loads(cli(capsys, "fleet", "ota", "list", "--json", "--db",
                            ward["db"]).stdout)
    assert [c["state"] for c in listed][:2] == ["failed", "done"]
    assert {j["device_id"]: j["state"] for j in listed[0]["jobs"]} == {
        "bed-7": "failed", "bed-5": "skipped"}
    # rollback is an ordinary command; the retained birth names the model in use
    run = cli(capsys, "fleet", "cmd", "bed-7", "model_rollback", "--json", *ward["login"])
    assert json.loads(run.stdout)["data"] == {"model_version": "beatnet-1",
                                              "slot": "factory", "from": "a"}
    assert dev.model.version == "beatnet-1"
    with Store(ward["db"], readonly=True) as store:
        pushes = audit.entries(store, action="ota.push")
        assert [e.actor for e in pushes][-2:] == ["carol", pushes[-1].actor]
        assert pushes[-2].after["version"] == "beatnet-2"


def test_medge_fleet_strip_draws_the_devices_last_seconds(ward, capsys, tmp_path) -> None:
    out = tmp_path / "bed-5.png"
    dev = ward["devices"]["bed-5"].dev
    deadline = time.monotonic() + 30  # 3 s of samples at the test's pace
    while dev.samples < 3 * FS and time.monotonic() < deadline:
        time.sleep(0.1)
    run = cli(capsys, "fleet", "strip", "bed-5", "--seconds", "3", "--out", str(out), "--json",
              *ward["login"])
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["fs_hz"] == FS and doc["seconds"] == 3 and doc["signal"] == "lead_off"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    bad = cli(capsys, "fleet", "strip", "bed-5", "--out", str(tmp_path / "x.txt"),
              *ward["login"])
    assert bad.returncode == 2 and "--out must end in .png" in bad.stderr


def test_desired_settings_are_synced_to_online_devices_once(ward, capsys) -> None:
    def config(device_id: str) -> dict:
        run = cli(capsys, "fleet", "config", device_id, "--json", "--db", ward["db"])
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)

    run = cli(capsys, "fleet", "config", "bed-6", "--set", "report_period_ms=1001",
              "--db", ward["db"])
    assert run.returncode == 2 and "whole number of samples" in run.stderr
    for device_id in ("bed-6", "bed-9"):  # bed-9 is offline (never seen)
        assert cli(capsys, "fleet", "config", device_id, "--set", "report_period_ms=4000",
                   "--set", "patient_id=p-44", "--actor", "dana",
                   "--db", ward["db"]).returncode == 0
    doc = config("bed-6")
    assert doc["desired"] == {"patient_id": "p-44", "report_period_ms": 4000}
    assert doc["pending"] == doc["desired"] and doc["state"] == "online"
    run = cli(capsys, "fleet", "sync", "--json", "--actor", "dana", *ward["login"])
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)["results"]
    assert [(r["device_id"], r["result"]) for r in results] == [("bed-6", "ok")]
    dev = ward["devices"]["bed-6"].dev
    assert dev.cfg.patient_id == "p-44"
    deadline = time.monotonic() + 10  # the device's new birth, stored by ingest
    while config("bed-6")["pending"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert config("bed-6")["pending"] == {} and config("bed-6")["reported"]["patient_id"] == "p-44"
    again = cli(capsys, "fleet", "sync", "--json", *ward["login"])
    assert json.loads(again.stdout)["results"] == []  # nothing drifts: nothing sent
    assert config("bed-9")["pending"] == {"patient_id": "p-44", "report_period_ms": 4000}
    with Store(ward["db"], readonly=True) as store:
        rows = [e for e in audit.entries(store, action="config.set") if e.actor == "dana"]
        assert [e.subject for e in rows] == ["bed-6", "bed-9"]


def test_every_command_in_the_fleet_guide_parses() -> None:
    """docs/fleet.md's command lines are real: the medge parser takes each one."""
    import re
    import shlex

    from host.cli import build_parser

    text = (Path(__file__).resolve().parents[1] / "docs" / "fleet.md").read_text()
    lines = [line.split("#", 1)[0].strip()
             for block in re.findall(r"```sh\n(.*?)```", text, re.S)
             for line in block.splitlines() if line.startswith("medge ")]
    assert len(lines) >= 12
    parser = build_parser()
    for line in lines:
        args = parser.parse_args(shlex.split(line)[1:])
        assert callable(args.func), line


def test_a_running_demo_can_be_commanded_from_another_terminal(tmp_path) -> None:
    """`medge demo` prints the operator's command line; it works while the demo runs,
    and the password is in the 0600 file only, never in the demo's output."""
    import subprocess
    import sys

    medge_bin = str(Path(sys.executable).with_name("medge"))
    db = tmp_path / "d.db"
    demo = subprocess.Popen([medge_bin, "demo", "--devices", "2", "--duration", "20",
                             "--db", str(db)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        hint = None
        while hint is None and time.monotonic() < deadline:
            hint = next((x for x in list(lines) if "from another terminal: " in x), None)
            time.sleep(0.1)
        assert hint is not None, lines
        argv = hint.split("from another terminal: ", 1)[1].split()
        assert argv[:4] == ["medge", "fleet", "cmd", "sim-0001"]
        for _ in range(50):  # the device connects on its first step
            run = medge(*argv[1:], "--json", cwd=tmp_path)
            if run.returncode == 0:
                break
            time.sleep(0.2)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["data"]["fw_version"] == "0.1.0"
        assert demo.wait(120) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
    reader.join(10)
    pw_file = tmp_path / "d.db.d" / "operator.pw"
    assert pw_file.stat().st_mode & 0o777 == 0o600
    assert pw_file.read_text().strip() not in "".join(lines)
