"""sim.rhythm: beat schedule, AF irregularity, ECGSYN rendering, R-peak placement."""

from __future__ import annotations

import numpy as np
import pytest

from sim.ecgsyn import EcgsynParams, ecgsyn
from sim.rhythm import (
    AF_NRMSSD_RANGE,
    AF_NRMSSD_THRESHOLD,
    IRREGULARITY_WINDOW_BEATS,
    MORPHOLOGIES,
    EcgRenderer,
    RhythmEvent,
    RhythmGenerator,
    RhythmSettings,
    rr_irregularity,
    turning_point_ratio,
)


def beats(settings: RhythmSettings, seconds: float, fs: int = 250, seed: int = 1):
    return RhythmGenerator(settings, fs, np.random.default_rng(seed)).beats_until(
        round(seconds * fs))


def windows(rr: np.ndarray) -> list[np.ndarray]:
    w = IRREGULARITY_WINDOW_BEATS
    return [rr[i : i + w] for i in range(0, rr.size - w + 1, w)]


@pytest.mark.parametrize("seed", range(4))
def test_af_rr_irregularity_is_in_the_real_af_range_and_sinus_is_not(seed: int) -> None:
    for hr in (70.0, 110.0):
        af = beats(RhythmSettings(heart_rate_bpm=lambda t, h=hr: h, segments=((0.0, "af"),)),
                   600, seed=seed)
        rr = np.diff([b.sample for b in af]) / 250
        assert all(b.rhythm == "AFIB" and b.morphology == "normal_no_p" for b in af)
        for w in windows(rr):
            assert AF_NRMSSD_RANGE[0] <= rr_irregularity(w) <= AF_NRMSSD_RANGE[1]
            assert 0.5 <= turning_point_ratio(w) <= 0.8
        sinus = beats(RhythmSettings(heart_rate_bpm=lambda t, h=hr: h, hrv_std_bpm=3.0),
                      600, seed=seed)
        rr = np.diff([b.sample for b in sinus]) / 250
        for w in windows(rr):
            assert rr_irregularity(w) < AF_NRMSSD_THRESHOLD
        assert 60 / rr.mean() == pytest.approx(hr, rel=0.03)


def test_pvc_has_a_full_compensatory_pause_and_pac_does_not() -> None:
    hr = 60.0
    s = RhythmSettings(heart_rate_bpm=lambda t: hr, hrv_std_bpm=0.0,
                       pvc_burden_percent=lambda t: 8.0, pac_burden_percent=lambda t: 8.0,
                       pvc_couplet_percent=0.0, pvc_bigeminy_percent=0.0,
                       pvc_fusion_percent=0.0)
    b = beats(s, 1200)
    t = np.array([x.sample for x in b]) / 250
    cls = [x.aami for x in b]
    n_v = n_s = 0
    for i in range(1, len(b) - 1):
        if cls[i - 1] != "N" or cls[i + 1] != "N":
            continue
        span = t[i + 1] - t[i - 1]
        if cls[i] == "V":
            n_v += 1
            assert span == pytest.approx(2.0, abs=0.01)  # coupling + pause = 2 RR
            assert t[i] - t[i - 1] < 0.8
            assert b[i].morphology.startswith("pvc") and b[i].pulse < 0.6
        elif cls[i] == "S":
            n_s += 1
            assert span < 1.9  # the PAC resets the sinus node
            assert b[i].morphology == "pac"
    assert n_v > 20 and n_s > 20


def test_events_vt_run_pause_and_asystole() -> None:
    s = RhythmSettings(heart_rate_bpm=lambda t: 70.0, events=(
        RhythmEvent(60.0, "vt_run", beats=10, rate_bpm=180.0),
        RhythmEvent(120.0, "pause", duration_s=3.0),
        RhythmEvent(180.0, "asystole", duration_s=8.0),
    ))
    b = beats(s, 240)
    vt = [x for x in b if x.rhythm == "VT"]
    assert len(vt) == 10 and all(x.aami == "V" for x in vt)
    rr = np.diff([x.sample for x in vt]) / 250
    assert 60 / rr.mean() == pytest.approx(180, rel=0.05)
    pause = [x for x in b if x.rhythm == "PAUSE"]
    assert len(pause) == 1 and pause[0].rr_prev_s == pytest.approx(3.0, abs=0.01)
    asys = [x for x in b if x.rhythm == "ASYSTOLE"]
    assert len(asys) == 1 and asys[0].rr_prev_s >= 8.0


def test_renderer_reproduces_ecgsyn() -> None:
    """Constant rate, no HRV or wander: the per-beat Gaussian rendering is the ECGSYN
    solution up to the affine mV map."""
    fs = 250
    for hr in (60.0, 120.0):
        p = EcgsynParams(sample_rate_hz=fs, heart_rate_mean_bpm=hr, heart_rate_std_bpm=0.0,
                         baseline_wander_mv=0.0)
        ref = ecgsyn(20, p, np.random.default_rng(0))
        r = EcgRenderer(fs, align_peaks=False)
        for k in ref.r_peaks:
            r.add_beat(int(k), "normal", hr)
        z = r.take(20 * fs)
        a, b = 8 * fs, 19 * fs  # after the start transient, before the last P wave
        design = np.column_stack([z[a:b], np.ones(b - a)])
        coef, *_ = np.linalg.lstsq(design, ref.signal_mv[a:b], rcond=None)
        assert np.abs(design @ coef - ref.signal_mv[a:b]).max() < 0.01  # mV, of 1.6 p-p


@pytest.mark.parametrize("fs", [250, 360])
@pytest.mark.parametrize("morph", sorted(MORPHOLOGIES))
def test_recorded_r_sample_is_the_rendered_extremum(fs: int, morph: str) -> None:
    r = EcgRenderer(fs)
    for rate in (45.0, 75.0, 160.0):
        g, pre = r.template(morph, rate)
        w = round(0.06 * fs)
        near = g[pre - w : pre + w + 1]
        assert abs(int(np.argmax(np.abs(near))) - w) <= 1
    # In a rendered stream (low-pass term included) too.
    renderer = EcgRenderer(fs)
    samples = [fs * (k + 1) for k in range(8)]
    for s in samples:
        renderer.add_beat(s, morph, 60.0)
    z = renderer.take(10 * fs)
    w = round(0.06 * fs)
    for s in samples:
        seg = z[s - w : s + w + 1] - np.median(z[s - fs // 2 : s + fs // 2])
        assert abs(int(np.argmax(np.abs(seg))) - w) <= 1


def test_same_seed_same_beats() -> None:
    s = RhythmSettings(heart_rate_bpm=lambda t: 80.0, pvc_burden_percent=lambda t: 5.0,
                       segments=((0.0, "sinus"), (120.0, "af")), vt_runs_per_hour=30)
    assert beats(s, 300, seed=5) == beats(s, 300, seed=5)
    assert beats(s, 300, seed=5) != beats(s, 300, seed=6)
