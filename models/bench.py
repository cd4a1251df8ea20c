"""``make bench``: throughput of the device's ECG chain, CPython and MicroPython.

Runs exactly the device code on 5 minutes of simulator ECG at 360 Hz (raw ADC
counts at ``firmware.params.ECG_COUNTS_PER_MV``, fixed seed, so it runs on a
fresh clone), fed in blocks of one second as the device loop does:

- ``EcgFilterChain + QrsDetector``: the filter chain and the beat detector
  side by side on each raw block (the detector takes raw counts, contract 2;
  the chain's output feeds the beat classifier);
- ``QrsDetector`` alone;
- ``EcgFilterChain`` alone;
- ``SignalQuality`` alone;
- ``ECG device loop`` (250 Hz): what the device runs per ECG block today
  without a model: ``SignalQuality`` + ``QrsDetector`` + ``HeartRate``, one
  heart rate per second;
- ``Multi-sensor loop`` (ECG 250 Hz + PPG 100 Hz + temperature): the same
  plus :class:`firmware.vitals.monitor.VitalSigns` (ECG respiratory
  modulations, HRV, a red/IR PPG at 100 Hz through the pulse oximeter, a
  thermometer read once a second, and every second the vitals report:
  pulse, SpO2, and every 8 s the fused respiratory rate and HRV).  The PPG is
  an integer waveform made inside the benchmark (both interpreters run it).

For each it reports samples per second and the multiple of real time
(samples/s / 360), best of 3 runs, one core: in this CPython, and inside the
real MicroPython VM (WebAssembly port run by Node.js, tests/mpyvm.py), timed
inside the VM with ``time.ticks_ms``.  The VM's start-up (Node + WebAssembly
load + copying firmware/ in) is measured separately, by wall clock around an
empty script.

The simulated fleet against a real broker is ``host/bench_fleet.py`` (``make
bench`` runs both: a fleet benchmark needs the broker launcher, which is host code).

    .venv/bin/python -m models.bench [--duration-s 300] [--skip-micropython] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from array import array
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FS_HZ = 360
MAINS_HZ = 50
HEART_RATE_BPM = 75.0
SEED = 20240
REPEATS = 3

STAGES = ("chain+qrs", "qrs", "chain", "quality", "ecg-loop", "vitals-loop")
STAGE_NAMES = {
    "chain+qrs": "EcgFilterChain + QrsDetector",
    "qrs": "QrsDetector",
    "chain": "EcgFilterChain",
    "quality": "SignalQuality",
    "ecg-loop": "ECG device loop (250 Hz)",
    "vitals-loop": "Multi-sensor loop (ECG+PPG+T)",
}
#: ECG rate per stage (default FS_HZ): the device loops run at 250 Hz.
STAGE_FS = {"ecg-loop": 250, "vitals-loop": 250}

# The same code runs in both interpreters: it only uses what MicroPython has
# (the front end's scale and rails from the device's own firmware.params).
# ``make(stage)`` returns a function that consumes one block.
STAGE_CODE = """
class _Ppg:
    # 100 Hz red/IR: triangle pulses at 75 /min, breathing 15 /min on the
    # baseline and the amplitude (integers only: the same in both interpreters).
    sample_rate_hz = 100
    full_scale_count = 262143
    overflows = 0

    def __init__(self):
        self.t = 0
        self.owed = 0

    def read_ppg(self, red, ir, max_count):
        n = self.owed if self.owed < max_count else max_count
        t = self.t
        for i in range(n):
            ph = t % 80
            br = t % 400
            tri = 200 - br if br < 200 else br - 200
            pulse = (ph * 25 if ph < 8 else (80 - ph) * 200 // 72) * (800 + tri) // 1000
            ir[i] = 120000 + 3 * tri - pulse * 12
            red[i] = 95000 + 2 * tri - pulse * 57
            t += 1
        self.t = t
        self.owed -= n
        return n


class _Thermo:
    def read_temperature_mc(self):
        return 36870


def _loop(fs, with_vitals):
    from firmware.params import ECG_ADC_MAX_COUNT, ECG_ADC_MIN_COUNT, ECG_COUNTS_PER_MV
    from firmware.signal.qrs import QrsDetector
    from firmware.signal.quality import SIGNAL_GOOD, SignalQuality
    from firmware.vitals.heartrate import HeartRate
    q = SignalQuality(fs, ECG_ADC_MIN_COUNT, ECG_ADC_MAX_COUNT, ECG_COUNTS_PER_MV)
    det = QrsDetector(fs)
    hr = HeartRate(fs, 3 * fs)
    vit = ppg = None
    if with_vitals:
        from firmware.vitals.monitor import VitalSigns
        ppg = _Ppg()
        vit = VitalSigns(fs, ppg=ppg, thermometer=_Thermo(), temp_period_ms=1000)
    state = [0]

    def step(block):
        n = len(block)
        q.process(block, n)
        if vit is not None:
            vit.ecg(block, n)
        for r in det.process(block):
            hr.beat(r)
            if vit is not None:
                vit.beat(r)
        state[0] += n
        bpm = hr.bpm(state[0], q.flag == SIGNAL_GOOD)
        if vit is not None:
            ppg.owed += 100 * n // fs
            vit.poll()
            msg = {"hr_bpm": bpm}
            vit.report(msg, bpm)
        return bpm
    return step


def make(stage, fs, mains_hz):
    if stage == "ecg-loop":
        return _loop(fs, False)
    if stage == "vitals-loop":
        return _loop(fs, True)
    if stage == "quality":
        from firmware.params import ECG_ADC_MAX_COUNT, ECG_ADC_MIN_COUNT, ECG_COUNTS_PER_MV
        from firmware.signal.quality import SignalQuality
        q = SignalQuality(fs, ECG_ADC_MIN_COUNT, ECG_ADC_MAX_COUNT, ECG_COUNTS_PER_MV)
        return q.process
    if stage == "qrs":
        from firmware.signal.qrs import QrsDetector
        return QrsDetector(fs).process
    from firmware.signal.ecgfilter import EcgFilterChain
    chain = EcgFilterChain(fs, mains_hz)
    if stage == "chain":
        return chain.process
    from firmware.signal.qrs import QrsDetector
    det = QrsDetector(fs)
    def both(block):
        chain.process(block)
        return det.process(block)
    return both
"""

#: Appended to STAGE_CODE (which is not %-formatted) for the VM run.
MPY_SCRIPT = """
import time
from array import array
datasets = {}
for fs in %(rates)r:
    with open("/data/ecg%%d.bin" %% fs, "rb") as f:
        raw = f.read()
    data = array("h", raw)
    del raw
    datasets[fs] = (data, [data[i:i + fs] for i in range(0, len(data), fs)])
for stage in %(stages)r:
    fs = %(stage_fs)r.get(stage, %(fs)d)
    data, blocks = datasets[fs]
    best = -1
    err = None
    for _ in range(%(repeats)d):
        try:
            step = make(stage, fs, %(mains)d)
        except Exception as exc:
            err = "%%s: %%s" %% (type(exc).__name__, exc)
            break
        t0 = time.ticks_ms()
        for b in blocks:
            step(b)
        ms = time.ticks_diff(time.ticks_ms(), t0)
        if best < 0 or ms < best:
            best = ms
    if err is None:
        print("RESULT %%s %%d %%d" %% (stage, len(data), best))
    else:
        print("ERROR %%s %%s" %% (stage, err))
"""


def ecg_counts(duration_s: float, fs_hz: int = FS_HZ) -> np.ndarray:
    from sim.adc import mv_to_counts
    from sim.ecgsyn import EcgsynParams, ecgsyn

    params = EcgsynParams(sample_rate_hz=fs_hz, heart_rate_mean_bpm=HEART_RATE_BPM)
    return mv_to_counts(ecgsyn(duration_s, params, np.random.default_rng(SEED)).signal_mv)


def _make_stage() -> Callable[[str, int, int], Callable[[Any], Any]]:
    namespace: dict[str, Any] = {}
    exec(compile(STAGE_CODE, "<bench stages>", "exec"), namespace)
    return namespace["make"]


def _rates() -> list[int]:
    return sorted({FS_HZ, *STAGE_FS.values()})


def bench_cpython(counts: np.ndarray,
                  others: dict[int, np.ndarray] | None = None) -> dict[str, dict[str, Any]]:
    make = _make_stage()
    by_fs = {FS_HZ: counts, **(others or {})}
    results: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        fs = STAGE_FS.get(stage, FS_HZ)
        data = array("h", by_fs[fs].tobytes())
        blocks = [data[i : i + fs] for i in range(0, len(data), fs)]
        best = None
        try:
            for _ in range(REPEATS):
                step = make(stage, fs, MAINS_HZ)
                t0 = time.perf_counter()
                for b in blocks:
                    step(b)
                dt = time.perf_counter() - t0
                best = dt if best is None else min(best, dt)
        except (ImportError, AttributeError) as exc:
            results[stage] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        results[stage] = _figures(len(data), best or 1e-9, fs)
    return results


def _figures(samples: int, seconds: float, fs_hz: int = FS_HZ) -> dict[str, Any]:
    seconds = max(seconds, 1e-6)
    rate = samples / seconds
    return {"samples": samples, "seconds": seconds, "samples_per_s": rate,
            "x_real_time": rate / fs_hz}


def _load_mpyvm() -> Any:
    spec = importlib.util.spec_from_file_location("mpyvm", REPO / "tests" / "mpyvm.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("tests/mpyvm.py not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mpyvm"] = module
    spec.loader.exec_module(module)
    return module


def bench_micropython(counts: np.ndarray, others: dict[int, np.ndarray] | None = None
                      ) -> tuple[dict[str, dict[str, Any]], float]:
    mpyvm = _load_mpyvm()
    startup = None
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        mpyvm.run_micropython("pass")
        dt = time.perf_counter() - t0
        startup = dt if startup is None else min(startup, dt)
    by_fs = {FS_HZ: counts, **(others or {})}
    script = STAGE_CODE + MPY_SCRIPT % {
        "fs": FS_HZ, "stages": STAGES, "repeats": REPEATS, "mains": MAINS_HZ,
        "rates": sorted(by_fs), "stage_fs": STAGE_FS}
    files = {f"/data/ecg{fs}.bin": c.astype("<i2").tobytes() for fs, c in by_fs.items()}
    out = mpyvm.run_micropython(script, extra_files=files, timeout_s=1800)
    results: dict[str, dict[str, Any]] = {}
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if parts[0] == "RESULT":
            stage, samples, ms = line.split()[1:]
            results[stage] = _figures(int(samples), int(ms) / 1000, STAGE_FS.get(stage, FS_HZ))
        elif parts[0] == "ERROR":
            results[parts[1]] = {"error": parts[2]}
    return results, startup or 0.0


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return f"{'-':>12} {'-':>9}"
    if "error" in r:
        return f"{'n/a':>12} {'':>9}"
    return f"{r['samples_per_s']:>12,.0f} {r['x_real_time']:>8.1f}x"


def print_table(duration_s: float, n: int, cpy: dict, mpy: dict | None,
                startup_s: float | None, mpy_error: str | None) -> None:
    print(f"medge bench: {duration_s:g} s of simulator ECG at {FS_HZ} Hz ({n} samples), "
          f"blocks of {FS_HZ} samples, best of {REPEATS}, one core")
    cpy_label = f"CPython {platform.python_version()}"
    mpy_label = "MicroPython VM (wasm)"
    print(f"{'stage':<30} {cpy_label:>22} {mpy_label:>22}")
    print(f"{'':<30} {'samples/s':>12} {'x real':>9} {'samples/s':>12} {'x real':>9}")
    for stage in STAGES:
        m = None if mpy is None else mpy.get(stage)
        print(f"{STAGE_NAMES[stage]:<30} {_cell(cpy.get(stage))} {_cell(m)}")
    for stage in STAGES:
        for where, res in (("CPython", cpy), ("MicroPython", mpy or {})):
            if "error" in res.get(stage, {}):
                print(f"  {STAGE_NAMES[stage]} on {where}: {res[stage]['error']}")
    if startup_s is not None:
        print(f"MicroPython VM start-up (Node + wasm + firmware/ copy, wall clock, "
              f"best of {REPEATS}): {startup_s:.2f} s, not included above")
    if mpy_error:
        print(f"MicroPython VM: not run ({mpy_error})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=300.0,
                        help="seconds of ECG (300)")
    parser.add_argument("--skip-micropython", action="store_true")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    counts = ecg_counts(args.duration_s)
    others = {fs: ecg_counts(args.duration_s, fs) for fs in _rates() if fs != FS_HZ}
    cpy = bench_cpython(counts, others)
    mpy = None
    startup = None
    mpy_error = None
    if not args.skip_micropython:
        try:
            mpy, startup = bench_micropython(counts, others)
        except Exception as exc:  # VM missing or failing: still report CPython
            mpy_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    if args.json:
        print(json.dumps({"fs_hz": FS_HZ, "duration_s": args.duration_s,
                          "samples": len(counts), "repeats": REPEATS, "cpython": cpy,
                          "micropython": mpy, "micropython_startup_s": startup,
                          "micropython_error": mpy_error}, indent=2))
    else:
        print_table(args.duration_s, len(counts), cpy, mpy, startup, mpy_error)
    model = REPO / "models" / "beatnet.tflite"
    if model.exists():  # the beat classifier per beat, on every runtime here
        from models import bench_tflite

        res = bench_tflite.bench(model)
        if not args.skip_micropython:  # the engine per beat inside the VM too
            bench_tflite.add_micropython(res, model)
        if args.json:
            print(json.dumps({"beat_model": res}, indent=2))
        else:
            print()
            bench_tflite.print_result(res)
    from models import bench_rhythm  # the rhythm monitor per beat (firmware/rhythm)

    rres = bench_rhythm.bench()
    if args.json:
        print(json.dumps({"rhythm_monitor": rres}, indent=2))
    else:
        print()
        bench_rhythm.print_result(rres)
    return 0


if __name__ == "__main__":
    sys.exit(main())
