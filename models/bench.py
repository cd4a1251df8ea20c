"""``make bench``: throughput of the device's ECG chain, CPython and MicroPython.

Runs exactly the device code on 5 minutes of simulator ECG at 360 Hz (raw ADC
counts at ``firmware.params.ECG_COUNTS_PER_MV``, fixed seed, so it runs on a
fresh clone), fed in blocks of one second as the device loop does:

- ``EcgFilterChain + QrsDetector``: the filter chain and the beat detector
  side by side on each raw block (the detector takes raw counts, contract 2;
  the chain's output feeds the beat classifier);
- ``QrsDetector`` alone;
- ``EcgFilterChain`` alone;
- ``SignalQuality`` alone.

For each it reports samples per second and the multiple of real time
(samples/s / 360), best of 3 runs, one core: in this CPython, and inside the
real MicroPython VM (WebAssembly port run by Node.js, tests/mpyvm.py), timed
inside the VM with ``time.ticks_ms``.  The VM's start-up (Node + WebAssembly
load + copying firmware/ in) is measured separately, by wall clock around an
empty script.

Then the simulated fleet (``sim.fleet``, docs/simulator.md), each device the
real firmware loop on its own virtual patient, against a real mosquitto
broker started here (the in-memory link when mosquitto is missing: said so):

- 500 devices at speed 1 for ``--fleet-wall-s`` (25) simulated seconds,
  direct sensor path, then 10 s on the ADS1292R SPI path: process CPU seconds per
  wall second (all threads, including paho's), the share of this machine's
  cores, the broker's CPU, and simulated seconds per wall second (>= 1.0:
  kept up with real time);
- 10 devices x 1 simulated hour, as fast as it goes: the wall time (target
  <= 60 s).

    .venv/bin/python -m models.bench [--duration-s 300] [--skip-micropython] [--json]
        [--skip-fleet] [--fleet-devices 500] [--fleet-wall-s 25]
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

STAGES = ("chain+qrs", "qrs", "chain", "quality")
STAGE_NAMES = {
    "chain+qrs": "EcgFilterChain + QrsDetector",
    "qrs": "QrsDetector",
    "chain": "EcgFilterChain",
    "quality": "SignalQuality",
}

# The same code runs in both interpreters: it only uses what MicroPython has
# (the front end's scale and rails from the device's own firmware.params).
# ``make(stage)`` returns a function that consumes one block.
STAGE_CODE = """
def make(stage, fs, mains_hz):
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

MPY_SCRIPT = STAGE_CODE + """
import time
from array import array
with open("/data/ecg.bin", "rb") as f:
    raw = f.read()
data = array("h", raw)
del raw
fs = %(fs)d
blocks = [data[i:i + fs] for i in range(0, len(data), fs)]
for stage in %(stages)r:
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


def ecg_counts(duration_s: float) -> np.ndarray:
    from sim.adc import mv_to_counts
    from sim.ecgsyn import EcgsynParams, ecgsyn

    params = EcgsynParams(sample_rate_hz=FS_HZ, heart_rate_mean_bpm=HEART_RATE_BPM)
    return mv_to_counts(ecgsyn(duration_s, params, np.random.default_rng(SEED)).signal_mv)


def _make_stage() -> Callable[[str, int, int], Callable[[Any], Any]]:
    namespace: dict[str, Any] = {}
    exec(compile(STAGE_CODE, "<bench stages>", "exec"), namespace)
    return namespace["make"]


def bench_cpython(counts: np.ndarray) -> dict[str, dict[str, Any]]:
    make = _make_stage()
    data = array("h", counts.tobytes())
    blocks = [data[i : i + FS_HZ] for i in range(0, len(data), FS_HZ)]
    results: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        best = None
        try:
            for _ in range(REPEATS):
                step = make(stage, FS_HZ, MAINS_HZ)
                t0 = time.perf_counter()
                for b in blocks:
                    step(b)
                dt = time.perf_counter() - t0
                best = dt if best is None else min(best, dt)
        except (ImportError, AttributeError) as exc:
            results[stage] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        results[stage] = _figures(len(data), best or 1e-9)
    return results


def _figures(samples: int, seconds: float) -> dict[str, Any]:
    seconds = max(seconds, 1e-6)
    rate = samples / seconds
    return {"samples": samples, "seconds": seconds, "samples_per_s": rate,
            "x_real_time": rate / FS_HZ}


def _load_mpyvm() -> Any:
    spec = importlib.util.spec_from_file_location("mpyvm", REPO / "tests" / "mpyvm.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("tests/mpyvm.py not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mpyvm"] = module
    spec.loader.exec_module(module)
    return module


def bench_micropython(counts: np.ndarray) -> tuple[dict[str, dict[str, Any]], float]:
    mpyvm = _load_mpyvm()
    startup = None
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        mpyvm.run_micropython("pass")
        dt = time.perf_counter() - t0
        startup = dt if startup is None else min(startup, dt)
    script = MPY_SCRIPT % {"fs": FS_HZ, "stages": STAGES, "repeats": REPEATS,
                           "mains": MAINS_HZ}
    blob = counts.astype("<i2").tobytes()
    out = mpyvm.run_micropython(script, extra_files={"/data/ecg.bin": blob}, timeout_s=1800)
    results: dict[str, dict[str, Any]] = {}
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if parts[0] == "RESULT":
            stage, samples, ms = line.split()[1:]
            results[stage] = _figures(int(samples), int(ms) / 1000)
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


# -- the simulated fleet --------------------------------------------------------


def _proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of another process, from /proc (0 if unknown)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        import os

        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def bench_fleet(n_devices: int, sensor: str, wall_s: float | None, sim_s: float | None,
                speed: float, tick_wall_s: float = 0.1) -> dict[str, Any]:
    """Run a fleet against mosquitto (or in memory); measure from after the connects."""
    import os
    import tempfile
    import threading

    from host.broker.launch import Broker, find_mosquitto
    from sim.fleet import Fleet, FleetParams

    tmp = tempfile.TemporaryDirectory(prefix="medge-bench-fleet-")
    broker = None
    link_factory = None
    if find_mosquitto():
        broker = Broker("mosquitto", data_dir=Path(tmp.name) / "broker", persistence=False)
        broker.start()
        transport = "mosquitto"
    else:
        from firmware.net.links.memory import MemoryLink

        def link_factory(_device_id: str) -> Any:
            return MemoryLink()

        transport = "in-memory link (mosquitto not installed)"
    try:
        params = FleetParams(n_devices=n_devices, sample_rate_hz=250, speed=speed, seed=1,
                             scenario="stable", sensor=sensor, tick_wall_s=tick_wall_s)
        host, port = (broker.host, broker.port) if broker else ("unused", 0)
        fleet = Fleet(params, host, port, Path(tmp.name) / "devices", link_factory=link_factory)
        stop = threading.Event()
        fleet.run(1.0 if speed <= 10 else 60.0, stop)  # connect + warm up, not measured
        sim0 = fleet.clock.elapsed_ms / 1000
        if wall_s is not None:
            timer = threading.Timer(wall_s, stop.set)
            timer.start()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        broker_cpu0 = _proc_cpu_s(broker.pid) if broker and broker.pid else 0.0
        fleet.run(None if sim_s is None else sim0 + sim_s, stop)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        broker_cpu = (_proc_cpu_s(broker.pid) - broker_cpu0) if broker and broker.pid else 0.0
        simulated = fleet.clock.elapsed_ms / 1000 - sim0
        devices = fleet.devices
        reports = sum(d.reports for d in devices)
        acked = sum(d.outbox.acked for d in devices)
        dropped = sum(d.outbox.dropped for d in devices)
        backlog = sum(len(d.outbox) for d in devices)
        drained = fleet.shutdown(timeout_s=30)
    finally:
        if broker is not None:
            broker.stop()
        tmp.cleanup()
    cores = os.cpu_count() or 1
    return {"devices": n_devices, "sensor": sensor, "transport": transport, "speed": speed,
            "wall_s": wall, "simulated_s": simulated, "x_real_time": simulated / wall,
            "cpu_s": cpu, "cpu_per_wall_s": cpu / wall, "cores": cores,
            "share_of_cores": cpu / wall / cores, "broker_cpu_per_wall_s": broker_cpu / wall,
            "vitals_messages": reports, "acked": acked, "outbox_dropped": dropped,
            "backlog_at_end": backlog, "drained_at_shutdown": drained}


def print_fleet(r: dict[str, Any], title: str) -> None:
    print(f"{title}: {r['devices']} devices, {r['sensor']} sensor, {r['transport']}")
    print(f"  wall {r['wall_s']:.1f} s, simulated {r['simulated_s']:.1f} s: "
          f"{r['x_real_time']:.2f}x real time "
          f"({'kept up' if r['x_real_time'] >= 0.995 else 'FELL BEHIND'})"
          if r["speed"] <= 10 else
          f"  wall {r['wall_s']:.1f} s for {r['simulated_s']:.0f} simulated s "
          f"({r['x_real_time']:.0f}x real time)")
    print(f"  CPU {r['cpu_per_wall_s']:.2f} s per wall s = {100 * r['share_of_cores']:.0f} % of "
          f"{r['cores']} cores (fleet process, all threads); broker "
          f"{r['broker_cpu_per_wall_s']:.2f} s/s")
    print(f"  {r['vitals_messages']} vitals made, {r['acked']} PUBACKed, outbox dropped "
          f"{r['outbox_dropped']}, backlog at end {r['backlog_at_end']}, drained at shutdown: "
          f"{r['drained_at_shutdown']}")


def run_fleet_benches(n_devices: int, wall_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["realtime_direct"] = bench_fleet(n_devices, "direct", None, wall_s, 1.0)
    print_fleet(out["realtime_direct"], "fleet at speed 1")
    out["realtime_ads1292"] = bench_fleet(n_devices, "ads1292", None, min(wall_s, 10.0), 1.0)
    print_fleet(out["realtime_ads1292"], "fleet at speed 1")
    out["hour_x10"] = bench_fleet(10, "direct", None, 3600.0 - 60.0, 1e6, tick_wall_s=0.05)
    r = out["hour_x10"]
    print_fleet(r, "10 devices x 1 simulated hour (after a 60 s warm-up)")
    total = r["wall_s"] * 3600 / r["simulated_s"]
    print(f"  => 1 h for 10 devices: {total:.1f} s wall (target <= 60 s: "
          f"{'met' if total <= 60 else 'MISSED'})")
    out["hour_x10"]["wall_s_per_hour"] = total
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=300.0,
                        help="seconds of ECG (300)")
    parser.add_argument("--skip-micropython", action="store_true")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--skip-fleet", action="store_true", help="no simulated-fleet benches")
    parser.add_argument("--fleet-devices", type=int, default=500)
    parser.add_argument("--fleet-wall-s", type=float, default=25.0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    counts = ecg_counts(args.duration_s)
    cpy = bench_cpython(counts)
    mpy = None
    startup = None
    mpy_error = None
    if not args.skip_micropython:
        try:
            mpy, startup = bench_micropython(counts)
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
        if args.json:
            print(json.dumps({"beat_model": res}, indent=2))
        else:
            print()
            bench_tflite.print_result(res)
    if not args.skip_fleet:
        fleet = run_fleet_benches(args.fleet_devices, args.fleet_wall_s)
        if args.json:
            print(json.dumps({"fleet": fleet}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
