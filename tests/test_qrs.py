"""The device QRS detector (firmware/signal/qrs.py) on simulator ECG.

Accuracy and R-peak location against ECGSYN's exact R peaks at 40-180 bpm and
both device rates; identical output for any block size, after re-basing and in
the real MicroPython VM; the stated decision-latency bound (also on the
search-back path); no beats from flat lines, a saturated rail or noise; and the
argument checks.  No recorded data is needed (the MIT-BIH evaluation is
``python -m models.eval_qrs``).
"""

from __future__ import annotations

from array import array

import numpy as np
import pytest
from scipy import signal

import firmware.signal.qrs as qrs_module
from firmware.signal import filters
from firmware.signal.qrs import QrsDetector
from sim.ecgsyn import EcgsynParams, ecgsyn
from sim.sources import mv_to_counts

RATES_HZ = (250, 360)
ADC_ZERO = 1024  # MIT-BIH-like counts: 200 counts/mV around 1024
MATCH_MS = 50


def synthetic(fs: int, hr_bpm: float, seconds: float = 60.0, seed: int = 1,
              noise_mv: float = 0.0, zero: int = ADC_ZERO) -> tuple[list[int], np.ndarray]:
    sig = ecgsyn(seconds, EcgsynParams(sample_rate_hz=fs, heart_rate_mean_bpm=hr_bpm,
                                       noise_amplitude_mv=noise_mv),
                 np.random.default_rng(seed))
    counts = mv_to_counts(sig.signal_mv).astype(np.int64) + zero
    return counts.tolist(), np.asarray(sig.r_peaks, dtype=np.int64)


def run(fs: int, samples, block: int | None = None) -> list[int]:
    det = QrsDetector(fs)
    block = block or len(samples) or 1
    out: list[int] = []
    for i in range(0, len(samples), block):
        out.extend(det.process(samples[i:i + block]))
    out.extend(det.flush())
    return out


def score(ref: np.ndarray, det: list[int], tol: int, lo: int, hi: int
          ) -> tuple[int, int, np.ndarray]:
    """Match every detection to the nearest free reference beat within ``tol``
    (greedy, in time order); count missed references and extra detections
    inside [lo, hi) only.  Returns (missed, extra, offsets of matched beats)."""
    det_arr = np.asarray(det, dtype=np.int64)
    ref_used = np.zeros(len(ref), dtype=bool)
    det_used = np.zeros(len(det_arr), dtype=bool)
    offsets = []
    for j, d in enumerate(det_arr):
        dist = np.abs(ref - d)
        dist[ref_used] = 1 << 40
        i = int(np.argmin(dist)) if len(ref) else 0
        if len(ref) and dist[i] <= tol:
            ref_used[i] = det_used[j] = True
            if lo <= ref[i] < hi:
                offsets.append(int(d - ref[i]))
    in_ref = (ref >= lo) & (ref < hi)
    in_det = (det_arr >= lo) & (det_arr < hi)
    return int(np.sum(in_ref & ~ref_used)), int(np.sum(in_det & ~det_used)), np.asarray(offsets)


# ------------------------------------------------------------------ accuracy


@pytest.mark.parametrize("fs", RATES_HZ)
@pytest.mark.parametrize("hr_bpm", [40, 60, 90, 120, 150, 180])
def test_every_synthetic_beat_found_and_located(fs: int, hr_bpm: int) -> None:
    samples, r_peaks = synthetic(fs, hr_bpm, seed=hr_bpm)
    beats = run(fs, samples, fs)
    # Score from 1 s (the running mean settles on the first beats) to 0.5 s before
    # the end (a QRS cut by the end of the record is not a beat).
    lo, hi = fs, len(samples) - fs // 2
    fn, fp, offsets = score(r_peaks, beats, MATCH_MS * fs // 1000, lo, hi)
    assert fn == 0 and fp == 0, f"{fs} Hz {hr_bpm} bpm: {fn} missed, {fp} extra"
    assert len(offsets) >= (hi - lo) * hr_bpm // (60 * fs) - 1
    # The reported index is the R peak itself: within 2 samples (8 ms at 250 Hz).
    assert np.max(np.abs(offsets)) <= 2, np.unique(offsets, return_counts=True)


@pytest.mark.parametrize("fs", RATES_HZ)
def test_noisy_synthetic_ecg_with_signed_counts(fs: int) -> None:
    """The simulator's signed 16-bit ADC (0 = 0 mV) with 0.1 mV of added noise."""
    samples, r_peaks = synthetic(fs, 75, seed=7, noise_mv=0.1, zero=0)
    beats = run(fs, samples, 97)
    fn, fp, offsets = score(r_peaks, beats, MATCH_MS * fs // 1000, fs, len(samples) - fs // 2)
    assert (fn, fp) == (0, 0)
    assert np.mean(np.abs(offsets) <= 2) >= 0.95


def test_band_pass_is_the_shared_table() -> None:
    for fs in RATES_HZ:
        det = QrsDetector(fs)
        num_stages, coeffs, post_shift = filters.table(fs, "qrs_bandpass")
        assert det._bp.num_stages == num_stages
        assert det._bp.post_shift == post_shift
        assert det._bp._coeffs == [int(c) for c in coeffs]


# ---------------------------------------------------------- streaming rules


@pytest.mark.parametrize("fs", RATES_HZ)
def test_block_size_does_not_change_the_beats(fs: int) -> None:
    samples, _ = synthetic(fs, 95, seed=3, noise_mv=0.08)
    whole = run(fs, samples)
    assert len(whole) > 80
    for block in (1, 7, fs):
        assert run(fs, samples, block) == whole, f"block {block}"
    # array('h') and numpy int16 input give the same beats as a list of ints.
    assert run(fs, array("h", samples), 360) == whole
    assert run(fs, np.asarray(samples, dtype=np.int16), 360) == whole


def test_offset_of_the_input_does_not_matter() -> None:
    fs = 360
    samples, _ = synthetic(fs, 70, seed=5, noise_mv=0.05, zero=0)
    base = run(fs, samples, fs)
    for zero in (1024, -3000, 20000):
        assert run(fs, [v + zero for v in samples], fs) == base


def test_rebasing_sample_times_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    fs = 250
    samples, _ = synthetic(fs, 80, seconds=90, seed=11, noise_mv=0.05)
    expected = run(fs, samples, 100)
    monkeypatch.setattr(qrs_module, "_REBASE_SAMPLES", 3000)
    assert run(fs, samples, 100) == expected
    assert run(fs, samples, 1111) == expected


def test_flush_returns_the_rest_and_process_accepts_empty_blocks() -> None:
    fs = 360
    samples, r_peaks = synthetic(fs, 60, seconds=20, seed=2)
    samples = samples[: int(r_peaks[-2]) + fs // 4]  # ends 250 ms after an R peak
    det = QrsDetector(fs)
    got = det.process(samples)
    assert det.process([]) == []
    rest = det.flush()
    assert rest, "the last beats are still pending when the data ends"
    assert det.flush() == []
    beats = got + rest
    assert beats == sorted(beats)
    assert beats == run(fs, samples, 1000)
    assert abs(beats[-1] - int(r_peaks[-2])) <= 2


@pytest.mark.parametrize("fs", RATES_HZ)
def test_decision_latency_is_bounded(fs: int) -> None:
    samples, r_peaks = synthetic(fs, 60, seconds=60, seed=1)
    x = np.asarray(samples)
    # A pause (3 s flat line) and a beat at a third of its size, found only by
    # search-back, exercise the slow paths.
    x[20 * fs:23 * fs] = x[20 * fs]
    small = int(r_peaks[r_peaks > 40 * fs][0])
    seg = slice(small - fs // 10, small + fs // 10)
    x[seg] = ADC_ZERO + (x[seg] - ADC_ZERO) // 3
    det = QrsDetector(fs)
    latency = {}
    for i, v in enumerate(x.tolist()):  # one sample per call: the return time is exact
        for t in det.process([v]):
            latency[t] = i - t
    bound = det.latency_bound_samples
    assert det.latency_bound_ms == -(-bound * 1000 // fs)
    assert 3000 <= det.latency_bound_ms <= 4500
    assert max(latency.values()) <= bound
    found_late = [t for t in latency if abs(t - small) <= 2]
    assert found_late, "the small beat is found by search-back"
    assert latency[found_late[0]] > fs  # ... at 1.66 RR, not at once
    # Beats after the learning phase that pass the first threshold: ~0.4-0.6 s.
    normal = [v for t, v in latency.items() if t > 3 * fs and abs(t - small) > fs]
    assert max(normal) <= (700 * fs) // 1000


# ------------------------------------------------------ no signal, no beats


@pytest.mark.parametrize("fs", RATES_HZ)
@pytest.mark.parametrize("level", [0, ADC_ZERO, 32767, -32768])
def test_flat_line_and_saturated_rail_give_no_beats(fs: int, level: int) -> None:
    assert run(fs, [level] * (60 * fs), fs) == []


def test_ecg_then_stuck_at_the_rail() -> None:
    fs = 360
    samples, _ = synthetic(fs, 70, seconds=20, seed=4)
    x = samples + [32767] * (30 * fs)
    beats = run(fs, x, fs)
    assert len([b for b in beats if b < 20 * fs]) >= 20
    # At most the step onto the rail itself; nothing during the 30 s at the rail.
    assert len([b for b in beats if b >= 20 * fs - fs // 20]) <= 1
    assert not [b for b in beats if b > 20 * fs + fs // 20]


@pytest.mark.parametrize("fs", RATES_HZ)
@pytest.mark.parametrize("kind", ["white", "qrs-band"])
@pytest.mark.parametrize("std_mv", [0.2, 1.0, 5.0])
def test_noise_alone_gives_almost_no_beats(fs: int, kind: str, std_mv: float) -> None:
    rng = np.random.default_rng(int(std_mv * 10) + fs)
    noise = rng.normal(0.0, 1.0, 60 * fs)
    if kind == "qrs-band":  # the detector's own pass band: the hardest case
        sos = signal.butter(2, [5.0, 15.0], btype="band", fs=fs, output="sos")
        noise = signal.sosfilt(sos, noise)
    noise *= std_mv / np.std(noise)
    counts = np.clip(np.rint(noise * 200) + ADC_ZERO, -32768, 32767).astype(np.int64)
    det = QrsDetector(fs)
    beats = det.process(counts.tolist()) + det.flush()
    # A plain Pan-Tompkins detector finds ~160 "beats" a minute in this noise.
    limit = 3 if kind == "white" else 8
    assert len(beats) <= limit, f"{len(beats)} beats ({det.suppressed} withheld)"


def test_intermediates_stay_small_ints_on_full_scale_input() -> None:
    """MicroPython small ints hold 31 bits: per-sample values stay below 2**30."""
    fs = 360
    rng = np.random.default_rng(0)
    x = rng.integers(-32768, 32768, 20 * fs).tolist()
    x += ([32767] * 7 + [-32768] * 7) * (5 * fs // 14)
    det = QrsDetector(fs)
    det.process(x)
    assert max(det._ring_s) < 1 << 30
    assert max(det._ring_e) * det._w < 1 << 30
    assert max(abs(v) for v in det._ring_f) <= 32768
    assert det._spki < 1 << 30 and det._npki < 1 << 30


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize("fs", [None, 0, 200, 500, 1000, "360", 360.5, True, -360])
def test_missing_or_unsupported_rate_is_rejected(fs) -> None:
    with pytest.raises(ValueError):
        QrsDetector(fs)
    with pytest.raises(ValueError):
        QrsDetector()


@pytest.mark.parametrize("bad", [[1, 2, 3.0], [1, True], [1, "2"], [40000], [-32769], [None]])
def test_bad_samples_are_rejected(bad) -> None:
    det = QrsDetector(360)
    with pytest.raises(ValueError):
        det.process(bad)


def test_a_rejected_block_leaves_the_detector_untouched() -> None:
    fs = 360
    samples, _ = synthetic(fs, 70, seconds=10, seed=9)
    det = QrsDetector(fs)
    out = det.process(samples[:fs])
    with pytest.raises(ValueError):
        det.process([*samples[fs:2 * fs], 1.5])
    for i in range(fs, len(samples), fs):
        out += det.process(samples[i:i + fs])
    assert out + det.flush() == run(fs, samples, fs)


# ---------------------------------------------------------------- MicroPython

MPY_SCRIPT = """
from array import array
from firmware.signal.qrs import QrsDetector
with open("/data/ecg.bin", "rb") as f:
    x = array("h", f.read())
det = QrsDetector(%d)
out = []
for i in range(0, len(x), 97):
    out.extend(det.process(x[i:i + 97]))
out.extend(det.flush())
print(",".join("%%d" %% v for v in out))
print("suppressed", det.suppressed, "clamped", det.clamped)
"""


@pytest.mark.parametrize("fs", RATES_HZ)
def test_micropython_finds_the_same_beats(micropython, fs: int) -> None:
    samples, _ = synthetic(fs, 72, seconds=60, seed=21, noise_mv=0.08)
    x = np.asarray(samples, dtype=np.int64)
    # Some realism: baseline wander and a stretch of heavy noise.
    t = np.arange(len(x)) / fs
    x += np.rint(60 * np.sin(2 * np.pi * 0.3 * t)).astype(np.int64)
    x[30 * fs:33 * fs] += np.random.default_rng(1).integers(-150, 150, 3 * fs)
    blob = x.astype("<i2").tobytes()
    lines = micropython(MPY_SCRIPT % fs, extra_files={"/data/ecg.bin": blob}).splitlines()
    mpy_beats = [int(v) for v in lines[0].split(",")]
    det = QrsDetector(fs)
    cpy_beats = det.process(array("h", blob)) + det.flush()
    assert len(cpy_beats) > 60
    assert mpy_beats == cpy_beats
    assert lines[1] == f"suppressed {det.suppressed} clamped {det.clamped}"


MPY_ALLOC_SCRIPT = """
import gc
from array import array
from firmware.signal.qrs import QrsDetector
with open("/data/ecg.bin", "rb") as f:
    x = array("h", f.read())
blocks = [x[i:i + 360] for i in range(0, len(x), 360)]
det = QrsDetector(360)
for b in blocks[:10]:  # past the learning phase
    det.process(b)
gc.collect()
gc.disable()
before = gc.mem_alloc()
beats = 0
for b in blocks[10:]:
    beats += len(det.process(b))
used = gc.mem_alloc() - before
gc.enable()
print(len(blocks) - 10, beats, used)
"""


def test_micropython_allocates_nothing_per_sample(micropython) -> None:
    """On the board the per-sample path must not touch the heap: what a block
    costs is its result list and one entry per beat, whatever its length."""
    samples, _ = synthetic(360, 75, seconds=30, seed=3, noise_mv=0.05)
    blob = np.asarray(samples, dtype="<i2").tobytes()
    n_blocks, beats, used = map(int, micropython(
        MPY_ALLOC_SCRIPT, extra_files={"/data/ecg.bin": blob}).split())
    assert n_blocks == 20 and beats >= 20
    # 7200 samples; one small int object per sample alone would be ~115 kB.
    assert used < 64 * (n_blocks + beats), used
