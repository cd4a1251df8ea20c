"""Beat features (firmware/signal/beats.py) and the beat pipeline (firmware/signal/beatpipe.py).

The window layout at both rates, RR features that say "as usual" for a regular
rhythm and "premature" for an early beat, identical features for any block
size and inside the real MicroPython VM, and the argument checks.
"""

from __future__ import annotations

import numpy as np
import pytest

from firmware.params import BEAT_CHANNELS, BEAT_WINDOW_POINTS, RR_FEATURES
from firmware.signal.beatpipe import BeatPipeline
from firmware.signal.beats import BeatFeatures
from models.dataset import Variant, record_beats, run_pipeline
from sim.ecgsyn import EcgsynParams, ecgsyn
from sim.sources import mv_to_counts

MITDB = "tests/data/mitdb"


def synthetic_counts(fs: int, seconds: float, hr: float = 70, seed: int = 3) -> np.ndarray:
    sig = ecgsyn(seconds, EcgsynParams(sample_rate_hz=fs, heart_rate_mean_bpm=hr),
                 np.random.default_rng(seed))
    return mv_to_counts(sig.signal_mv).astype(np.int64)


@pytest.mark.parametrize("fs", [250, 360])
def test_window_bins_cover_750_ms_at_every_rate(fs):
    f = BeatFeatures(fs)
    edges = list(f._edges)
    widths = [b - a for a, b in zip(edges, edges[1:])]
    assert len(widths) == BEAT_WINDOW_POINTS
    assert edges[0] == -(250 * fs) // 1000
    assert edges[-1] == (500 * fs) // 1000
    if fs == 360:
        assert set(widths) == {3}
    else:
        assert set(widths) <= {2, 3}


def test_missing_or_bad_rate_is_a_value_error():
    with pytest.raises(ValueError, match="fs_hz is required"):
        BeatFeatures()
    with pytest.raises(ValueError):
        BeatFeatures(500)
    with pytest.raises(ValueError, match="mains_hz"):
        BeatPipeline(360, None)


def test_regular_rhythm_reads_as_usual_and_a_premature_beat_as_early():
    fs = 360
    f = BeatFeatures(fs)
    ramp = [((i % fs) - 180) * 20 for i in range(fs * 60)]  # any signal will do
    f.push(ramp, len(ramp))
    peaks = [i * 288 for i in range(1, 60)]  # 0.8 s: 75 bpm
    peaks[30] -= 100  # beat 30 comes 278 ms early
    got = {}
    for p in peaks:
        f.add_peak(p)
        while (r := f.next_beat()) is not None:
            got[r] = bytes(f.rr)
    rr = {r: np.frombuffer(v, dtype=np.int8) for r, v in got.items()}
    usual = rr[peaks[20]]
    assert np.all(np.abs(usual[:8]) <= 1) and usual[12] == 0, usual  # as usual, regular
    early = rr[peaks[30]]
    assert early[0] < -20 and early[2] < -20  # pre-RR well below the local and long means
    assert early[1] > 20  # the pause after it
    assert early[5] < -30  # pre/post
    after = rr[peaks[33]]
    assert after[7] > 10 and after[12] > 10  # the early beat makes the rhythm irregular
    assert f.beats == len(peaks) - 1  # the last one waits for its post-RR
    assert f.dropped == 0
    f.flush()
    assert f.next_beat() == peaks[-1]


@pytest.mark.parametrize("fs", [250, 360])
def test_same_features_for_any_block_size(fs):
    counts = synthetic_counts(fs, 40)
    ref = run_pipeline(counts, fs, block=fs)
    assert len(ref[0]) >= 40
    for block in (1, 7, 1000):
        got = run_pipeline(counts, fs, block=block)
        for a, b in zip(ref, got):
            np.testing.assert_array_equal(a, b)


def test_features_of_a_recorded_excerpt_are_labelled_and_sane():
    b = record_beats(MITDB, "208", Variant("clean"))
    assert b.beat.shape == (len(b.r), BEAT_WINDOW_POINTS * BEAT_CHANNELS)
    assert b.rr.shape == (len(b.r), RR_FEATURES)
    counts = np.bincount(b.label[b.label >= 0], minlength=5)
    assert counts[0] > 10 and counts[2] > 5  # 208 has normal and ventricular beats
    beat = b.beat.reshape(len(b.r), BEAT_WINDOW_POINTS, BEAT_CHANNELS)[:, :, 0].astype(int)
    normal = beat[b.label == 0][5:]
    # The R peak (bin 30, 250 ms in) is the largest point of a normal beat,
    # about BEAT_AMPLITUDE_Q (32) after the patient's own normalisation.
    peak_bin = np.argmax(np.abs(normal), axis=1)
    assert np.median(np.abs(peak_bin - 30)) <= 1
    assert 20 <= np.median(np.abs(normal).max(axis=1)) <= 48


SCRIPT = """
from array import array
from firmware.signal.beatpipe import BeatPipeline
pipe = BeatPipeline(%(fs)d, 50, 0)
with open("/ecg.bin", "rb") as f:
    data = array("h", f.read())
out = []
def drain(n):
    for _ in range(n):
        r = pipe.next_beat()
        out.append("%%d %%s %%s" %% (r, list(pipe.features.beat), list(pipe.features.rr)))
for i in range(0, len(data), 97):
    drain(pipe.process(data[i:i + 97]))
drain(pipe.flush())
print("\\n".join(out))
"""


def test_micropython_vm_gives_the_same_features(micropython, tmp_path):
    fs = 250
    data = synthetic_counts(fs, 60, hr=95).astype("<i2").tobytes()
    script = SCRIPT % {"fs": fs}
    got = micropython(script, extra_files={"/ecg.bin": data})
    local = tmp_path / "ecg.bin"
    local.write_bytes(data)
    script = script.replace('"/ecg.bin"', repr(str(local)))
    ns: dict = {}
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(script, "<beats>", "exec"), ns)
    assert got == buf.getvalue()
    assert got.count("\n") >= 90
