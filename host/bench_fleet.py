"""``make bench`` (second half): a simulated fleet against a real mosquitto broker.

Each device is the real firmware loop on its own virtual patient (``sim.fleet``,
docs/simulator.md), against a mosquitto broker started here (the in-memory
link when mosquitto is missing: said so):

- 500 devices at speed 1 for ``--fleet-wall-s`` (25) simulated seconds,
  direct sensor path, then 10 s on the ADS1292R SPI path: process CPU seconds per
  wall second (all threads, including paho's), the share of this machine's
  cores, the broker's CPU, and simulated seconds per wall second (>= 1.0:
  kept up with real time);
- 10 devices x 1 simulated hour, as fast as it goes: the wall time (target
  <= 60 s).

It lives in ``host/`` because it starts a broker (``host.broker.launch``);
the device-code benchmarks are ``models/bench.py``.

    .venv/bin/python -m host.bench_fleet [--json] [--fleet-devices 500] [--fleet-wall-s 25]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


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
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--fleet-devices", type=int, default=500)
    parser.add_argument("--fleet-wall-s", type=float, default=25.0)
    args = parser.parse_args(argv)
    fleet = run_fleet_benches(args.fleet_devices, args.fleet_wall_s)
    if args.json:
        print(json.dumps({"fleet": fleet}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
