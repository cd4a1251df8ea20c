"""``make bench`` (advice): what a live NEWS2 assessment costs, replayed and kept.

A temporary SQLite store holds ``--patients`` (5) patients, each on a device that
published 1 Hz vitals (pulse, SpO2, respiratory rate, temperature, with noise) for
``--hours`` (4, the replay's :data:`host.services.advice.live.HISTORY_S`), stored
through the store's ingest write path.  Measured, per patient:

- **replay**: :func:`host.services.advice.live.assess` without a cache, what
  ``medge advice PATIENT`` and ``medge monitor`` pay (the 4 h replayed, evaluated
  every 30 s), and the profile's split of it (reading and parsing the stored
  messages, feeding the engine, the evaluations);
- **kept**: the advice service's passes (``medge advice --watch``:
  :class:`host.services.advice.live.LiveMonitors`) every ``--interval`` (10) s of
  simulated time with the vitals that arrived since: the first pass (a replay),
  then the median and the maximum of ``--passes`` (30) incremental passes.

Times are CPU seconds of this process (``time.process_time``: on a machine shared
with other work, wall time measures the neighbours too).

    .venv/bin/python -m host.bench_advice [--patients 5] [--hours 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

T0 = 1_764_000_000_000


def _vitals(device: str, seq: int, ts_ms: int, r: random.Random) -> dict[str, Any]:
    return {"v": 1, "type": "vitals", "device_id": device, "seq": seq, "ts_ms": ts_ms,
            "window_ms": 1000, "hr_bpm": 80 + r.randint(-3, 3),
            "pulse_bpm": 80 + r.randint(-3, 3), "spo2_pct": 96 + r.randint(0, 2),
            "resp_rate_per_min": 16 + r.randint(-1, 1), "temp_centi_c": 3700 + r.randint(-5, 5),
            "beats": 1, "quality": "good", "signal": "good"}


def _publish(store: Any, devices: list[str], seconds: range, rngs: list[random.Random]
             ) -> None:
    from host.services.store import Accept

    items = []
    for sec in seconds:
        ts = T0 + sec * 1000
        for device, r in zip(devices, rngs):
            items.append(Accept("vitals", device, _vitals(device, sec, ts, r), ts))
        if len(items) >= 5000:
            store.write_batch(items)
            items = []
    if items:
        store.write_batch(items)


def _split(store: Any, patient_id: str, now_ms: int) -> dict[str, float]:
    """Where a replay's time goes (cProfile, cumulative CPU seconds; profiled, so
    slower than the plain run)."""
    import cProfile
    import pstats

    from host.services.advice import live

    prof = cProfile.Profile(time.process_time)
    prof.runcall(live.assess, store, patient_id, now_ms)
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    parts = {"read+parse messages": ("live.py", "_stream"),
             "feed engine": ("engine.py", "add_vitals"),
             "evaluations": ("engine.py", "evaluate"), "total": ("live.py", "assess")}
    out = {}
    for name, (file, func) in parts.items():
        out[name] = round(sum(v[3] for k, v in stats.items()
                              if k[0].endswith(file) and k[2] == func), 3)
    return out


def run(patients_n: int, hours: float, passes: int, interval_s: int) -> dict[str, Any]:
    from host.services import patients
    from host.services.advice import live
    from host.services.advice.news2 import Inputs
    from host.services.store import Store

    with tempfile.TemporaryDirectory(prefix="medge-bench-advice-") as tmp:
        db = Path(tmp) / "advice.db"
        pids = [f"p-{i:03d}" for i in range(patients_n)]
        devices = [f"bed-{i:03d}" for i in range(patients_n)]
        rngs = [random.Random(i) for i in range(patients_n)]
        history_s = int(hours * 3600)
        with Store(db) as s:
            for pid, device in zip(pids, devices):
                patients.add_patient(s, pid, patients.make_profile(age=70, sex="male"),
                                     actor="bench", ts_ms=T0)
                patients.assign(s, pid, device, actor="bench", ts_ms=T0)
                patients.add_observations(s, pid, Inputs(consciousness="A", oxygen=False,
                                                         systolic=124), ts_ms=T0,
                                          entered_by="bench", entered_ms=T0)
            _publish(s, devices, range(history_s), rngs)
            now = T0 + history_s * 1000
            replay = []
            for pid in pids:
                t = time.process_time()
                live.assess(s, pid, now)
                replay.append(time.process_time() - t)
            split = _split(s, pids[0], now)
            cache = live.LiveMonitors()
            t = time.process_time()
            for pid in pids:
                live.assess(s, pid, now, cache)
            first = (time.process_time() - t) / patients_n
            kept = []
            sec = history_s
            for _ in range(passes):
                _publish(s, devices, range(sec, sec + interval_s), rngs)
                sec += interval_s
                now = T0 + sec * 1000
                t = time.process_time()
                for pid in pids:
                    live.assess(s, pid, now, cache)
                kept.append((time.process_time() - t) / patients_n)
            same = [live.assess(s, pid, now)[0].news2 == live.assess(s, pid, now, cache)[0].news2
                    for pid in pids]
    median = statistics.median(kept)
    return {"patients": patients_n, "hours": hours, "vitals_per_patient": history_s,
            "replay_s_per_patient": {"median": round(statistics.median(replay), 3),
                                     "max": round(max(replay), 3)},
            "replay_profile_s": split,
            "kept_first_pass_s_per_patient": round(first, 3),
            "kept_pass_ms_per_patient": {"median": round(median * 1000, 2),
                                         "max": round(max(kept) * 1000, 2),
                                         "passes": passes, "interval_s": interval_s},
            "speedup": round(statistics.median(replay) / median, 1),
            "kept_answers_as_replay": all(same), "rebuilds": cache.rebuilds,
            "increments": cache.increments}


def render(doc: dict[str, Any]) -> str:
    r, k = doc["replay_s_per_patient"], doc["kept_pass_ms_per_patient"]
    split = ", ".join(f"{n} {v} s" for n, v in doc["replay_profile_s"].items())
    return "\n".join([
        f"advice: {doc['patients']} patients x {doc['hours']:g} h of 1 Hz vitals "
        f"({doc['vitals_per_patient']} messages each)",
        f"  replay (medge advice PATIENT, monitor): median {r['median']} s, max {r['max']} s "
        "CPU per patient",
        f"  replay profiled: {split}",
        f"  kept (medge advice --watch): first pass {doc['kept_first_pass_s_per_patient']} s, "
        f"then every {k['interval_s']} s: median {k['median']} ms, max {k['max']} ms per "
        f"patient over {k['passes']} passes ({doc['speedup']}x; {doc['rebuilds']} "
        f"replays, {doc['increments']} increments; same NEWS2 as the replay: "
        f"{doc['kept_answers_as_replay']})",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m host.bench_advice",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=5)
    ap.add_argument("--hours", type=float, default=4.0)
    ap.add_argument("--passes", type=int, default=30)
    ap.add_argument("--interval", type=int, default=10, metavar="SECONDS")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.patients < 1 or not 0 < args.hours <= 24 or args.passes < 1 or args.interval < 1:
        print("bench-advice: --patients >= 1, 0 < --hours <= 24, --passes >= 1, "
              "--interval >= 1", file=sys.stderr)
        return 2
    doc = run(args.patients, args.hours, args.passes, args.interval)
    print(json.dumps(doc, indent=2) if args.json else render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
