"""``make bench``: the rhythm monitor's cost per beat, CPython and MicroPython.

:class:`firmware.rhythm.monitor.RhythmMonitor` on a 30-minute simulated patient
in atrial fibrillation with 8 % PVCs (the simulator's beat schedule,
:mod:`sim.rhythm`, fixed seed), each beat with its true class, ticked once a
second as the device loop does, and with a beat vector whose P region is
unrelated to the last ones (AF's), so the atrial-activity gate
(firmware/rhythm/atrial.py) runs on every beat as on the device: microseconds per
beat (best of 3), in this CPython and inside the MicroPython VM (tests/mpyvm.py,
timed in the VM with ``time.ticks_us``).  Per beat the monitor evaluates the
64-interval AF window (sorted for Dash's trim), so this is the AF detector's cost
too.

    .venv/bin/python -m models.bench_rhythm [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import struct
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FS_HZ = 250
DURATION_S = 1800
REPEATS = 3
SEED = 13
_CODES = {"N": 0, "S": 1, "V": 2, "F": 3, "Q": 4}

# Runs on both interpreters: DATA (bytes of <iB records), CLOCK() in us.
SCRIPT = """
import struct
from array import array
from firmware.rhythm.monitor import RhythmMonitor
from firmware.params import BEAT_CHANNELS, BEAT_WINDOW_POINTS
# 16 beat vectors whose P regions (channel 0, the first 22 points) are unrelated, as
# in AF: the atrial-activity gate runs on every beat, as on the device.
POOL = []
seed = 1
for _ in range(16):
    v = array("b", bytes(BEAT_WINDOW_POINTS * BEAT_CHANNELS))
    for k in range(22):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        v[BEAT_CHANNELS * k] = (seed >> 16) %% 21 - 10
    POOL.append(v)
def run(data, fs, seconds):
    n = len(data) // 5
    mon = RhythmMonitor(fs)
    i = 0
    events = 0
    for sec in range(1, seconds + 1):
        now = sec * fs
        while i < n:
            r, c = struct.unpack_from("<iB", data, 5 * i)
            if r >= now:
                break
            mon.beat(r, c, POOL[i & 15])
            i += 1
        mon.tick(now, 0, -1)
        events += len(mon.take_events())
    return n, events
best = None
for _ in range(%(repeats)d):
    t0 = CLOCK()
    n, events = run(DATA, %(fs)d, %(seconds)d)
    dt = CLOCK() - t0
    best = dt if best is None or dt < best else best
print("RESULT", n, events, best)
"""


def beats_bytes() -> bytes:
    from sim.rhythm import RhythmGenerator, RhythmSettings

    settings = RhythmSettings(heart_rate_bpm=lambda t: 95.0, segments=((0.0, "af"),),
                              pvc_burden_percent=lambda t: 8.0, pvc_couplet_percent=15.0)
    gen = RhythmGenerator(settings, FS_HZ, np.random.default_rng(SEED))
    return b"".join(struct.pack("<iB", b.sample, _CODES[b.aami])
                    for b in gen.beats_until(DURATION_S * FS_HZ))


def _parse(out: str) -> dict:
    for line in out.splitlines():
        if line.startswith("RESULT"):
            _, n, events, us = line.split()
            return {"beats": int(n), "events": int(events), "us_per_beat": int(us) / int(n)}
    raise RuntimeError(f"no result in {out!r}")


def bench() -> dict:
    import contextlib
    import io

    data = beats_bytes()
    script = SCRIPT % {"repeats": REPEATS, "fs": FS_HZ, "seconds": DURATION_S}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(script, "bench_rhythm", "exec"),
             {"DATA": data, "CLOCK": lambda: time.perf_counter_ns() // 1000})
    res = {"cpython": _parse(buf.getvalue())}
    try:
        sys.path.insert(0, str(REPO / "tests"))
        import mpyvm

        out = mpyvm.run_micropython(
            "import time\nCLOCK = time.ticks_us\nDATA = open('/data/beats.bin', 'rb').read()\n"
            + script, extra_files={"/data/beats.bin": data}, timeout_s=600)
        res["micropython"] = _parse(out)
    except Exception as exc:  # VM missing or failing: still report CPython
        res["micropython_error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return res


def print_result(res: dict) -> None:
    c = res["cpython"]
    print(f"Rhythm monitor ({DURATION_S // 60} min simulated AF + 8 % PVCs, {c['beats']} beats, "
          f"{c['events']} events, best of {REPEATS}):")
    print(f"  CPython {platform.python_version()}: {c['us_per_beat']:.0f} us per beat")
    m = res.get("micropython")
    if m:
        print(f"  MicroPython VM (wasm): {m['us_per_beat']:.0f} us per beat "
              f"(events {m['events']})")
    else:
        print(f"  MicroPython VM: not run ({res.get('micropython_error')})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = bench()
    if args.json:
        print(json.dumps({"rhythm_monitor": res}, indent=2))
    else:
        print_result(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
