"""A virtual patient on the multi-sensor device: ECG, MAX30102 and TMP117 on emulated buses.

:func:`run_device_vitals` plays ``duration_s`` of a scenario's virtual patient
(:class:`sim.patient.VirtualPatient`) into the real device loop
(:class:`firmware.device.Device` with :class:`firmware.vitals.monitor.VitalSigns`):

- ECG: the patient's counts at 250 Hz (:class:`firmware.hw.sources.ArraySource`
  paced by the simulation clock);
- PPG: the patient's red and IR light (counts at 250 Hz, interpolated in time)
  as the photodiode signal of an emulated MAX30102 (``sim.parts.max30102``,
  10 mA LEDs, 4096 nA range: ``nA/mA = counts / 640``) read by the real
  driver at its own ``ppg_rate_sps`` (100) through
  :class:`firmware.hw.sensors.Max30102DualSource`; optional motion episodes
  (:func:`sim.ppg.add_motion`) and ``electrodes_off`` episodes (the ECG at
  its rail, as a lead-off front end; besides the scenario's own lead-off);
  ``nacks`` episodes (the MAX30102 and the TMP117 stop acknowledging on the
  bus) and ``stalls`` (the device loop does not run: the MAX30102's FIFO
  overflows);
- temperature: the patient's (with the sensor noise of the scenario) on an
  emulated TMP117 read by the real driver once a second.

The device publishes to an in-memory link; the decoded ``vitals`` messages
come back with the patient's ground truth.  CPython only (simulator code).
"""

from __future__ import annotations

import json
from array import array
from typing import Any

import numpy as np

from firmware.params import ECG_ADC_MAX_COUNT
from sim.patient import VirtualPatient

__all__ = ["ECG_FS_HZ", "run_device_vitals"]

ECG_FS_HZ = 250
_NA_PER_MA_PER_COUNT = 1.0 / 640.0  # 10 mA LEDs, 4096 nA full scale, 18 bits
_STEP_MS = 40


def run_device_vitals(scenario: str, seed: int, duration_s: int, *, snr_db: float = 12.0,
                      lead_off: bool = True, motion: list[tuple[float, float]] | None = None,
                      electrodes_off: list[tuple[float, float]] | None = None,
                      nacks: list[tuple[float, float]] | None = None,
                      stalls: list[tuple[float, float]] | None = None,
                      ppg_rate_sps: int = 100) -> tuple[list[dict[str, Any]], Any, Any]:
    """(vitals messages, ground truth, the VitalSigns) of one run (module docstring)."""
    from firmware.device import Device, DeviceConfig
    from firmware.hw.drivers.max30102 import MAX30102 as Max30102Driver
    from firmware.hw.drivers.tmp117 import TMP117 as Tmp117Driver
    from firmware.hw.sensors import Max30102DualSource
    from firmware.hw.sources import ArraySource
    from firmware.hw.state import MemoryState
    from firmware.net.links.memory import MemoryLink
    from firmware.vitals.monitor import VitalSigns
    from sim.bus import I2CBus
    from sim.clock import SimClock
    from sim.parts.max30102 import MAX30102
    from sim.parts.tmp117 import TMP117
    from sim.ppg import add_motion

    vp = VirtualPatient(scenario, seed, ECG_FS_HZ, snr_db=snr_db, lead_off=lead_off)
    chunk = vp.run(duration_s + 2)
    red, ir = chunk.ppg_red.astype(np.int64), chunk.ppg_ir.astype(np.int64)
    ecg = chunk.ecg.copy()
    for a, b in electrodes_off or ():
        ecg[round(a * ECG_FS_HZ):round(b * ECG_FS_HZ)] = ECG_ADC_MAX_COUNT
    if motion:
        red, ir = add_motion(red, ir, ECG_FS_HZ, motion, np.random.default_rng(seed))
    t = np.arange(len(ir)) / ECG_FS_HZ
    red_f, ir_f = red * _NA_PER_MA_PER_COUNT, ir * _NA_PER_MA_PER_COUNT
    temp_truth = vp.temperature_c

    clock = SimClock(start_epoch_ms=1_764_000_000_000)
    bus = I2CBus()
    bus.attach(0x57, MAX30102(clock, red=lambda s: float(np.interp(s, t, red_f)),
                              ir=lambda s: float(np.interp(s, t, ir_f))))
    bus.attach(0x48, TMP117(clock, temperature=lambda s: float(temp_truth(s))))
    ox = Max30102Driver(bus, sample_rate_sps=ppg_rate_sps, led_current_ma=(10.0, 10.0),
                        adc_range_na=4096)
    thermo = Tmp117Driver(bus, averages=8, conversion_cycle_ms=1000)
    vitals = VitalSigns(ECG_FS_HZ, ppg=Max30102DualSource(ox), thermometer=thermo,
                        temp_period_ms=1000)
    link = MemoryLink()
    source = ArraySource(array("h", ecg[: duration_s * ECG_FS_HZ].tobytes()),
                         sample_rate_hz=ECG_FS_HZ, clock=clock)
    dev = Device(DeviceConfig("sim-vitals-1", ECG_FS_HZ), source, link, clock, MemoryState(),
                 vitals=vitals)
    def inside(spans: list[tuple[float, float]] | None, t_s: float) -> bool:
        return any(a <= t_s < b for a, b in spans or ())

    while not source.exhausted():
        clock.advance(_STEP_MS)
        t_s = clock.elapsed_ms / 1000
        for addr in (0x57, 0x48):
            if inside(nacks, t_s):
                bus.disconnect(addr)
            else:
                bus.reconnect(addr)
        if not inside(stalls, t_s):
            dev.step()
    out = [json.loads(p) for topic, p, _ in link.published if topic.endswith("/vitals")]
    return out, vp.truth, vitals
