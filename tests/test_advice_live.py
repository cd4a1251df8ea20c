"""Advice on live data through a real SQLite store and the CLI: device vitals
stored by the store's ingest write path, manual observations, assignments (a
reading belongs to the patient assigned at its time), alerts once per episode,
acknowledged and audited."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from host.cli import main
from host.services import audit, patients
from host.services.advice import live
from host.services.advice.news2 import Inputs
from host.services.store import Accept, Store

T0 = 1_764_000_000_000


def vitals(device: str, seq: int, ts_ms: int, hr: int | None) -> dict:
    return {"v": 1, "type": "vitals", "device_id": device, "seq": seq, "ts_ms": ts_ms,
            "window_ms": 1000, "hr_bpm": hr, "beats": 1,
            "quality": "good" if hr is not None else "unreliable", "signal": "good"}


@pytest.fixture()
def ward(tmp_path: Path) -> Path:
    db = tmp_path / "w.db"
    with Store(db) as s:
        for pid in ("p-1", "p-2"):
            patients.add_patient(s, pid, patients.make_profile(age=78, sex="female",
                                                               hypertension=True),
                                 actor="nurse", ts_ms=T0)
        patients.assign(s, "p-1", "bed-1", actor="nurse", ts_ms=T0)
        # 20 min at HR 72 for p-1, then bed-1 moves to p-2 and reads 135
        seq = 0
        for sec in range(0, 1200, 5):
            s.add("vitals", "bed-1", vitals("bed-1", seq, T0 + sec * 1000, 72), T0 + sec * 1000)
            seq += 1
        patients.unassign(s, "bed-1", actor="nurse", ts_ms=T0 + 1_200_000)
        patients.assign(s, "p-2", "bed-1", actor="nurse", ts_ms=T0 + 1_200_000)
        for sec in range(1200, 1800, 5):
            s.add("vitals", "bed-1", vitals("bed-1", seq, T0 + sec * 1000, 135),
                  T0 + sec * 1000)
            seq += 1
        for pid, confusion in (("p-1", "A"), ("p-2", "C")):
            patients.add_observations(s, pid, Inputs(consciousness=confusion, oxygen=False,
                                                     systolic=124, resp_rate=16, spo2=97,
                                                     temperature=36.8),
                                      ts_ms=T0 + 1_000_000, entered_by="nurse",
                                      entered_ms=T0 + 1_000_000)
    return db


def test_readings_belong_to_the_patient_assigned_at_their_time(ward: Path) -> None:
    with Store(ward, readonly=True) as s:
        a1, _, _ = live.assess(s, "p-1", T0 + 1_190_000)
        a2, _, _ = live.assess(s, "p-2", T0 + 1_790_000)
        late, _, _ = live.assess(s, "p-1", T0 + 1_790_000)
    assert a1.news2["values"]["pulse"] == 72 and a1.news2["score"] == 0
    assert a2.news2["values"]["pulse"] == 135
    assert a2.news2["sub_scores"]["pulse"] == 3 and a2.news2["sub_scores"]["consciousness"] == 3
    assert late.news2["values"]["pulse"] is None  # p-1's device left: stale = missing
    assert "pulse" in late.news2["missing"] and late.news2["lower_bound"]


def test_withheld_values_are_missing() -> None:
    assert live.vitals_from_payload(vitals("d", 0, 0, None))["pulse"] is None
    doc = vitals("d", 0, 0, 80) | {"signal": "lead_off"}
    assert live.vitals_from_payload(doc)["pulse"] is None
    doc = vitals("d", 0, 0, 80) | {"pulse_bpm": 78, "spo2_pct": None, "resp_rate_per_min": 18,
                                   "temp_centi_c": 3721, "withheld": {"spo2_pct": "saturated"}}
    assert live.vitals_from_payload(doc) == {"pulse": 78, "resp_rate": 18, "spo2": None,
                                             "temperature": 37.21}


def test_alert_recorded_once_per_episode_then_acked_and_audited(
        ward: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(ward)
    for at in ("2025-11-24T16:29:00Z", "2025-11-24T16:29:30Z", "2025-11-24T16:29:50Z"):
        assert main(["advice", "p-2", "--at", at, "--record", "--json", "--db", db]) == 0
        doc = json.loads(capsys.readouterr().out)
    assert doc["news2"]["score"] >= 6 and doc["news2"]["risk"] in ("medium", "high")
    [alert] = [a for a in doc["open_alerts"] if a["kind"] == "news2"]
    assert main(["alerts", "list", "--patient", "p-2", "--json", "--db", db]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["kind"] for r in rows].count("news2") == 1  # one alert for the episode
    assert main(["alerts", "ack", alert["alert_uid"], "--actor", "nurse-kim", "--json",
                 "--db", db]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "acknowledged"
    with Store(ward, readonly=True) as s:
        [e] = audit.entries(s, action="alert.ack")
        assert (e.actor, e.subject) == ("nurse-kim", "p-2")
    assert main(["advice", "p-1", "--at", "2025-11-24T16:19:00Z", "--db", db]) == 0
    out = capsys.readouterr().out
    assert out.startswith("patient p-1\nNEWS2 0: risk low")


@pytest.mark.parametrize("argv,needle", [
    (["advice", "nobody"], "no patient 'nobody'"),
    (["alerts", "ack", "nope"], "alert: no alert 'nope'"),
    (["alerts", "list", "--patient", "nobody"], "no patient"),
])
def test_bad_input_exit_2(ward: Path, argv: list[str], needle: str,
                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--db", str(ward)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


@contextmanager
def bedside(data_dir: Path, device: str) -> Iterator[tuple[Any, list[dict], Callable]]:
    """A real mosquitto, a subscriber on ``device``'s alert topic (the messages it got,
    schema-checked) and an AlertPublisher; yields (publisher, got, wait(n))."""
    import jsonschema
    import paho.mqtt.client as mqtt

    from host.broker.launch import Broker
    from host.services.advice.publish import AlertPublisher
    from host.services.messages import schema_path

    schema = json.loads(Path(schema_path("alert")).read_text())
    got: list[dict] = []
    ready = threading.Event()

    def wait(n: int) -> list[dict]:
        for _ in range(200):
            if len(got) >= n:
                break
            threading.Event().wait(0.05)
        for m in got:
            jsonschema.validate(m, schema)
        return got

    b = Broker("mosquitto", data_dir=data_dir)
    b.start()
    try:
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bedside-{device}")
        sub.on_connect = lambda c, *_: c.subscribe(f"medge/v1/dev/{device}/alert", qos=1)
        sub.on_subscribe = lambda *_: ready.set()
        sub.on_message = lambda _c, _u, m: got.append(json.loads(m.payload))
        sub.connect(b.host, b.port)
        sub.loop_start()
        assert ready.wait(10)
        pub = AlertPublisher(b.host, b.port)
        try:
            yield pub, got, wait
        finally:
            pub.close()
            sub.loop_stop()
            sub.disconnect()
    finally:
        b.stop()


def test_watch_publishes_alerts_to_the_device_topic_on_mosquitto(ward: Path) -> None:
    """medge advice --watch against a real mosquitto: the p-2 alerts reach
    medge/v1/dev/bed-1/alert, schema-valid, once each (a second pass sends nothing new)."""
    with bedside(ward.parent / "broker", "bed-1") as (pub, _, wait), Store(ward) as s:
        first = live.run_round(s, T0 + 1_790_000, pub.publish)
        second = live.run_round(s, T0 + 1_795_000, pub.publish)
        got = wait(first["published"])
    assert first["published"] >= 1 and second["published"] == 0
    assert first["patients"]["p-2"]["open_alerts"]
    assert len(got) == first["published"]
    for m in got:
        assert (m["device_id"], m["patient_id"], m["state"]) == ("bed-1", "p-2", "open")
    assert "news2" in {m["kind"] for m in got}


def test_watch_cli_one_pass_without_a_broker(ward: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["advice", "--watch", "--no-publish", "--duration", "0.01", "--json",
                 "--db", str(ward)]) == 0
    doc = json.loads(capsys.readouterr().out.splitlines()[0])
    # today, long after the fixture's readings: everything stale, so a lower bound
    assert doc["patients"]["p-2"]["lower_bound"] is True and doc["published"] == 0
    assert main(["advice", "--watch", "p-2", "--db", str(ward)]) == 2


def test_the_clinical_path_on_postgresql(postgres: str, tmp_path: Path) -> None:
    """Patients, assignments, observations, override, advice with alert episodes and
    their acknowledgement on a real PostgreSQL (the same SQL as SQLite)."""
    from test_store import drop_pg_database, fresh_pg_database

    from host.services.advice.records import ack, list_alerts

    url = fresh_pg_database(postgres)
    try:
        with Store(url) as s:
            patients.add_patient(s, "p-2", patients.make_profile(age=70, sex="male"),
                                 actor="nurse", ts_ms=T0)
            patients.assign(s, "p-2", "bed-1", actor="nurse", ts_ms=T0)
            with pytest.raises(patients.DeviceBusy):
                patients.add_patient(s, "p-3", patients.make_profile(age=60, sex="male"),
                                     actor="nurse", ts_ms=T0)
                patients.assign(s, "p-3", "bed-1", actor="nurse", ts_ms=T0 + 1)
            for seq, sec in enumerate(range(0, 600, 5)):
                s.add("vitals", "bed-1", vitals("bed-1", seq, T0 + sec * 1000, 135),
                      T0 + sec * 1000)
            patients.add_observations(s, "p-2", Inputs(consciousness="C", oxygen=False,
                                                       systolic=124, resp_rate=16, spo2=97,
                                                       temperature=36.8),
                                      ts_ms=T0, entered_by="n", entered_ms=T0, uid="u")
            patients.set_target(s, "p-2", "heart_rate", (50, 140), actor="dr", reason="r",
                                ts_ms=T0)
            for now in (T0 + 590_000, T0 + 595_000):
                a, events, open_kinds = live.assess(s, "p-2", now)
                live.record_events(s, "p-2", events, open_kinds=open_kinds, now_ms=now)
            assert a.news2["score"] == 6 and a.bands["heart_rate"]["source"] == "override"
            [alert] = [x for x in list_alerts(s, patient_id="p-2") if x["kind"] == "news2"]
            assert ack(s, alert["alert_uid"], by="nurse-kim", ts_ms=T0 + 600_000)["state"] \
                == "acknowledged"
            # the advice service's pass with kept engines: digest and ack marks on PostgreSQL
            cache, sent = live.LiveMonitors(), []
            for now in (T0 + 605_000, T0 + 615_000):
                doc = live.run_round(s, now, lambda _d, x: sent.append(x), cache)
            assert doc["patients"]["p-2"]["news2"] == 6 and cache.increments == 1
            assert [x["event"] for x in sent] == ["ack"]
            assert audit.verify(s).ok
    finally:
        drop_pg_database(postgres, url)


def test_device_rhythm_events_reach_the_advice(ward: Path) -> None:
    """The device's event messages (docs/protocol.md: AFIB onset, a sustained VT, a
    BURDEN report) as the store keeps them."""
    def event(seq: int, ts: int, kind: str, phase: str, start: int, end, evidence) -> dict:
        return {"v": 1, "type": "event", "device_id": "bed-1", "seq": seq, "ts_ms": ts,
                "kind": kind, "phase": phase, "start_ms": start, "end_ms": end,
                "evidence": evidence}

    t = T0 + 1_700_000
    with Store(ward) as s:
        for doc in (event(1000, t, "AFIB", "onset", t - 30_000, None, {"rate_bpm": 135}),
                    event(1001, t + 1000, "BURDEN", "report", t - 3_600_000, t,
                          {"pvc_permille": 123, "period_ms": 3_600_000}),
                    event(1002, t + 2000, "VT", "onset", t - 5000, None,
                          {"rate_bpm": 180, "beats": 15}),
                    event(1003, t + 60_000, "VT", "end", t - 5000, t + 55_000,
                          {"rate_bpm": 180, "beats": 180, "sustained": 1})):
            s.add("event", "bed-1", doc, doc["ts_ms"])
    with Store(ward, readonly=True) as s:
        a, _, _ = live.assess(s, "p-2", t + 70_000)
    kinds = {c.kind: c for c in a.conditions}
    assert kinds["af"].numbers["cha2ds2_vasc"] == 4 and "rate control" in kinds["af"].text
    assert kinds["vt"].severity == "emergency"
    assert kinds["pvc_burden"].numbers["pvc_burden_percent"] == 12.3
    assert kinds["pvc_burden"].severity == "low"
    assert live.event_from_payload('{"kind": "SIGNAL", "evidence": {}}') is None
    assert live.event_from_payload("not json") is None


def _on_bed_9(s: Store, consciousness: str) -> None:
    """p-9 on bed-9 from T0, consciousness and air observed at T0."""
    patients.add_patient(s, "p-9", patients.make_profile(age=70, sex="male"),
                         actor="nurse", ts_ms=T0)
    patients.assign(s, "p-9", "bed-9", actor="nurse", ts_ms=T0)
    patients.add_observations(s, "p-9", Inputs(consciousness=consciousness, oxygen=False),
                              ts_ms=T0, entered_by="nurse", entered_ms=T0)


def _busy_bed(db: Path, minutes: int) -> None:
    """p-9 on bed-9: pulse 135 (3 points) and new confusion (3): NEWS2 6, medium."""
    with Store(db) as s:
        _on_bed_9(s, "C")
        s.write_batch([Accept("vitals", "bed-9", vitals("bed-9", i, T0 + i * 5000, 135),
                              T0 + i * 5000) for i in range(minutes * 12)])


def test_reminders_reach_the_bedside_until_acknowledged(tmp_path: Path) -> None:
    """The advice service on a real mosquitto, in simulated time: a medium alert is
    published when it opens, again as a reminder once the reminder interval (30 min)
    has passed unacknowledged, then its acknowledgement; no reminder after that."""
    from host.services.advice.alerts import Policy
    from host.services.advice.records import ack, list_alerts

    db = tmp_path / "r.db"
    _busy_bed(db, 80)
    cache = live.LiveMonitors()
    passes: dict[int, dict] = {}

    def at(minute: float) -> int:
        return T0 + int(minute * 60_000)

    with bedside(tmp_path / "broker", "bed-9") as (pub, _, wait), Store(db) as s:
        for minute in (5, 20, 30, 36, 40):
            passes[minute] = live.run_round(s, at(minute), pub.publish, cache)
        [alert] = [x for x in list_alerts(s, patient_id="p-9") if x["kind"] == "news2"]
        ack(s, alert["alert_uid"], by="nurse-kim", ts_ms=at(41))
        for minute in (42, 60, 75):
            passes[minute] = live.run_round(s, at(minute), pub.publish, cache)
        total = sum(p["published"] for p in passes.values())
        got = wait(total)
    remind_s = Policy().remind_s
    assert len(got) == total
    news2 = [m for m in got if m["kind"] == "news2"]
    assert [(m["event"], m["state"]) for m in news2] == [
        ("open", "open"), ("remind", "open"), ("ack", "acknowledged")]
    opened, reminder, acked = news2
    assert reminder["alert_uid"] == opened["alert_uid"] == acked["alert_uid"]
    # the reminder comes once the interval has passed (simulated time), not before
    assert reminder["event_ms"] - opened["ts_ms"] >= remind_s * 1000
    assert reminder["event_ms"] - opened["ts_ms"] < remind_s * 1000 + 60_000
    assert passes[30]["reminders"] == 0 and passes[36]["reminders"] == 1
    assert passes[40]["published"] == 0  # the same reminder is not sent twice
    assert sum(passes[m]["reminders"] for m in (42, 60, 75)) == 0  # acknowledged
    # one replay at the first pass, increments after, and the periodic rebuild once
    # the first replay's start is HISTORY_S + REBUILD_S old (the pass at 75 min)
    assert (cache.rebuilds, cache.increments) == (2, 6)


def test_kept_engines_answer_as_the_replay_and_rebuild_on_late_readings(
        tmp_path: Path) -> None:
    """live.LiveMonitors: each pass feeds only what is new, and answers what a full
    replay answers; a reading stored late inside the span already fed, or a changed
    profile, makes the next pass replay again."""
    db = tmp_path / "k.db"
    with Store(db) as s:
        _on_bed_9(s, "A")
        # pulse 80 for an hour, then 135: NEWS2 0 -> 3 (low-medium, 3 in one parameter)
        s.write_batch([Accept("vitals", "bed-9", vitals("bed-9", i, T0 + i * 5000,
                                                         80 if i < 720 else 135),
                              T0 + i * 5000) for i in range(0, 1440) if i % 97 != 5])
        cache = live.LiveMonitors()
        for minute in range(30, 121, 10):
            now = T0 + minute * 60_000
            kept, _, kinds = live.assess(s, "p-9", now, cache)
            fresh, _, fresh_kinds = live.assess(s, "p-9", now)
            assert (kept.news2, kinds) == (fresh.news2, fresh_kinds), minute
        # replays: the first pass, and at 90 min, once the first replay's start is
        # HISTORY_S + REBUILD_S old; every other pass an increment
        assert (cache.rebuilds, cache.increments) == (2, 8)
        assert "news2" in kinds and kept.news2["sub_scores"]["pulse"] == 3
        # readings that were missing (i % 97 == 5) arrive late: the next pass replays
        s.write_batch([Accept("vitals", "bed-9", vitals("bed-9", 5, T0 + 5 * 5000, 80),
                              T0 + 7_300_000)])
        live.assess(s, "p-9", T0 + 121 * 60_000, cache)
        assert cache.rebuilds == 3
        live.assess(s, "p-9", T0 + 122 * 60_000, cache)
        assert cache.rebuilds == 3
        patients.set_target(s, "p-9", "heart_rate", (50, 140), actor="dr", reason="r",
                            ts_ms=T0 + 122 * 60_000)
        a, _, _ = live.assess(s, "p-9", T0 + 123 * 60_000, cache)
        assert cache.rebuilds == 4 and a.bands["heart_rate"]["source"] == "override"


def test_a_replay_reads_the_nurses_observations_of_the_last_12_hours(tmp_path: Path) -> None:
    """Consciousness holds 12 h: entered 5 h before, it still scores (the replay's
    readings go back 4 h, its observations 12 h)."""
    db = tmp_path / "o.db"
    with Store(db) as s:
        _on_bed_9(s, "C")
        s.write_batch([Accept("vitals", "bed-9", vitals("bed-9", i, T0 + 5 * 3600_000 + i * 5000,
                                                         80), T0) for i in range(60)])
        now = T0 + 5 * 3600_000 + 300_000
        for cache in (None, live.LiveMonitors()):
            a, _, _ = live.assess(s, "p-9", now, cache)
            assert a.news2["sub_scores"]["consciousness"] == 3, cache
            assert a.news2["values"]["air_or_oxygen"] == "air"


def test_bench_advice_runs_and_its_kept_engines_agree_with_the_replay() -> None:
    """host.bench_advice (make bench) in miniature: no timing asserted, only that it
    measures what it says (the kept passes answer as the replay)."""
    from host import bench_advice

    doc = bench_advice.run(2, 0.25, 3, 10)
    assert doc["kept_answers_as_replay"] is True
    assert (doc["rebuilds"], doc["increments"]) == (2, 8)
    assert doc["kept_pass_ms_per_patient"]["passes"] == 3 and doc["speedup"] > 0
    assert bench_advice.main(["--patients", "0"]) == 2
