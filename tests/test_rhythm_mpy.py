"""The rhythm code gives identical events on CPython and in the MicroPython VM
(issue 13 acceptance): a 10-minute simulated patient in atrial fibrillation
with PVCs (the simulator's beat schedule, sim/rhythm.py: AF with log-normal
RR, 8 % PVCs with couplets and bigeminy, a VT run and a pause event in a
sinus stretch), each beat with its true class, through
:class:`firmware.rhythm.monitor.RhythmMonitor`, ticked once a second with a
20 s lead-off stretch; every event (kind, phase, start, end, evidence)
compared.  Each beat also carries a classifier input vector whose P region
follows its morphology (:func:`beat_vector`: a P wave of one shape at one
place before sinus beats, an inverted one before PACs, none before PVCs,
f waves of random phase in AF), so the atrial-activity code
(``firmware.rhythm.atrial``) runs on both platforms too."""

from __future__ import annotations

import contextlib
import io
import struct

import numpy as np

from sim.rhythm import RhythmEvent, RhythmGenerator, RhythmSettings
from tests.mpyvm import run_micropython

FS = 250
DURATION_S = 600
CLASS_CODES = {"N": 0, "S": 1, "V": 2, "F": 3, "Q": 4}
VEC = 180  # classifier input: 90 points x 2 channels, int8
REC = 5 + VEC  # bytes per beat: R sample, class, vector

SCRIPT = f"REC = {REC}\n" + """
import struct
from array import array
from firmware.rhythm.monitor import RhythmMonitor
from firmware.signal.quality import CODE_GOOD, CODE_LEAD_OFF
data = open(PATH, "rb").read()
n = len(data) // REC
mon = RhythmMonitor(250)
out = []
i = 0
last = -1
for sec in range(1, 601):
    now = sec * 250
    code = CODE_LEAD_OFF if 400 <= sec < 420 else CODE_GOOD
    while i < n:
        r, c = struct.unpack_from("<iB", data, REC * i)
        if r >= now:
            break
        if code == CODE_GOOD:
            mon.beat(r, c if c < 5 else -1, array("b", data[REC * i + 5:REC * (i + 1)]))
            last = r
        i += 1
    mon.tick(now, code, last)
    for e in mon.take_events():
        out.append(repr(e.as_tuple()))
mon.flush(600 * 250)
for e in mon.take_events():
    out.append(repr(e.as_tuple()))
print(len(out))
for line in out:
    print(line)
# The atrial statistic and the offset dating on every beat's vector.
from firmware.rhythm.atrial import AtrialActivity
atrial = AtrialActivity()
stats = []
for i in range(n):
    r = struct.unpack_from("<i", data, REC * i)[0]
    atrial.beat(r, array("b", data[REC * i + 5:REC * (i + 1)]))
    stats.append("%d %d" % (atrial.coherence, atrial.last_incoherent() if i % 8 == 0 else -2))
print(" ".join(stats))
"""


def beats_bytes() -> bytes:
    settings = RhythmSettings(
        heart_rate_bpm=lambda t: 95.0,
        segments=((0.0, "af"), (420.0, "sinus"), (480.0, "af")),
        af_rr_cv=0.2,
        pvc_burden_percent=lambda t: 8.0,
        pvc_couplet_percent=15.0,
        pvc_bigeminy_percent=10.0,
        events=(RhythmEvent(440.0, "vt_run", beats=8, rate_bpm=170.0),
                RhythmEvent(455.0, "pause", duration_s=2.8)),
    )
    gen = RhythmGenerator(settings, FS, np.random.default_rng(13))
    beats = gen.beats_until(DURATION_S * FS)
    rng = np.random.default_rng(14)
    return b"".join(struct.pack("<iB", b.sample, CLASS_CODES[b.aami])
                    + beat_vector(b.morphology, b.rhythm, rng) for b in beats)


def beat_vector(morphology: str, rhythm: str, rng: np.random.Generator) -> bytes:
    """Channel 0 of a classifier input (8.33 ms bins from -250 ms, 32 = the
    QRS) with the atrial activity of the beat's morphology, plus a QRS at
    bin 30; channel 1 zero."""
    k = np.arange(90)
    ch0 = 32.0 * np.exp(-0.5 * ((k - 30) / 2.0) ** 2) + rng.normal(0.0, 1.0, 90)
    p_wave = 5.0 * np.exp(-0.5 * ((k - 12) / 3.0) ** 2)
    if rhythm == "AFIB":
        ch0 += 3.0 * np.sin(2 * np.pi * k / 20.0 + rng.uniform(0, 2 * np.pi))
    elif morphology == "pac":
        ch0 -= p_wave
    elif morphology.startswith("normal") and "no_p" not in morphology:
        ch0 += p_wave
    vec = np.zeros(VEC, dtype=np.int8)
    vec[0::2] = np.clip(np.rint(ch0), -128, 127).astype(np.int8)
    return vec.tobytes()


def test_rhythm_events_identical_on_cpython_and_micropython(tmp_path):
    data = beats_bytes()
    path = tmp_path / "beats.bin"
    path.write_bytes(data)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(f"PATH = {str(path)!r}\n" + SCRIPT, "rhythm_script", "exec"), {})
    cpython = buf.getvalue()
    vm = run_micropython('PATH = "/data/beats.bin"\n' + SCRIPT,
                         extra_files={"/data/beats.bin": data}, timeout_s=300)
    lines = cpython.splitlines()[:-1]
    stats = cpython.splitlines()[-1].split()
    kinds = {eval(line)[0] for line in lines[1:]}
    # The run must contain what it is meant to compare.
    assert {"AFIB", "VT", "PAUSE", "SIGNAL", "BURDEN"} <= kinds, kinds
    # ... and AF decided with the atrial evidence (a coherence was measured).
    af = [dict(eval(line)[4]) for line in lines[1:] if eval(line)[0] == "AFIB"]
    assert af and all(e["p_coherence_permille"] >= 0 for e in af), af
    # The atrial statistic went both ways and dated offsets (sinus P waves
    # after AF's f waves: a beat not matching the window's sum).
    coh = [int(x) for x in stats[0::2]]
    assert min(c for c in coh if c >= 0) < 350 < 500 < max(coh)
    assert any(int(x) >= 0 for x in stats[1::2])
    assert vm == cpython
