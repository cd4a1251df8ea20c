"""The rhythm code gives identical events on CPython and in the MicroPython VM
(issue 13 acceptance): a 10-minute simulated patient in atrial fibrillation
with PVCs (the simulator's beat schedule, sim/rhythm.py: AF with log-normal
RR, 8 % PVCs with couplets and bigeminy, a VT run and a pause event in a
sinus stretch), each beat with its true class, through
:class:`firmware.rhythm.monitor.RhythmMonitor`, ticked once a second with a
20 s lead-off stretch; every event (kind, phase, start, end, evidence)
compared."""

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

SCRIPT = """
import struct
from firmware.rhythm.monitor import RhythmMonitor
from firmware.signal.quality import CODE_GOOD, CODE_LEAD_OFF
data = open(PATH, "rb").read()
n = len(data) // 5
mon = RhythmMonitor(250)
out = []
i = 0
last = -1
for sec in range(1, 601):
    now = sec * 250
    code = CODE_LEAD_OFF if 400 <= sec < 420 else CODE_GOOD
    while i < n:
        r, c = struct.unpack_from("<iB", data, 5 * i)
        if r >= now:
            break
        if code == CODE_GOOD:
            mon.beat(r, c if c < 5 else -1)
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
    return b"".join(struct.pack("<iB", b.sample, CLASS_CODES[b.aami]) for b in beats)


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
    lines = cpython.splitlines()
    kinds = {eval(line)[0] for line in lines[1:]}
    # The run must contain what it is meant to compare.
    assert {"AFIB", "VT", "PAUSE", "SIGNAL", "BURDEN"} <= kinds, kinds
    assert vm == cpython
