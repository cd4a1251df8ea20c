"""firmware.signal.quality.SignalQuality: lead-off, saturation and noise flags.

Signals: simulator ECG (ECGSYN) quantised as the simulated front end does
(200 counts/mV, signed 16 bit), flat lines, rail-stuck and clipped signals,
and Gaussian white noise added in mV.  The thresholds are the module's named
constants (firmware/signal/quality.py states the numbers and where they come from).
"""

from __future__ import annotations

import io
import runpy
from array import array
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from firmware.signal import quality as Q
from firmware.signal.quality import SignalQuality
from sim.ecgsyn import EcgsynParams, ecgsyn
from sim.sources import ADC_COUNTS_PER_MV, ADC_MAX_COUNT, ADC_MIN_COUNT, mv_to_counts


def ecg_mv(seconds: float, fs: int, hr_bpm: float = 75.0, seed: int = 1) -> np.ndarray:
    params = EcgsynParams(sample_rate_hz=fs, heart_rate_mean_bpm=hr_bpm)
    return ecgsyn(seconds, params, np.random.default_rng(seed)).signal_mv


def counts(mv: np.ndarray) -> list[int]:
    return [int(v) for v in mv_to_counts(mv)]


def new(fs: int) -> SignalQuality:
    return SignalQuality(fs, ADC_MIN_COUNT, ADC_MAX_COUNT, ADC_COUNTS_PER_MV)


def flags_per_hop(sq: SignalQuality, samples: list[int]) -> list[str]:
    """Feed one hop at a time; the flag after each hop."""
    hop = sq.hop_samples
    return [sq.process(samples[i : i + hop]) for i in range(0, len(samples) - hop + 1, hop)]


# ------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    "args",
    [
        (250.0, -32768, 32767, 200),  # float rate
        (True, -32768, 32767, 200),
        (10, -32768, 32767, 200),  # rate out of range
        (250, 100, 100, 200),  # empty ADC range
        (250, 100, 0, 200),
        (250, 0, 1 << 24, 200),  # span too wide for small ints
        (250, -32768.0, 32767, 200),
        (250, -32768, 32767, 0),  # gain
        (250, -32768, 32767, -5),
        (250, -32768, 32767, "200"),
    ],
)
def test_bad_arguments_raise_value_error(args: tuple) -> None:
    with pytest.raises(ValueError):
        SignalQuality(*args)


def test_sample_rate_has_no_default() -> None:
    with pytest.raises(TypeError):
        SignalQuality(adc_min=-32768, adc_max=32767, counts_per_mv=200)  # type: ignore[call-arg]


def test_unit_conversions_at_init() -> None:
    sq = SignalQuality(360, 0, 2047, 200)  # MIT-BIH: 11 bit, 200 counts/mV (5 uV/count)
    assert sq.flat_pp_counts == 10  # 50 uV
    assert sq.hyst_min_counts == 5  # 25 uV
    assert sq.hop_samples == 180 and sq.window_samples == 720  # 500 ms, 2 s
    assert sq.noisy_turns == 36  # 18 turning points/s over 2 s
    assert SignalQuality(250, -(1 << 23), (1 << 23) - 1, 2000).flat_pp_counts == 100


# ------------------------------------------------------------------------ clean ECG


@pytest.mark.parametrize("fs", [250, 360])
@pytest.mark.parametrize("hr_bpm", [40, 75, 150, 200])
def test_clean_ecg_is_good(fs: int, hr_bpm: float) -> None:
    sq = new(fs)
    flags = flags_per_hop(sq, counts(ecg_mv(60, fs, hr_bpm)))
    assert flags[:3] == ["good"] * 3 and not any(f != "good" for f in flags)
    assert sq.ready
    assert sq.windows == len(flags) - 3  # the first 3 hops fill the first window
    assert sq.counts == [sq.windows, 0, 0, 0] and sq.changes == 0
    assert sq.turns_per_s < Q.NOISY_TURNS_PER_S


def test_not_ready_before_one_window() -> None:
    sq = new(250)
    sq.process([0] * 499)
    assert not sq.ready and sq.flag == "good" and sq.windows == 0
    sq.process([0])
    assert sq.ready and sq.flag == "lead_off" and sq.windows == 1


@pytest.mark.parametrize("record", ["101", "119", "208", "203"])
def test_mitdb_excerpts_are_good(record: str) -> None:
    # Real ECG (MLII, 11-bit ADC 0..2047, 200 counts/mV): PVCs, bigeminy, AF.
    import wfdb

    path = Path(__file__).resolve().parent / "data" / "mitdb" / record
    rec = wfdb.rdrecord(str(path), physical=False, channels=[0])
    sq = SignalQuality(int(rec.fs), 0, 2047, int(rec.adc_gain[0]))
    assert set(flags_per_hop(sq, [int(v) for v in rec.d_signal[:, 0]])) == {"good"}
    assert sq.windows == 37


# ------------------------------------------------------------------------ lead off


def test_flat_line_is_lead_off_and_recovers() -> None:
    fs = 250
    rng = np.random.default_rng(5)
    ecg = counts(ecg_mv(30, fs))
    flat = [int(v) for v in 1234 + rng.integers(-2, 3, 10 * fs)]  # +-2 counts: 20 uV p-p
    signal = ecg[: 10 * fs] + flat + ecg[10 * fs :]
    sq = new(fs)
    flags = flags_per_hop(sq, signal)
    hops_per_s = 2
    # Flat from hop 20 (t = 10 s): lead_off once a whole 2 s window is flat, at most
    # 2.5 s later, and it stays so until the ECG is back (t = 20 s).
    onset = flags.index("lead_off")
    assert 20 <= onset <= 20 + int(2.5 * hops_per_s)
    assert set(flags[onset : 40]) == {"lead_off"}
    assert "lead_off" not in flags[:20]
    # Good again as soon as the window holds a beat; never flagged noisy on the way.
    back = [f for f in flags[40 + int(2.5 * hops_per_s) :]]
    assert back and set(back) == {"good"}
    assert sq.counts[Q.CODE_LEAD_OFF] >= 16 and sq.changes == 2


def test_flat_threshold_is_50_microvolts() -> None:
    fs = 250
    for pp, expected in ((9, "lead_off"), (10, "good")):
        sq = new(fs)
        # A slow square wave between 0 and pp counts, 1 s per level.
        signal = ([0] * fs + [pp] * fs) * 4
        assert flags_per_hop(sq, signal)[-1] == expected, pp


# ------------------------------------------------------------------------ saturation


def test_railed_front_end_is_saturated_not_lead_off() -> None:
    fs = 360
    ecg = counts(ecg_mv(20, fs))
    signal = ecg[: 8 * fs] + [ADC_MAX_COUNT] * (6 * fs) + ecg[8 * fs :]
    sq = new(fs)
    flags = flags_per_hop(sq, signal)
    assert "lead_off" not in flags
    onset = flags.index("saturated")
    assert 16 <= onset <= 16 + 1  # 10 % of a 2 s window = 200 ms: within one hop
    assert set(flags[onset : 28]) == {"saturated"}
    assert flags[-1] == "good"


def test_amplifier_gain_too_high_clips_and_is_saturated() -> None:
    fs = 250
    sq = SignalQuality(fs, -2048, 2047, 200)  # 12-bit ADC
    # 100x too much gain: every wave above 0.1 mV (P, QRS, T) sits on a rail.
    flags = flags_per_hop(sq, [max(-2048, min(2047, int(v) * 100)) for v in counts(ecg_mv(20, fs))])
    assert flags[-1] == "saturated" and sq.counts[Q.CODE_SATURATED] >= 30


def test_saturation_threshold_is_ten_percent_of_the_window() -> None:
    fs = 250
    sq = new(fs)
    window = sq.window_samples  # 500
    base = counts(ecg_mv(10, fs))
    for on_rail, expected in ((window // 10 - 1, "good"), (window // 10, "saturated")):
        sq = new(fs)
        sq.process(base[: 6 * fs])
        # The last full window: the first `on_rail` samples at the negative rail.
        tail = base[6 * fs : 6 * fs + window]
        tail[:on_rail] = [ADC_MIN_COUNT] * on_rail
        sq.process(tail)
        assert sq.flag == expected, on_rail
        assert sq.rail_permille == on_rail * 1000 // window


def test_brief_clipping_of_r_peaks_is_not_saturation() -> None:
    fs = 360
    ecg = mv_to_counts(ecg_mv(30, fs))
    top = int(np.percentile(ecg, 99))  # clip the top 1 % of samples (R-peak tips)
    sq = SignalQuality(fs, -32768, top, ADC_COUNTS_PER_MV)
    flags = flags_per_hop(sq, [min(int(v), top) for v in ecg])
    assert set(flags) == {"good"}
    assert 0 < sq.rail_permille < Q.SATURATED_PERMILLE


# ------------------------------------------------------------------------ noise


@pytest.mark.parametrize("fs", [250, 360])
@pytest.mark.parametrize("hr_bpm", [40, 75, 120])
def test_heavy_white_noise_is_noisy(fs: int, hr_bpm: float) -> None:
    # 0.3 mV rms on a 1.6 mV ECG: SNR (QRS p-p^2 / 8 vs noise power) about 4.5 dB.
    # (0.2 mV, 8 dB, is the knee: 97-100 % of the windows; 0.1 mV: none below 120 bpm.)
    clean = ecg_mv(40, fs, hr_bpm)
    noisy = clean + np.random.default_rng(7).normal(0.0, 0.3, clean.size)
    sq = new(fs)
    flags = flags_per_hop(sq, counts(noisy))
    judged = flags[7:]  # noise is judged from the 8th hop (4 s) on
    assert set(flags[:7]) == {"good"}
    assert judged.count("noisy") >= 0.95 * len(judged)
    assert sq.turns_per_s >= Q.NOISY_TURNS_PER_S


@pytest.mark.parametrize("fs", [250, 360])
def test_light_white_noise_is_good(fs: int) -> None:
    clean = ecg_mv(40, fs, 75)
    light = clean + np.random.default_rng(8).normal(0.0, 0.05, clean.size)  # 20 dB
    sq = new(fs)
    assert set(flags_per_hop(sq, counts(light))) == {"good"}


def test_noise_burst_is_flagged_and_clears() -> None:
    fs = 250
    clean = ecg_mv(40, fs, 70)
    mv = clean.copy()
    burst = slice(15 * fs, 25 * fs)
    mv[burst] += np.random.default_rng(9).normal(0.0, 0.4, 10 * fs)
    sq = new(fs)
    flags = flags_per_hop(sq, counts(mv))
    assert set(flags[:30]) == {"good"}
    assert flags[32:50].count("noisy") >= 16
    assert set(flags[55:]) == {"good"}  # clean again from 2.5 s after the burst


# ------------------------------------------------------------------------ streaming


def test_block_size_does_not_matter() -> None:
    fs = 360
    mv = ecg_mv(30, fs)
    mv[10 * fs : 15 * fs] += np.random.default_rng(4).normal(0.0, 0.3, 5 * fs)
    samples = counts(mv)
    samples[20 * fs : 23 * fs] = [ADC_MAX_COUNT] * (3 * fs)

    def run(block: int) -> tuple:
        sq = new(fs)
        for i in range(0, len(samples), block):
            sq.process(samples[i : i + block])
        return (sq.flag, list(sq.counts), sq.windows, sq.changes, sq.pp_counts,
                sq.rail_permille, sq.turns_per_s)

    ref = run(len(samples))
    for block in (1, 7, 179, 360, 1001):
        assert run(block) == ref, block


def test_process_takes_a_count_and_an_array() -> None:
    fs = 250
    samples = array("h", counts(ecg_mv(10, fs)))
    a, b = new(fs), new(fs)
    buf = array("h", [0] * 300)
    for i in range(0, len(samples), 300):
        n = min(300, len(samples) - i)
        buf[:n] = samples[i : i + n]
        a.process(buf, n)
    b.process(samples)
    assert (a.flag, a.counts, a.windows) == (b.flag, b.counts, b.windows)


def test_reset_forgets_the_signal_but_keeps_counters() -> None:
    fs = 250
    sq = new(fs)
    sq.process([0] * (3 * fs))
    assert sq.flag == "lead_off"
    windows = sq.windows
    sq.reset()
    assert sq.flag == "good" and not sq.ready and sq.windows == windows
    sq.clear_counters()
    assert sq.windows == 0 and sq.counts == [0, 0, 0, 0] and sq.changes == 0


def test_state_stays_small_ints_on_a_wide_adc() -> None:
    # A 24-bit ADC at 2000 Hz, full-scale noise: every stored int below 2**30.
    lo, hi = -(1 << 23), (1 << 23) - 1
    sq = SignalQuality(2000, lo, hi, 1000)
    rng = np.random.default_rng(3)
    sq.process([int(v) for v in rng.integers(lo, hi + 1, 20000)])
    for name, value in vars(sq).items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, int):
                assert -(1 << 30) < v < (1 << 30), name


# ------------------------------------------------------------------------ MicroPython

MPY_SCRIPT = """
from array import array
from firmware.signal.quality import SignalQuality, FLAGS
with open(SIG_PATH, "rb") as f:
    samples = array("h", f.read())
sq = SignalQuality(250, -32768, 32767, 200)
block = 97  # odd block size: hops end inside blocks
trace = []
for i in range(0, len(samples), block):
    flag = sq.process(samples[i:i + block])
    trace.append("%s:%d:%d:%d" % (flag[0], sq.pp_counts, sq.rail_permille, sq.turns_per_s))
print(" ".join(trace))
print("counts", " ".join("%s=%d" % (FLAGS[k], sq.counts[k]) for k in range(len(FLAGS))))
print("windows", sq.windows, "changes", sq.changes, "ready", sq.ready)
"""

ALLOC_SCRIPT = """
import gc
from array import array
from firmware.signal.quality import SignalQuality
buf = array("h", [0] * 5000)
for i in range(5000):
    buf[i] = ((i * 37) % 400) - 200 + (2000 if i % 250 == 0 else 0)
sq = SignalQuality(250, -32768, 32767, 200)
sq.process(buf, 5000)           # warm up: every attribute exists
gc.collect()
gc.disable()
before = gc.mem_alloc()
sq.process(buf, 5000)           # 5000 samples, 10 hop ends
after = gc.mem_alloc()
gc.enable()
print(after - before)
"""


def composite_signal(fs: int) -> bytes:
    """ECG, then flat (lead off), railed, noisy and clean again: 40 s."""
    ecg = mv_to_counts(ecg_mv(40, fs, 80, seed=11)).astype(np.int64)
    sig = ecg.copy()
    sig[8 * fs : 14 * fs] = 700
    sig[18 * fs : 22 * fs] = ADC_MIN_COUNT
    rng = np.random.default_rng(12)
    sig[26 * fs : 34 * fs] += rng.normal(0, 80, 8 * fs).round().astype(np.int64)
    return np.clip(sig, ADC_MIN_COUNT, ADC_MAX_COUNT).astype("<i2").tobytes()


def test_micropython_gives_identical_output(micropython, tmp_path: Path) -> None:
    data = composite_signal(250)
    vm_out = micropython('SIG_PATH = "/data/sig.bin"\n' + MPY_SCRIPT,
                         extra_files={"/data/sig.bin": data})
    path = tmp_path / "sig.bin"
    path.write_bytes(data)
    script = tmp_path / "quality_run.py"
    script.write_text(f"SIG_PATH = {str(path)!r}\n" + MPY_SCRIPT)
    buf = io.StringIO()
    with redirect_stdout(buf):
        runpy.run_path(str(script), run_name="__main__")
    assert vm_out == buf.getvalue()
    lines = vm_out.splitlines()
    counts_line = dict(kv.split("=") for kv in lines[1].split()[1:])
    assert all(int(counts_line[f]) > 0 for f in Q.FLAGS), counts_line
    assert lines[2].endswith("ready True")


def test_micropython_process_allocates_nothing_per_sample(micropython) -> None:
    # The whole call (5000 samples, 10 window assessments) allocates nothing.
    assert int(micropython(ALLOC_SCRIPT).strip()) == 0
