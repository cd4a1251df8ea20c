"""Rhythm events on the device's wire (issue 13 item 2): the outbox never
drops an event before a routine message, the ``event`` message, and the
device loop publishing the monitor's events."""

from __future__ import annotations

from firmware.net.outbox import Outbox


def _publish_all(box: Outbox) -> list[bytes]:
    sent = []
    box.send_some(lambda t, p, r: sent.append(p) or len(sent), 100)
    return sent


def test_full_outbox_drops_routine_messages_before_kept_events():
    box = Outbox(4)
    box.push("v", b"v1", False)
    box.push("e", b"e1", False, True)
    box.push("v", b"v2", False)
    box.push("v", b"v3", False)
    box.push("v", b"v4", False)  # full: v1 goes
    box.push("v", b"v5", False)  # v2 goes, e1 stays although it is older
    assert [p for _, p, _ in box.entries()] == [b"e1", b"v3", b"v4", b"v5"]
    assert box.dropped == 2 and box.dropped_kept == 0


def test_outbox_of_kept_events_drops_the_oldest_and_counts_it():
    box = Outbox(2)
    for i in range(3):
        box.push("e", b"e%d" % i, False, True)
    assert [p for _, p, _ in box.entries()] == [b"e1", b"e2"]
    assert box.dropped == 1 and box.dropped_kept == 1


def test_in_flight_routine_message_dropped_keeps_the_count_right():
    box = Outbox(3)
    box.push("e", b"e1", False, True)
    box.push("v", b"v1", False)
    box.push("v", b"v2", False)
    assert _publish_all(box) == [b"e1", b"v1", b"v2"]
    assert box.inflight == 3
    box.push("e", b"e2", False, True)  # v1 (in flight) is dropped
    assert box.inflight == 2
    assert [p for _, p, _ in box.entries()] == [b"e1", b"v2", b"e2"]
    box.ack(1)  # e1's token
    assert [p for _, p, _ in box.entries()] == [b"v2", b"e2"]
    box.ack(3)
    assert box.inflight == 0 and len(box) == 1


# ------------------------------------------------------------ device loop

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import jsonschema  # noqa: E402

from firmware.device import Device, DeviceConfig  # noqa: E402
from firmware.hw.sources import ArraySource  # noqa: E402
from firmware.hw.state import MemoryState  # noqa: E402
from firmware.ml.infer import ModelSlot  # noqa: E402
from firmware.net.links.memory import MemoryLink  # noqa: E402
from firmware.rhythm.monitor import RhythmMonitor  # noqa: E402
from sim.patient import VirtualPatient  # noqa: E402
from sim.scenario import parse_scenario  # noqa: E402
from tests.test_device import StepClock  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "host" / "schemas" / "v1" / "event.schema.json").read_text())
FS = 250

SCENARIO = {
    "name": "vt_and_pause", "duration_s": 90,
    "vitals": {"heart_rate_bpm": 75, "resp_rate_bpm": 14, "spo2_percent": 97,
               "temperature_c": 36.8, "systolic_mmhg": 120, "diastolic_mmhg": 75},
    "rhythm": {"events": [{"time_s": 30, "kind": "vt_run", "beats": 8, "rate_bpm": 170},
                          {"time_s": 60, "kind": "pause", "duration_s": 3.0}]},
    "noise": {"snr_db": 24},
}


def test_device_publishes_rhythm_events_valid_and_in_sequence():
    patient = VirtualPatient(parse_scenario(SCENARIO), 2, FS)
    counts = patient.run(90).ecg.tolist()
    slot = ModelSlot("auto")
    base = ROOT / "models" / "beatnet"
    assert slot.install_files(str(base.with_suffix(".tflite")), str(base.with_suffix(".json")))
    clock = StepClock()
    src = ArraySource(counts, sample_rate_hz=FS, clock=clock)
    link = MemoryLink()
    dev = Device(DeviceConfig("dev-1", FS, mains_hz=50, patient_id="p-1"), src, link, clock,
                 MemoryState(), model=slot, rhythm=RhythmMonitor(FS))
    while not src.exhausted():
        clock.ms += 50
        dev.step()
    t0 = clock.epoch_ms() - 90 * 1000  # the first sample, to within a step
    for _ in range(50):
        clock.ms += 50
        dev.service()
    docs = [json.loads(p) for t, p, _ in link.published]
    assert [d["seq"] for d in docs] == list(range(len(docs)))
    events = [d for d in docs if d["type"] == "event"]
    for d in events:
        jsonschema.validate(d, SCHEMA)
    assert all(t.endswith("/event") for t, p, _ in link.published if b'"event"' in p)
    got = [(d["kind"], d["phase"]) for d in events]
    assert ("VT", "onset") in got and ("VT", "end") in got and ("PAUSE", "end") in got, got
    vt = next(d for d in events if d["kind"] == "VT" and d["phase"] == "end")
    truth_vt = next(e for e in patient.truth.rhythm_episodes() if e.rhythm == "VT")
    assert abs(vt["start_ms"] - t0 - truth_vt.start_sample * 1000 // FS) <= 1000
    assert vt["evidence"]["beats"] >= 7 and vt["evidence"]["rate_bpm"] > 150
    pause = next(d for d in events if d["kind"] == "PAUSE")
    assert 2900 <= pause["evidence"]["rr_ms"] <= 3100
