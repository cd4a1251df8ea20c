"""WFDB record replay (sim/replay.py): directly and through the emulated front ends."""

from __future__ import annotations

from array import array
from pathlib import Path

import numpy as np
import pytest
import wfdb

from firmware.device import Device, DeviceConfig
from firmware.hw.state import MemoryState
from firmware.net.links.memory import MemoryLink
from firmware.signal.qrs import QrsDetector
from sim.clock import SimClock
from sim.records import read_channel, to_device_signal
from sim.replay import (
    WfdbReplay,
    ads1115_front_end,
    ads1292_front_end,
    max30102_front_end,
    ppg_signal,
)
from sim.serialboard import SerialEcgBoard, open_pyserial_source, read_counts

MITDB = Path(__file__).parent / "data" / "mitdb"
REC_101 = str(MITDB / "101")
BEAT_SYMBOLS = set("NLRejAaJSVEF/fQ")


def reference_beats(record: str) -> np.ndarray:
    ann = wfdb.rdann(record, "atr")
    return np.array([s for s, sym in zip(ann.sample, ann.symbol) if sym in BEAT_SYMBOLS])


def drain(source, total: int, clock: SimClock | None = None, step_ms: int = 40) -> list[int]:
    out: list[int] = []
    buf = array("h", bytes(128))
    for _ in range(100_000):
        if len(out) >= total:
            break
        if clock is not None:
            clock.advance(step_ms)
        n = source.read_samples(buf, 64)
        out.extend(buf[:n])
        if clock is None and not n:
            break
    return out


def test_native_rate_replay_is_the_record_itself() -> None:
    rep = WfdbReplay(REC_101, 360)
    rec = wfdb.rdrecord(REC_101, channels=[0], physical=False)
    # MIT-BIH: 200 adu/mV, baseline 1024; the device also counts 200 per mV.
    want = rec.d_signal[:, 0].astype(int) - 1024
    assert rep.record_fs_hz == 360 and len(rep) == 7200
    assert drain(rep, 7200) == want.tolist()
    assert rep.exhausted() and rep.read_samples(array("h", [0]), 1) == 0


def test_resampled_replay_reuses_the_analyzer_conversion_and_keeps_the_beats() -> None:
    rep = WfdbReplay(REC_101, 250)
    ch = read_channel(REC_101, 0)
    assert np.array_equal(rep.counts, to_device_signal(ch.millivolts(), ch.fs_hz, 250).counts)
    assert len(rep) == 5000 and rep.counts.dtype == np.int16
    # The device's own detector on the replayed samples finds the annotated beats.
    det = QrsDetector(250)
    found = det.process(drain(rep, 5000)) + det.flush()
    found_rec = np.array(rep.to_record_samples(sorted(found)))
    ref = reference_beats(REC_101)
    tol = int(0.15 * 360)
    hits = sum(np.min(np.abs(found_rec - r)) <= tol for r in ref)
    assert hits >= len(ref) - 1 and len(found_rec) <= len(ref) + 1


def test_replay_is_paced_by_the_clock_and_can_loop() -> None:
    clock = SimClock(start_epoch_ms=0)
    rep = WfdbReplay(REC_101, 250, clock=clock, loop=True)
    buf = array("h", bytes(2 * 64))
    assert rep.read_samples(buf, 64) == 0
    clock.advance(100)
    assert rep.read_samples(buf, 64) == 25
    assert list(buf[:25]) == rep.counts[:25].tolist()
    clock.advance(20_000)  # past the end: it starts over
    got = drain(rep, 5000, clock=None)
    assert len(got) == 5000
    assert got[4975:] == rep.counts[:25].tolist()
    with pytest.raises(ValueError):
        WfdbReplay(REC_101, 0)


@pytest.mark.parametrize("record", ["101", "208"])
def test_full_driver_path_through_the_ads1292_replays_the_record_exactly(record: str) -> None:
    clock = SimClock(start_epoch_ms=0)
    rep = WfdbReplay(str(MITDB / record), 250)
    fe = ads1292_front_end(rep, clock)
    got = drain(fe, 5000, clock=clock)
    assert got == rep.counts.tolist()
    assert fe.part.frames_overwritten == 0 and fe.source.dropped == 0


def test_full_driver_path_through_the_ads1115_replays_the_record_exactly() -> None:
    clock = SimClock(start_epoch_ms=0)
    rep = WfdbReplay(str(MITDB / "119"), 250)
    fe = ads1115_front_end(rep, clock)
    # +-2.048 V after a gain of 100: +-20.48 mV at the electrodes, 8 ADC codes per count.
    got = drain(fe, 5000, clock=clock)
    assert got == rep.counts.tolist()


def test_device_loop_on_a_replayed_record_counts_the_annotated_beats() -> None:
    clock = SimClock(start_epoch_ms=0)
    rep = WfdbReplay(REC_101, 250)
    fe = ads1292_front_end(rep, clock)
    dev = Device(DeviceConfig("dev-replay-1", 250), fe, MemoryLink(), clock, MemoryState())
    for _ in range(500):
        clock.advance(40)
        dev.step()
    assert dev.samples == 5000 and dev.reports == 20
    n_ref = len(reference_beats(REC_101))
    assert abs(dev.beats - n_ref) <= 2


def test_replay_feeds_the_serial_board() -> None:
    clock = SimClock(start_epoch_ms=0)
    rep = WfdbReplay(str(MITDB / "203"), 250)
    with SerialEcgBoard(rep.counts_signal(), 250, samples_per_frame=25, clock=clock) as board:
        src = open_pyserial_source(board.port_name)
        got: list[int] = []
        for _ in range(200):  # 20 s
            clock.advance(100)
            board.pump()
            got.extend(read_counts(src, board.frames_sent * 25 - len(got)))
        src.port.close()
    assert got == rep.counts.tolist()


def test_bidmc_125_hz_record_replays_at_250_hz_with_the_monitor_heart_rate() -> None:
    record = str(Path(__file__).parent / "data" / "bidmc" / "bidmc01")
    clock = SimClock(start_epoch_ms=0)
    rep = WfdbReplay(record, 250, channel=1)  # lead II
    assert rep.record_fs_hz == 125 and len(rep) == 15000
    fe = ads1292_front_end(rep, clock)
    got = drain(fe, 15000, clock=clock, step_ms=100)
    assert got == rep.counts.tolist()
    det = QrsDetector(250)
    peaks = sorted(det.process(got) + det.flush())
    hr_bpm = 60 * 250 / np.median(np.diff(peaks))
    numerics = wfdb.rdrecord(record + "n", channels=[0]).p_signal[:, 0]  # the monitor's HR
    assert abs(hr_bpm - float(np.mean(numerics))) < 3


def test_bidmc_ppg_replays_through_the_max30102_at_the_pulse_rate() -> None:
    record = str(Path(__file__).parent / "data" / "bidmc" / "bidmc01")
    clock = SimClock(start_epoch_ms=0)
    pleth = ppg_signal(record, 0)  # PLETH
    fe = max30102_front_end(pleth, pleth, clock, sample_rate_sps=100)
    got = np.array(drain(fe, 6000, clock=clock, step_ms=200), dtype=float)
    assert len(got) == 6000 and fe.driver.overflows == 0
    # 200 nA/mA * 10 mA = 2000 nA of 4096 -> 128000 counts (18 bit) -> 16000 after >> 3,
    # minus the pulsatile part: 2 % of it between the record's 1st and 99th percentiles.
    p1, p99 = np.percentile(got, [1, 99])
    assert 15600 <= p1 and p99 <= 16000 and 300 <= p99 - p1 <= 340
    spectrum = np.abs(np.fft.rfft(got - got.mean()))
    freqs = np.fft.rfftfreq(len(got), 1 / 100)
    band = (freqs > 0.7) & (freqs < 3.0)
    pulse_bpm = 60 * freqs[band][np.argmax(spectrum[band])]
    numerics = wfdb.rdrecord(record + "n", channels=[0]).p_signal[:, 0]  # monitor HR
    assert abs(pulse_bpm - float(np.mean(numerics))) < 3
