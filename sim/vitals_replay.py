"""A WFDB record through the device's vital-sign code (``medge vitals analyze``, eval).

The record's ECG channel (the first whose name is one of :data:`ECG_NAMES`,
e.g. BIDMC's ``II``) becomes the device's raw counts at 250 Hz
(:func:`sim.records.device_signal`) and goes, in blocks of one second as on
the device, through :class:`firmware.signal.qrs.QrsDetector`, the ECG
signal-quality check (:class:`firmware.signal.quality.SignalQuality`) and
:class:`firmware.vitals.resp.EcgModulations`.  Its PPG channel (``PLETH``)
becomes the light counts of a MAX30102 channel at the record's own rate
(:func:`sim.ppg.light_from_pleth`) into
:class:`firmware.vitals.pulseox.PulseOximeter`.  Both feed one
:class:`firmware.vitals.resp.RespiratoryRate`.

Every ``STEP_S`` (8 s) from ``WINDOW_S`` (32 s) on, one CSV row
``time_s,heart_rate,pulse_rate,resp_rate``: ``time_s`` the window's end;
heart rate from the R peaks and pulse rate from the PPG onsets over the window
(:class:`firmware.vitals.rate.EventRate`, int bpm); respiratory rate
(breaths/min, one decimal) fused from the ECG and PPG modulations of the
window.  A value the device would withhold is empty, as is one whose channel
the record lacks.  Differences to the device loop
(:class:`firmware.vitals.monitor.VitalSigns`): the rates average over the
whole 32-s window instead of the device's 8 s, and the PPG motion check
(``PulseOximeter.assess``, an 8-s test) is not applied to the 32-s pulse
rate (its interval rule drops what motion adds); SpO2 is not computed (a
recorded PLETH is one wavelength).

A record that cannot be read or has neither an ECG nor a PPG channel is a
:class:`sim.records.RecordError` (one line).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.records import RecordError, channel_names, device_signal, read_channel

__all__ = ["ECG_NAMES", "PPG_NAMES", "VitalsRow", "analyze_arrays", "analyze_record",
           "find_channels"]

WINDOW_S = 32
STEP_S = 8
ECG_FS_HZ = 250
#: Channel names taken as ECG / PPG, in order of preference (case and a trailing comma ignored).
ECG_NAMES = ("II", "MLII", "I", "III", "V", "V1", "V2", "V5", "AVR", "ECG")
PPG_NAMES = ("PLETH", "PPG", "PLETH_IR")


@dataclass(frozen=True)
class VitalsRow:
    time_s: int
    heart_rate: int | None
    pulse_rate: int | None
    resp_rate_x10: int | None
    resp_estimates_x10: tuple[int, ...] = ()

    def csv_row(self) -> list[str]:
        def fmt(v: int | None) -> str:
            return "" if v is None else str(v)

        rr = "" if self.resp_rate_x10 is None else f"{self.resp_rate_x10 / 10:.1f}"
        return [str(self.time_s), fmt(self.heart_rate), fmt(self.pulse_rate), rr]


def _clean(name: str) -> str:
    return name.strip().rstrip(",").strip().upper()


def find_channels(record: str) -> tuple[int | None, int | None]:
    """(ECG channel, PPG channel) numbers of ``record`` (None when absent)."""
    names = [_clean(n) for n in channel_names(record)]
    ecg = next((names.index(n) for n in ECG_NAMES if n in names), None)
    ppg = next((names.index(n) for n in PPG_NAMES if n in names), None)
    return ecg, ppg


def analyze_arrays(ecg: np.ndarray | None, ecg_fs: int, light: np.ndarray | None,
                   ppg_fs: int, duration_s: float, window_s: int = WINDOW_S,
                   step_s: int = STEP_S, modulations: int | None = None) -> list[VitalsRow]:
    """The device's vital-sign code over ECG counts (int16 at ``ecg_fs``) and/or
    PPG light counts (``ppg_fs``); one row per window."""
    from array import array

    from firmware.params import ECG_ADC_MAX_COUNT, ECG_ADC_MIN_COUNT, ECG_COUNTS_PER_MV
    from firmware.signal.qrs import QrsDetector
    from firmware.signal.quality import SIGNAL_GOOD, SignalQuality
    from firmware.vitals.pulseox import PulseOximeter
    from firmware.vitals.rate import EventRate
    from firmware.vitals.resp import ALL_MODULATIONS, EcgModulations, RespiratoryRate

    resp = RespiratoryRate(window_s * 1000, ALL_MODULATIONS if modulations is None
                           else modulations)
    det = qual = hr = edr = None
    if ecg is not None:
        det = QrsDetector(ecg_fs)
        qual = SignalQuality(ecg_fs, ECG_ADC_MIN_COUNT, ECG_ADC_MAX_COUNT, ECG_COUNTS_PER_MV)
        hr = EventRate(ecg_fs, 3 * ecg_fs)
        edr = EcgModulations(ecg_fs, resp)
    pox = None
    if light is not None:
        pox = PulseOximeter(ppg_fs, (1 << 18) - 1, resp=resp)
    rows: list[VitalsRow] = []
    e_pos = p_pos = 0
    t = 0
    end = int(duration_s)
    while t + 1 <= end:
        t += 1
        if ecg is not None:
            stop = min(len(ecg), t * ecg_fs)
            block = array("h", ecg[e_pos:stop].astype(np.int16).tobytes())
            n = len(block)
            if n:
                qual.process(block, n)
                edr.push(block, n)
                for r in det.process(block):
                    hr.add(r)
                    edr.beat(r)
            e_pos = stop
        if light is not None:
            stop = min(len(light), t * ppg_fs)
            seg = [int(v) for v in light[p_pos:stop]]
            pox.process(seg, seg, len(seg))
            p_pos = stop
        if t >= window_s and (t - window_s) % step_s == 0:
            h = None
            if hr is not None and qual.flag == SIGNAL_GOOD:
                h = hr.bpm(edr.samples, window_s * ecg_fs)
            p = pox.pulse_rate_bpm(window_s * 1000) if pox is not None else None
            r = resp.estimate(t * 1000)
            rows.append(VitalsRow(t, h, p, r, tuple(resp.estimates_x10)))
    return rows


def analyze_record(record: str, modulations: int | None = None) -> list[VitalsRow]:
    """Rows for the WFDB record at ``record`` (RecordError for a bad one)."""
    ecg_ch, ppg_ch = find_channels(record)
    if ecg_ch is None and ppg_ch is None:
        raise RecordError(f"record {record!r} has no ECG ({', '.join(ECG_NAMES)}) and no PPG "
                          f"({', '.join(PPG_NAMES)}) channel")
    ecg = light = None
    ppg_fs = 0
    duration = 0.0
    if ecg_ch is not None:
        sig = device_signal(record, ecg_ch, ECG_FS_HZ)
        ecg = sig.counts
        duration = sig.record_len / sig.record_fs_hz
    if ppg_ch is not None:
        from sim.ppg import light_from_pleth

        ch = read_channel(record, ppg_ch)
        ppg_fs = round(ch.fs_hz)
        light = light_from_pleth(ch.physical())
        duration = max(duration, len(light) / ch.fs_hz)
    return analyze_arrays(ecg, ECG_FS_HZ, light, ppg_fs, duration, modulations=modulations)


