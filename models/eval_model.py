"""The beat-classifier report: ``make eval-model DATA=../shared/data/mitdb``.

Writes ``models/reports/beat_model.md`` with

* leave-records-out cross-validation on the 22 DS1 records (the folds of
  :mod:`models.train`, cached in ``var/model/cv.json``; run fresh when the
  settings changed): confusion matrix and per-class Se/+P per fold and pooled,
  float vs int8, and the same for the RR-feature logistic-regression baseline;
* the shipped model (``models/beatnet.tflite``): size, multiply-accumulates
  per beat, tensor arena (peak live activation bytes, as the pure-Python
  engine plans it), latency per beat on LiteRT (default kernels), LiteRT's
  reference kernels, the pure-Python engine in CPython and in the
  MicroPython VM;
* bit-exactness: the pure-Python engine against LiteRT's reference kernels
  (``OpResolverType.BUILTIN_REF``) on every beat the device pipeline finds in
  every DS1 record (clean; ``--exact-variants`` adds others), every output
  value compared.

Run::

    python -m models.eval_model ../shared/data/mitdb [--model models/beatnet] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from models.dataset import CLASSES, DS1_RECORDS, build
from models.train import VARIANTS, run_int8

log = logging.getLogger(__name__)
REPORT = Path("models/reports/beat_model.md")


# ------------------------------------------------------------ bit-exactness


def _engine_chunk(args: tuple[bytes, np.ndarray, np.ndarray, list[str]]) -> np.ndarray:
    from firmware.ml.tflite import Model

    model, beat, rr, order = args
    m = Model(model)
    feats = {"beat": beat, "rr": rr}
    out = np.zeros((len(beat), len(CLASSES)), dtype=np.int8)
    for i in range(len(beat)):
        res = m.invoke([feats[name][i].tolist() for name in order])[0]
        out[i] = list(res)
    return out


def engine_outputs(model: bytes, beat: np.ndarray, rr: np.ndarray, order: list[str],
                   jobs: int) -> np.ndarray:
    n = len(beat)
    bounds = np.linspace(0, n, jobs * 4 + 1).astype(int)
    parts = [(model, beat[a:b], rr[a:b], order) for a, b in zip(bounds, bounds[1:]) if b > a]
    with ProcessPoolExecutor(jobs) as ex:
        return np.concatenate(list(ex.map(_engine_chunk, parts)))


# ------------------------------------------------------------------ latency


def latency(model: bytes, beat: np.ndarray, rr: np.ndarray, order: list[str]) -> dict:
    from firmware.ml.infer import PythonRuntime
    from firmware.ml.litert import LiteRtRuntime

    feats = {"beat": beat, "rr": rr}
    out: dict[str, float] = {}
    for name, rt in (("LiteRT (default kernels)", LiteRtRuntime(model)),
                     ("LiteRT reference kernels", LiteRtRuntime(model, reference=True)),
                     ("pure-Python engine, CPython", PythonRuntime(model))):
        n = 200 if isinstance(rt, PythonRuntime) else 2000
        ins = [[feats[k][i % len(beat)] for k in order] for i in range(n)]
        if isinstance(rt, PythonRuntime):
            ins = [[a.tolist() for a in x] for x in ins]
        rt.invoke(ins[0])
        t0 = time.perf_counter()
        for x in ins:
            rt.invoke(x)
        out[name] = (time.perf_counter() - t0) / n * 1000
    out["pure-Python engine, MicroPython VM"] = mpy_latency(model, beat, rr, order)
    return out


MPY_SCRIPT = """
import time
from firmware.ml.tflite import Model
with open("/model.tflite", "rb") as f:
    m = Model(f.read())
with open("/feats.bin", "rb") as f:
    raw = f.read()
n = %(n)d
sizes = %(sizes)r
step = sum(sizes)
ins = []
for i in range(n):
    off = i * step
    one = []
    for s in sizes:
        one.append([(b - 256 if b > 127 else b) for b in raw[off:off + s]])
        off += s
    ins.append(one)
m.invoke(ins[0])
t0 = time.ticks_us()
for x in ins:
    m.invoke(x)
print(time.ticks_diff(time.ticks_us(), t0) / n / 1000)
"""


def mpy_latency(model: bytes, beat: np.ndarray, rr: np.ndarray, order: list[str],
                n: int = 50) -> float | None:
    try:
        from tests.mpyvm import MicroPythonUnavailable, run_micropython
    except ImportError:
        return None
    feats = {"beat": beat, "rr": rr}
    raw = b"".join(feats[k][i].tobytes() for i in range(n) for k in order)
    sizes = [feats[k].shape[1] for k in order]
    try:
        out = run_micropython(MPY_SCRIPT % {"n": n, "sizes": sizes},
                              extra_files={"/model.tflite": model, "/feats.bin": raw},
                              timeout_s=600)
    except MicroPythonUnavailable as exc:
        log.warning("MicroPython VM unavailable: %s", exc)
        return None
    return float(out.strip().splitlines()[-1])


# ------------------------------------------------------------------- report


def _cm_table(cm: list[list[int]]) -> list[str]:
    lines = ["| true \\ predicted | " + " | ".join(CLASSES) + " |",
             "|---|" + "---:|" * len(CLASSES)]
    for c, row in zip(CLASSES, cm):
        lines.append(f"| **{c}** | " + " | ".join(str(v) for v in row) + " |")
    return lines


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _class_table(rows: list[tuple[str, dict]]) -> list[str]:
    head = "| | " + " | ".join(f"{c} Se | {c} +P" for c in CLASSES) + " | accuracy |"
    lines = [head, "|---|" + "---:|" * (2 * len(CLASSES) + 1)]
    for name, res in rows:
        cells = []
        for c in CLASSES:
            v = res["classes"][c]
            cells += [_fmt(v["se"]), _fmt(v["ppv"])]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {res['accuracy']:.2f} |")
    return lines


def write_report(cv: dict, meta: dict, info: dict, lat: dict, exact: dict, out: Path) -> None:
    L: list[str] = ["# Beat classifier report", ""]
    L.append(f"Generated by `make eval-model` (`python -m models.eval_model`) on "
             f"{time.strftime('%Y-%m-%d')}; method in `models/train.py` and "
             "`models/eval_model.py`.  Classes are AAMI EC57 (N S V F Q); beats are the "
             "device pipeline's detections paired with the reference annotations (150 ms); "
             "a detection with no reference beat is a detection error (see "
             "`models/reports/qrs_eval.md`), not scored here.")
    L += ["", "## Leave-records-out cross-validation (22 DS1 records)", "",
          f"{meta['validation']['scheme']}; no beat of a validation record is ever in "
          "training (every augmented variant of a record stays with it).  Validation "
          "beats are the clean 360 Hz recordings.  Folds: "
          + "; ".join(",".join(f) for f in meta["validation"]["folds"]) + ".", ""]
    pooled = cv["pooled"]
    L += ["### Pooled over the folds", ""]
    L += _class_table([("int8 model", pooled["int8"]), ("float model", pooled["float"]),
                       ("baseline: logistic regression on the 13 context features",
                        pooled["baseline"])])
    L += ["", "Published inter-patient results on DS2 for comparison (not the same test "
          "set): de Chazal 2004 S 75.9/38.5, V 77.7/81.9; Zhang 2014 S 79.1/36.0, V "
          "85.5/92.7; Farag 2023 S Se 85.3, V Se 96.3.", ""]
    L += ["Pooled confusion matrix, int8:", "", *_cm_table(pooled["int8"]["confusion"])]
    L += ["", "Pooled confusion matrix, baseline:", "", *_cm_table(pooled["baseline"]["confusion"])]
    L += ["", "### Per fold", ""]
    rows = []
    for f in cv["folds"]:
        name = ",".join(f["records"])
        rows += [(f"{name} int8", f["int8"]), (f"{name} float", f["float"]),
                 (f"{name} baseline", f["baseline"])]
    L += _class_table(rows)
    acc_f, acc_q = pooled["float"]["accuracy"], pooled["int8"]["accuracy"]
    fold_gap = max(abs(f["float"]["accuracy"] - f["int8"]["accuracy"]) for f in cv["folds"])
    L += ["", f"int8 vs float: pooled accuracy {acc_q:.2f} % vs {acc_f:.2f} % "
          f"(difference {acc_q - acc_f:+.2f} points; largest per-fold difference "
          f"{fold_gap:.2f} points).", ""]
    L += ["## The shipped model", "",
          f"- file `models/beatnet.tflite`, {meta['size_bytes']} bytes, sha256 "
          f"`{meta['sha256'][:16]}...`, trained on all 22 DS1 records "
          f"({', '.join(meta['training']['variants'])} variants) and "
          f"{len(meta['training'].get('simulated_patients', []))} simulated patients "
          "(`models.dataset.SIM_PATIENTS`); the cross-validation folds train on the same "
          "simulated patients",
          f"- multiply-accumulates per beat: {info['macs']:,}",
          f"- tensor arena (peak live activations): {info['arena_bytes']:,} bytes; "
          f"weights and biases {info['weights_bytes']:,} bytes",
          "- latency per beat (one invoke, this machine, one core):"]
    for k, v in lat.items():
        L.append(f"  - {k}: {'n/a' if v is None else f'{v:.3f} ms'}")
    py_ms = lat.get("pure-Python engine, CPython")
    if py_ms:
        L.append(f"  - at 3 beats/s the pure-Python engine uses {3 * py_ms / 10:.1f} % of one "
                 "core here; a Raspberry Pi Zero 2 W core (Cortex-A53, 1 GHz) runs CPython "
                 "roughly 5-8x slower than this machine, so about "
                 f"{3 * py_ms * 5 / 10:.0f}-{3 * py_ms * 8 / 10:.0f} % of one of its four "
                 "cores; with LiteRT (the Pi's default runtime) it is negligible.")
    L += ["", "## Pure-Python engine vs LiteRT reference kernels", "",
          f"{exact['beats']:,} beats ({exact['what']}), {exact['values']:,} output values: "
          f"**{exact['mismatches']} differ**.", "", "## Run", "",
          f"- python {platform.python_version()}, numpy {np.__version__}, "
          f"{info.get('litert', 'LiteRT ?')}",
          f"- wall time {exact['wall_s']:.0f} s", ""]
    out.write_text("\n".join(L))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.eval_model",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("data")
    ap.add_argument("--nstdb", default=None)
    ap.add_argument("--model", default="models/beatnet")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--exact-variants", nargs="+", default=["clean"])
    ap.add_argument("--report", default=str(REPORT))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.time()
    from models import train

    nstdb = args.nstdb or str(Path(args.data).parent / "nstdb")
    # Cross-validation (cached by models.train; runs it if the cache is stale).
    train.main([args.data, "--nstdb", nstdb, "--no-export", "--jobs", str(args.jobs)])
    cv = json.loads(Path("var/model/cv.json").read_text())["cv"]
    base = Path(args.model)
    model = base.with_suffix(".tflite").read_bytes()
    meta = json.loads(base.with_suffix(".json").read_text())
    from firmware.ml.infer import BeatClassifier
    from firmware.ml.tflite import Model

    BeatClassifier(model, meta, runtime="python")  # the device's own checks
    m = Model(model)
    order = [next(i["name"] for i in meta["inputs"] if i["tensor"] == t.name) for t in m.inputs]
    data = build(args.data, list(DS1_RECORDS), sorted(set(VARIANTS) | set(args.exact_variants)),
                 Path("var/beats"), nstdb, args.jobs)
    parts = [data[(r, v)] for r in DS1_RECORDS for v in args.exact_variants]
    beat = np.concatenate([p.beat for p in parts])
    rr = np.concatenate([p.rr for p in parts])
    log.info("engine vs LiteRT reference kernels on %d beats ...", len(beat))
    ref = run_int8(model, beat, rr)
    got = engine_outputs(model, beat, rr, order, args.jobs)
    mismatches = int(np.sum(ref != got))
    exact = {"beats": len(beat), "values": int(ref.size), "mismatches": mismatches,
             "what": "every detected beat of the 22 DS1 records, "
                     + "/".join(args.exact_variants)}
    lat = latency(model, beat[:500], rr[:500], order)
    try:
        from importlib.metadata import version

        litert = f"ai-edge-litert {version('ai-edge-litert')}"
    except Exception:
        litert = "LiteRT"
    info = {"macs": m.macs, "arena_bytes": m.arena_bytes, "weights_bytes": m.weights_bytes,
            "litert": litert}
    exact["wall_s"] = time.time() - t0
    write_report(cv, meta, info, lat, exact, Path(args.report))
    log.info("bit-exact: %d beats, %d mismatching values; report %s", len(beat), mismatches,
             args.report)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
