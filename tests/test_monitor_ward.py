"""``medge monitor`` as a nurse reads it (issue 12 item 7, issue 14 item 7): vitals per
device from a real SQLite store filled through Store.add, withheld values with their
reason, stale and offline devices not shown as current, NEWS2 with risk and open
alerts, the banner when data stops arriving, the textual table (Pilot) scrolling
through hundreds of devices, the plain and --json paths."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from firmware.net import protocol
from host.services import patients
from host.services.advice import live
from host.services.advice.news2 import Inputs
from host.services.monitor import plain_lines, run_monitor
from host.services.monitor_data import Reader, banner
from host.services.store import Store, now_ms

MEDGE = str(Path(sys.executable).with_name("medge"))


def birth(device: str, ts: int, boot: int = 1) -> dict:
    return protocol.birth(device, 0, ts, {"fw_version": "1.0", "model_version": "m",
                                          "patient_id": None, "sample_rate_hz": 250,
                                          "boot_id": boot})


def vitals(device: str, seq: int, ts: int, hr: int | None = 72, **extra: object) -> dict:
    doc = protocol.vitals(device, seq, ts, 1000, hr, 1,
                          protocol.QUALITY_GOOD if hr is not None else "unreliable")
    doc.update(extra)
    return doc


FULL = {"pulse_bpm": 71, "spo2_pct": 97, "resp_rate_per_min": 16, "temp_centi_c": 3712,
        "nibp_systolic_mmhg": 121, "nibp_diastolic_mmhg": 79, "nibp_map_mmhg": 93,
        "nibp_age_s": 120}


def fill(db: Path, now: int) -> None:
    """bed-1 current with every vital; bed-2 SpO2 withheld (low perfusion), ECG lead
    off; bed-3 sent its shutdown a minute ago; bed-4 silent (stale) for 5 min."""
    with Store(db) as s:
        for dev in ("bed-1", "bed-2", "bed-3", "bed-4"):
            s.add("status", dev, birth(dev, now - 600_000), now - 600_000)
        for seq in range(1, 4):
            t = now - (4 - seq) * 1000
            s.add("vitals", "bed-1", vitals("bed-1", seq, t, 72, **FULL), t)
            s.add("vitals", "bed-2", vitals(
                "bed-2", seq, t, None, signal="lead_off", pulse_bpm=88, spo2_pct=None,
                withheld={"spo2_pct": "low_perfusion"}), t)
        s.add("vitals", "bed-3", vitals("bed-3", 1, now - 70_000, 64, **FULL), now - 70_000)
        s.add("status", "bed-3", protocol.offline("bed-3", now - 60_000,
                                                   protocol.OFFLINE_SHUTDOWN, boot_id=1),
              now - 60_000)
        s.add("vitals", "bed-4", vitals("bed-4", 1, now - 300_000, 58), now - 300_000)
        patients.add_patient(s, "p-1", patients.make_profile(age=70, sex="male"),
                             actor="nurse", ts_ms=now - 500_000)
        patients.assign(s, "p-1", "bed-1", actor="nurse", ts_ms=now - 500_000)
        patients.add_observations(s, "p-1", Inputs(consciousness="C", oxygen=False,
                                                   systolic=124),
                                  ts_ms=now - 100_000, entered_by="nurse",
                                  entered_ms=now - 100_000)


@pytest.fixture()
def ward(tmp_path: Path) -> tuple[Path, int]:
    now = now_ms()
    db = tmp_path / "ward.db"
    fill(db, now)
    return db, now


def test_vitals_withheld_stale_news2(ward: tuple[Path, int]) -> None:
    db, now = ward
    snap = Reader(db, stale_after_s=30).read(now)
    beds = {b.device.device_id: b for b in snap.beds}
    b1, b2, b3, b4 = (beds[f"bed-{i}"] for i in range(1, 5))
    assert b1.current and b1.values == {"hr_bpm": 72, "spo2_pct": 97, "pulse_bpm": 71,
                                        "resp_rate_per_min": 16, "temp_centi_c": 3712}
    assert b1.nibp == (121, 79, 93, now - 1000 - 120_000)
    assert b2.current and b2.values["hr_bpm"] is None and b2.values["pulse_bpm"] == 88
    assert b2.withheld["hr_bpm"] == "lead_off" and b2.withheld["spo2_pct"] == "low_perfusion"
    assert b2.withheld["temp_centi_c"] == "absent"
    assert b3.device.state == "offline" and not b3.current
    assert b4.device.state == "stale" and not b4.current
    # NEWS2 for the patient on bed-1: new confusion scores 3 (a single-parameter 3)
    assert b1.patient_id == "p-1" and b1.news2 is not None
    assert b1.news2["score"] >= 3 and b1.news2["risk"] in ("low-medium", "medium", "high")
    assert b2.news2 is None and b2.patient_id is None
    lines = plain_lines(snap)
    text = "\n".join(lines)
    assert "bed-1 p-1 hr=72 spo2=97 pulse=71 rr=16 temp=37.1 nibp=121/79@(93)" in text
    assert "hr=--lead_off spo2=--low_perfusion pulse=88" in text
    assert "bed-3 - hr=~64" in text and "bed-4 - hr=~58" in text  # never as current
    assert " news2=" in next(x for x in lines if "bed-1" in x)
    assert snap.banner is None


def test_news2_within_a_time_budget_per_read(ward: tuple[Path, int]) -> None:
    """A large ward: each read assesses what fits its budget (at least one patient), the
    others are shown pending until a later read, then kept for news2_period_s."""
    db, now = ward
    with Store(db) as s:
        for pid, dev in (("p-2", "bed-2"), ("p-3", "bed-4")):
            patients.add_patient(s, pid, patients.make_profile(age=50, sex="female"),
                                 actor="nurse", ts_ms=now - 400_000)
            patients.assign(s, pid, dev, actor="nurse", ts_ms=now - 400_000)
    reader = Reader(db, news2_budget_s=0.0, news2_period_s=3600)
    pending = []
    for _ in range(3):
        snap = reader.read(now)
        pending.append(sorted(b.patient_id for b in snap.beds if b.pending))
    assert pending == [["p-2", "p-3"], ["p-3"], []]
    assert "news2=..." in "\n".join(plain_lines(Reader(db, news2_budget_s=0.0).read(now)))
    assert all(b.news2 is not None for b in snap.beds if b.patient_id)
    assert [b.news2["assessed_ms"] for b in snap.beds if b.patient_id] == [now] * 3
    later = reader.read(now + 120_000)  # kept (period 1 h): its age is shown
    assert ":(2m)" in next(x for x in plain_lines(later) if " p-1 " in x)


def test_open_alerts_shown_from_the_store(tmp_path: Path) -> None:
    now = now_ms()
    db = tmp_path / "a.db"
    with Store(db) as s:
        s.add("status", "bed-1", birth("bed-1", now - 900_000), now - 900_000)
        patients.add_patient(s, "p-9", patients.make_profile(age=60, sex="female"),
                             actor="nurse", ts_ms=now - 900_000)
        patients.assign(s, "p-9", "bed-1", actor="nurse", ts_ms=now - 900_000)
        for i in range(160):  # 13 min at HR 140 with SpO2 89 and RR 26
            t = now - 800_000 + i * 5000
            s.add("vitals", "bed-1", vitals("bed-1", i + 1, t, 140, pulse_bpm=140,
                                            spo2_pct=89, resp_rate_per_min=26,
                                            temp_centi_c=3850), t)
        live.run_round(s, now)  # the advice service records the episode
    snap = Reader(db).read(now)
    [bed] = snap.beds
    assert bed.news2["risk"] in ("medium", "high")
    assert bed.alerts and all(a["state"] in ("open", "acknowledged") for a in bed.alerts)
    assert "alerts=" in plain_lines(snap)[1] and "alerts=-" not in plain_lines(snap)[1]


def test_banner_when_the_store_stops_advancing(ward: tuple[Path, int]) -> None:
    db, now = ward
    late = now + 60_000
    snap = Reader(db, news2_period_s=None).read(late)
    assert snap.banner is not None and "no data stored for 61 s" in snap.banner
    assert "monitor: WARNING no data stored" in "\n".join(plain_lines(snap))
    # an ingest worker's health: silent, or not connected to the broker
    assert "silent for 30 s" in banner(now, 1, [{"client_id": "i1", "updated_ms": now - 30_000}],
                                       now)
    assert "not connected" in banner(now, 1, [{"client_id": "i1", "updated_ms": now,
                                               "connected": False}], now)
    assert banner(now, 1, [{"client_id": "i1", "updated_ms": now, "connected": True,
                            "storage_failing_since_ms": None}], now) is None


def test_health_files_are_read(ward: tuple[Path, int]) -> None:
    from host.services.ingest import stats_dir

    db, now = ward
    folder = stats_dir(db)
    folder.mkdir(parents=True)
    (folder / "ing.json").write_text(json.dumps({"client_id": "ing", "updated_ms": now,
                                                 "connected": False}))
    snap = Reader(db, news2_period_s=None).read(now)
    assert snap.banner == "ingest ing not connected to the broker"


async def rows_shown(app, pilot, n: int):
    """The app's DataTable once its first read (a worker thread) has put n rows up."""
    from textual.widgets import DataTable

    table = app.query_one(DataTable)
    for _ in range(50):
        if table.row_count == n:
            break
        await pilot.pause(0.1)
    return table


def test_pilot_scrolls_hundreds_of_devices(tmp_path: Path) -> None:
    from textual.widgets import Static

    from host.services.monitor_tui import MonitorApp

    now = now_ms()
    db = tmp_path / "big.db"
    with Store(db) as s:
        for i in range(300):
            dev = f"bed-{i:03d}"
            s.add("status", dev, birth(dev, now - 5000), now - 5000)
            s.add("vitals", dev, vitals(dev, 1, now - 1000, 60 + i % 50), now - 1000)
        s.add("vitals", "bed-007", vitals("bed-007", 2, now - 500, None, signal="lead_off"),
              now - 500)

    async def drive() -> None:
        app = MonitorApp(Reader(db, news2_period_s=None), refresh_s=30)
        async with app.run_test(size=(160, 40)) as pilot:
            table = await rows_shown(app, pilot, 300)
            assert table.row_count == 300
            assert str(table.get_cell("bed-007", table.ordered_columns[2].key)) == "--lead_off"
            assert str(table.get_cell("bed-012", table.ordered_columns[2].key)) == "72"
            await pilot.press("ctrl+end")
            await pilot.pause(0.1)
            assert table.cursor_row == 299 and table.scroll_y > 0
            assert "300 devices, 300 online" in str(app.query_one("#status", Static).render())
            app.show(app.reader.read(now + 60_000))  # a refresh: the cursor stays put
            await pilot.pause()
            assert table.cursor_row == 299
            assert str(table.get_cell("bed-299", table.ordered_columns[2].key)) == "~109"
            assert "300 devices, 0 online" in str(app.query_one("#status", Static).render())
            await pilot.press("q")

    asyncio.run(drive())


def test_pilot_banner_and_stale_marks(ward: tuple[Path, int]) -> None:
    from textual.widgets import Static

    from host.services.monitor_tui import MonitorApp

    db, now = ward

    class Late(Reader):
        def read(self, now_: int | None = None):  # type: ignore[override]
            return super().read(now + 60_000)

    async def drive() -> None:
        app = MonitorApp(Late(db, news2_period_s=None), refresh_s=5)
        async with app.run_test(size=(160, 20)) as pilot:
            table = await rows_shown(app, pilot, 4)
            b = app.query_one("#banner", Static)
            assert b.has_class("shown") and "no data stored" in str(b.render())
            hr = table.ordered_columns[2].key
            assert str(table.get_cell("bed-1", hr)) == "~72"  # stale now: not current
            assert str(table.get_cell("bed-3", hr)) == "~64"
            await pilot.press("ctrl+c")  # stops it, as it stops the plain monitor
            await pilot.pause()
            assert not app.is_running

    asyncio.run(drive())


def test_plain_path_stops_with_its_thread(ward: tuple[Path, int]) -> None:
    import io

    db, _ = ward
    out = io.StringIO()
    runner = threading.Thread(target=lambda: threading.Event().wait(0.5))
    runner.start()
    run_monitor(db, until=runner, out=out, plain_period_s=5.0)
    text = out.getvalue()
    assert text.startswith("monitor: 4 devices, 2 online") and "bed-2" in text


def test_monitor_json_adds_the_ward(ward: tuple[Path, int], tmp_path: Path) -> None:
    db, _ = ward
    env = {k: v for k, v in os.environ.items() if k != "MEDGE_DB"}
    with subprocess.Popen([MEDGE, "monitor", "--json", "--refresh", "0.2", "--db", str(db)],
                          cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True) as proc:
        try:
            doc = json.loads(proc.stdout.readline())
        finally:
            proc.terminate()
    assert {d["id"] for d in doc["devices"]} == {"bed-1", "bed-2", "bed-3", "bed-4"}
    assert "hr_bpm" in doc["devices"][0]  # the fleet list's fields stay
    ward_ = {w["device_id"]: w for w in doc["ward"]}
    assert ward_["bed-1"]["vitals"]["spo2_pct"] == 97 and ward_["bed-1"]["current"]
    assert ward_["bed-1"]["nibp"]["systolic_mmhg"] == 121
    assert ward_["bed-1"]["news2"]["score"] >= 3
    assert ward_["bed-2"]["withheld"]["spo2_pct"] == "low_perfusion"
    assert ward_["bed-3"]["current"] is False
