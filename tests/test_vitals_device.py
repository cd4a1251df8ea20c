"""The multi-sensor device loop (issue 12 item 1): ECG + PPG + thermometer.

A virtual patient (``copd_oxygen``: SpO2 in the low 90s, 12 dB real ECG
noise) gives 64 s of ECG at 250 Hz and red/IR PPG resampled to the
MAX30102's 100 Hz; a scripted thermometer answers every second, once with an
I2C NACK (OSError) and once out of range.  One script runs the real
:class:`firmware.device.Device` with :class:`firmware.vitals.monitor.VitalSigns`
in the MicroPython VM and under CPython: the published bytes must be equal,
every message must validate against the v1 schema, and the vitals must match
the simulator's ground truth; the bad readings must be counted and withheld.
"""

from __future__ import annotations

import io
import json
import runpy
from array import array
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np

from host.services.messages import Accepted, check
from sim.patient import VirtualPatient

SECONDS = 64
ECG_FS = 250
PPG_FS = 100

SCRIPT = """
from array import array
from firmware.device import Device, DeviceConfig
from firmware.net.links.memory import MemoryLink
from firmware.hw.sources import ArraySource
from firmware.hw.sensors import ArrayPpgSource
from firmware.hw.state import MemoryState
from firmware.vitals.monitor import VitalSigns


class StepClock:
    def __init__(self):
        self.ms = 0
    def epoch_ms(self):
        return 1764000000000 + self.ms
    def ticks_ms(self):
        return self.ms & 0x3FFFFFFF


class ScriptedThermometer:
    # 36.87 degC; the 10th read NACKs, the 20th reads 60 degC.
    def __init__(self):
        self.reads = 0
    def read_temperature_mc(self):
        self.reads += 1
        if self.reads == 10:
            raise OSError(19, "TMP117 NACK")
        if self.reads == 20:
            return 60000
        return 36870


def load(path, code):
    with open(path, "rb") as f:
        return array(code, f.read())

ecg = load(DATA + "/ecg.bin", "h")
red = load(DATA + "/red.bin", "i")
ir = load(DATA + "/ir.bin", "i")
clock = StepClock()
link = MemoryLink()
source = ArraySource(ecg, sample_rate_hz=250, clock=clock)
vit = VitalSigns(250, ppg=ArrayPpgSource(red, ir, 100, clock), thermometer=ScriptedThermometer(),
                 temp_period_ms=1000)
dev = Device(DeviceConfig("dev-vit-1", 250, patient_id="p-1"), source, link, clock,
             MemoryState(), vitals=vit)
while not source.exhausted():
    clock.ms += 40
    dev.step()
dev.stop()
for _ in range(20):
    clock.ms += 40
    dev.service()
for topic, payload, retain in link.published:
    print(topic, payload.decode())
"""


def _signals() -> tuple[dict[str, bytes], VirtualPatient]:
    vp = VirtualPatient("copd_oxygen", 5, ECG_FS, snr_db=12.0, lead_off=False)
    chunk = vp.run(SECONDS)
    t250 = np.arange(len(chunk.ppg_ir)) / ECG_FS
    t100 = np.arange(SECONDS * PPG_FS) / PPG_FS
    red = np.rint(np.interp(t100, t250, chunk.ppg_red)).astype(np.int32)
    ir = np.rint(np.interp(t100, t250, chunk.ppg_ir)).astype(np.int32)
    return {"ecg.bin": chunk.ecg.astype(np.int16).tobytes(), "red.bin": red.tobytes(),
            "ir.bin": ir.tobytes()}, vp


def test_multi_sensor_loop_same_bytes_in_micropython_and_true_vitals(
        micropython, tmp_path: Path) -> None:
    files, vp = _signals()
    assert array("i").itemsize == 4
    vm_out = micropython('DATA = "/data"\n' + SCRIPT,
                         extra_files={"/data/" + k: v for k, v in files.items()})
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    script = tmp_path / "run.py"
    script.write_text(f"DATA = {str(tmp_path)!r}\n" + SCRIPT)
    out = io.StringIO()
    with redirect_stdout(out):
        runpy.run_path(str(script), run_name="__main__")
    assert vm_out == out.getvalue()

    vitals = []
    for line in vm_out.splitlines():
        topic, payload = line.split(" ", 1)
        msg = json.loads(payload)
        verdict = check(topic, payload.encode())
        assert isinstance(verdict, Accepted), (verdict, payload)
        if msg["type"] == "vitals":
            vitals.append(msg)
    assert len(vitals) == SECONDS
    truth = np.asarray(vp.truth.vitals)  # time_s, hr, hr_beats, resp, spo2, temp, ...
    beats = vp.truth.beat_samples() / ECG_FS
    late = vitals[20:]
    pulse_err, spo2_err = [], []
    for i, m in enumerate(late, start=21):
        t = float(i)
        recent = beats[(beats > t - 8) & (beats <= t)]
        hr_true = 60.0 * (len(recent) - 1) / (recent[-1] - recent[0])
        if m["pulse_bpm"] is not None:  # premature beats may read as motion now and then
            pulse_err.append(abs(m["pulse_bpm"] - hr_true))
        if m["spo2_pct"] is not None:
            spo2_err.append(m["spo2_pct"] - truth[min(int(t), len(truth) - 1), 4])
    # within 2 on average, no published value off by more than 3x that
    assert len(pulse_err) >= 0.9 * len(late)
    assert np.mean(pulse_err) <= 2 and max(pulse_err) <= 6, pulse_err
    assert np.sqrt(np.mean(np.square(spo2_err))) <= 2 and max(map(abs, spo2_err)) <= 6
    assert sum(m["spo2_pct"] is not None for m in late) >= 0.9 * len(late)
    resp = [m["resp_rate_per_min"] for m in vitals if m["resp_rate_per_min"] is not None]
    assert resp and all(abs(r - truth[0, 3]) <= 3 for r in resp), (resp, truth[0, 3])
    temps = [m["temp_centi_c"] for m in vitals]
    assert temps.count(3687) >= SECONDS - 4
    withheld = [m["withheld"].get("temp_centi_c") for m in vitals if "withheld" in m]
    assert "sensor_error" in withheld and "out_of_range" in withheld
    assert vitals[-1]["faults"]["temp_sensor_error"] == 1
    assert vitals[-1]["faults"]["temp_out_of_range"] == 1
    assert vitals[0]["withheld"]["hrv_sdnn_ms"] == "too_short"


def test_vital_signs_from_one_config_on_emulated_parts() -> None:
    import pytest

    from firmware.vitals.monitor import vital_signs_from_config
    from sim.bus import I2CBus
    from sim.clock import SimClock
    from sim.nibp import LoopbackUart
    from sim.parts.max30102 import MAX30102
    from sim.parts.tmp117 import TMP117

    clock = SimClock(start_epoch_ms=0)
    bus = I2CBus()
    bus.attach(0x57, MAX30102(clock, red=150.0, ir=180.0))
    bus.attach(0x48, TMP117(clock, temperature=37.25))
    uart = LoopbackUart()
    vit = vital_signs_from_config(
        {"ppg": {"sample_rate_sps": 200}, "temperature": {"period_ms": 2000},
         "nibp": {"cycle_s": 300}}, 250, i2c=bus, uart=uart)
    assert vit.pox.fs_hz == 200 and vit.temp_period_ms == 2000
    assert uart.tx.startswith(b"$CYCLE,300*")
    assert vital_signs_from_config({}, 250).ppg is None  # no sensor: no vitals of it
    for bad in ({"ppg": {"rate": 100}}, {"spo2": {}}, {"temperature": {"period_ms": 5}},
                {"ppg": {"led_current_ma": 7}}):
        with pytest.raises(ValueError):
            vital_signs_from_config(bad, 250, i2c=bus, uart=uart)
    with pytest.raises(ValueError):
        vital_signs_from_config({"nibp": {}}, 250)
    with pytest.raises(OSError):  # no part at that address: the driver says so
        vital_signs_from_config({"temperature": {"address": 0x49}}, 250, i2c=bus)


def test_device_config_vitals_key_builds_the_sensors(tmp_path: Path) -> None:
    import pytest

    from firmware.main import build, check_config
    from firmware.net.links.memory import MemoryLink
    from sim.bus import I2CBus
    from sim.clock import SimClock
    from sim.nibp import LoopbackUart
    from sim.parts.max30102 import MAX30102
    from sim.parts.tmp117 import TMP117

    clock = SimClock(start_epoch_ms=0)
    bus = I2CBus()
    bus.attach(0x57, MAX30102(clock, red=150.0, ir=180.0))
    bus.attach(0x48, TMP117(clock, temperature=37.0))
    uart = LoopbackUart()

    class Buses:
        def i2c(self, settings):
            assert settings == {"bus": 1}
            return bus

        def uart(self, settings):
            return uart

    ecg = tmp_path / "ecg.bin"
    ecg.write_bytes(bytes(2 * 500))
    cfg = {"device_id": "bed-9", "sample_rate_hz": 250, "broker_host": "h",
           "state_dir": str(tmp_path / "state"), "source": {"kind": "file", "path": str(ecg)},
           "vitals": {"i2c": {"bus": 1}, "uart": {"port": 1},
                      "ppg": {"sample_rate_sps": 100}, "temperature": {"period_ms": 1000},
                      "nibp": {"cycle_s": 600}}}
    device = build(check_config(cfg), clock=clock, link=MemoryLink(), buses=Buses())
    assert device.vitals.pox.fs_hz == 100 and device.vitals.nibp is not None
    assert uart.tx.startswith(b"$CYCLE,600*")
    cfg["vitals"] = {"i2c": {"bus": 1}, "ppg": {"sample_rate_hz": 100}}
    with pytest.raises(ValueError, match="sample_rate_hz"):
        build(check_config(cfg), clock=clock, link=MemoryLink(), buses=Buses())
