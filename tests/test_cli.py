"""The ``medge`` command line, invoked as a user would, against temporary SQLite files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from firmware.net import protocol
from host.services.store import Store

MEDGE = str(Path(sys.executable).with_name("medge"))
T0 = 1_764_000_000_000


def medge(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MEDGE_DB"}
    return subprocess.run([MEDGE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_fleet_list_json(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    now = int(time.time() * 1000)
    with Store(db) as store:
        for i, device_id in enumerate(("bed-1", "bed-2", "bed-3")):
            store.add("status", device_id, protocol.birth(device_id, 0, T0, {
                "fw_version": "1.2.3", "model_version": f"beat-int8-{i}",
                "patient_id": f"p{i}", "sample_rate_hz": 360, "boot_id": 1}),
                now if i < 2 else T0 + i)  # bed-3 last heard of on 2025-11-24: stale
        store.add("status", "bed-2",
                  protocol.offline("bed-2", T0, protocol.OFFLINE_LOST, boot_id=1), now + 10)
    result = medge("fleet", "list", "--json", "--db", str(db), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [(d["id"], d["state"], d["fw_version"], d["model_version"]) for d in doc] == [
        ("bed-1", "online", "1.2.3", "beat-int8-0"),
        ("bed-2", "offline", "1.2.3", "beat-int8-1"),
        ("bed-3", "stale", "1.2.3", "beat-int8-2"),
    ]
    assert doc[1]["last_seen_ms"] == now  # the will says gone: last seen is its birth
    assert doc[2]["last_seen"].startswith("2025-11-24T")
    far = medge("fleet", "list", "--json", "--stale-after", "1e12", "--db", str(db),
                cwd=tmp_path)
    assert json.loads(far.stdout)[2]["state"] == "online"

    table = medge("fleet", "list", "--db", str(db), cwd=tmp_path)
    assert table.returncode == 0
    assert "bed-1" in table.stdout and "offline" in table.stdout


def test_fleet_list_without_a_store_is_a_clear_error(tmp_path: Path) -> None:
    result = medge("fleet", "list", "--json", "--db", str(tmp_path / "none.db"), cwd=tmp_path)
    assert result.returncode == 2
    assert "no medge store" in result.stderr


def test_bad_arguments_exit_2_in_one_line(tmp_path: Path) -> None:
    result = medge("demo", "--devices", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == ("medge demo: --devices: expected a whole number from 1 to 10000, "
                             "got '0' (see: medge demo --help)\n")


def test_monitor_json_is_the_fleet_list(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    with Store(db) as store:
        for device_id in ("bed-1", "bed-2"):
            store.add("status", device_id, protocol.birth(device_id, 0, T0, {
                "fw_version": "1.2.3", "model_version": "m", "patient_id": "p",
                "sample_rate_hz": 250, "boot_id": 1}), T0)
    env = {k: v for k, v in os.environ.items() if k != "MEDGE_DB"}
    with subprocess.Popen([MEDGE, "monitor", "--json", "--refresh", "0.2", "--db", str(db)],
                          cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True) as proc:
        try:
            first = json.loads(proc.stdout.readline())
        finally:
            proc.terminate()
    listed = json.loads(medge("fleet", "list", "--json", "--db", str(db), cwd=tmp_path).stdout)
    assert first["devices"] == listed
    assert isinstance(first["ts_ms"], int)


def test_demo_json_summary(tmp_path: Path) -> None:
    result = medge("demo", "--devices", "2", "--duration", "4", "--speed", "4", "--json",
                   "--db", str(tmp_path / "j.db"), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)  # the whole of stdout: no monitor lines with --json
    assert (doc["ok"], doc["failures"], doc["store"]) == (True, [], str(tmp_path / "j.db"))
    assert [d["device_id"] for d in doc["devices"]] == ["sim-0001", "sim-0002"]
    for d in doc["devices"]:
        assert d["stored"] == d["last_seq"] - d["first_seq"] + 1 and d["missing"] == 0
        assert d["vitals"] == 4
    assert doc["ingest"]["rejected"] == {} and doc["ingest"]["errors"] == 0


def test_demo_five_devices_twenty_seconds(tmp_path: Path) -> None:
    """Contract 5 and the acceptance check of the end-to-end issue, as a user runs it."""
    result = medge("demo", "--devices", "5", "--duration", "20", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo: OK, nothing lost" in result.stdout
    assert "monitor: 5 devices" in result.stdout  # plain monitor lines: stdout is a pipe

    db = tmp_path / "var" / "medge.db"  # the default store, relative to the working dir
    with Store(db, readonly=True) as store:
        devices = [d.device_id for d in store.devices()]
        assert len(devices) == 5
        for device_id in devices:
            seqs = store.seqs(device_id)
            assert seqs == list(range(seqs[0], seqs[-1] + 1)), device_id
            assert store.vitals_count(device_id) == 20

    listed = medge("fleet", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0
    assert sorted(d["id"] for d in json.loads(listed.stdout)) == devices
    # Every device's virtual patient is registered and assigned: patient show, advice
    # (the device's SpO2, pulse and temperature) and the FHIR subject work on this store.
    shown = medge("patient", "show", "patient-0003", "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["profile"]["scenario"] == "stable"
    assert [a["device_id"] for a in doc["assignments"]] == ["sim-0003"]
    advice = medge("advice", "patient-0003", "--json", "--no-publish", cwd=tmp_path)
    assert advice.returncode == 0, advice.stderr
    values = json.loads(advice.stdout)["news2"]["values"]
    assert 90 <= values["spo2"] <= 100 and 40 <= values["pulse"] <= 140, values
    assert 35 <= values["temperature"] <= 39, values
    fhir = tmp_path / "fhir.json"
    exported = medge("export", "--format", "fhir", "--device", "sim-0003", "--out", str(fhir),
                     cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert '"reference": "Patient/patient-0003"' in fhir.read_text()
    # The broker's data and the devices' state belong to this store, not to its folder.
    assert (tmp_path / "var" / "medge.db.d" / "broker").is_dir()
    assert len(list((tmp_path / "var" / "medge.db.d" / "devices").glob("sim-*.json"))) == 5
    assert not (tmp_path / "var" / "devices").exists()


def test_demo_with_a_scenario_sensor_and_a_partition_loses_nothing(tmp_path: Path) -> None:
    result = medge("demo", "--devices", "3", "--duration", "30", "--speed", "5",
                   "--scenario", "pvc_burden", "--sensor", "ads1292",
                   "--faults", "partition:#1@5s+8s", cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo: OK, nothing lost" in result.stdout
    with Store(tmp_path / "var" / "medge.db", readonly=True) as store:
        for d in store.devices():
            seqs = store.seqs(d.device_id)
            assert seqs == list(range(seqs[0], seqs[-1] + 1)), d.device_id
            assert store.vitals_count(d.device_id) == 30


def test_demo_with_a_bad_fault_spec_names_the_problem(tmp_path: Path) -> None:
    result = medge("demo", "--devices", "1", "--duration", "5", "--faults", "meteor@1s",
                   cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "medge demo:" in result.stderr and "meteor" in result.stderr
