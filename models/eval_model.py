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
  value compared;
* the leave-records-out figures per sex and age group (issue 13, acceptance
  point 4; ages and sexes from the MIT-BIH headers, ``models.eval_rhythm``'s
  reader), with counts and Wilson 95 % intervals;
* the simulator hard cases (``models.dataset.HARD_CASES``: issue 13's failure
  modes as virtual patients with ground truth, never used to train or to pick
  a model), scored with the shipped model, classifier alone and rhythm-aware;
* with ``--compare SUMMARY.json`` (default ``models/reports/beat_model_candidate.json``
  when it exists: one summary or a list), the same figures of the other
  candidates of the last model decisions side by side (:func:`summary` wrote
  them, from the same folds, recipe and hard-case patients).

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

from models.dataset import (
    CLASSES,
    DS1_RECORDS,
    HARD_CASES,
    HARD_SEEDS,
    build,
    build_hard,
    feature_cache,
)
from models.train import VARIANTS, run_int8

log = logging.getLogger(__name__)
REPORT = Path("models/reports/beat_model.md")
CANDIDATE = Path("models/reports/beat_model_candidate.json")


# ------------------------------------------------- groups, intervals, hard cases


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of the proportion k / n (n > 0), in %."""
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return 100 * max(0.0, mid - half), 100 * min(1.0, mid + half)


def se_ppv_ci(m: np.ndarray, k: int) -> str:
    """``Se [lo-hi] / +P [lo-hi] (n)`` of class ``k`` in confusion ``m`` (beats as
    independent trials: the intervals are too narrow where beats of one patient
    are alike, which is the rule; they are the least uncertainty there is)."""
    cells = []
    for tp, n in ((int(m[k, k]), int(m[k].sum())), (int(m[k, k]), int(m[:, k].sum()))):
        if not n:
            cells.append("-")
            continue
        lo, hi = wilson(tp, n)
        cells.append(f"{100 * tp / n:.1f} [{lo:.0f}-{hi:.0f}]")
    return f"{cells[0]} / {cells[1]} ({int(m[k].sum())})"


def group_table(per_record: dict[str, np.ndarray], data_dir: str) -> list[str]:
    """Markdown rows: S and V Se/+P per sex and age group, pooled over each group's
    records, with the records, the S-beat share of the largest record and intervals."""
    from models.eval_rhythm import AGE_GROUPS, demographics

    groups: dict[str, list[str]] = {"female": [], "male": []}
    groups.update({f"age {name}": [] for _lo, _hi, name in AGE_GROUPS})
    for rec in sorted(per_record):
        age, sex = demographics(str(Path(data_dir) / rec))
        groups["female" if sex == "F" else "male"].append(rec)
        for lo, hi, name in AGE_GROUPS:
            if lo <= age < hi:
                groups[f"age {name}"].append(rec)
    L = ["| group | records (patients) | S beats (largest record's share) | "
         "S Se / +P % [95 % CI] (n) | V Se / +P % [95 % CI] (n) |",
         "|---|---|---|---|---|"]
    for g, recs in groups.items():
        if not recs:
            continue
        m = sum(np.asarray(per_record[r]) for r in recs)
        s_by = sorted(((int(np.asarray(per_record[r])[1].sum()), r) for r in recs), reverse=True)
        tot = sum(n for n, _ in s_by)
        share = f"{tot} ({s_by[0][1]}: {100 * s_by[0][0] / tot:.0f} %)" if tot else "0"
        L.append(f"| {g} | {len(recs)}: {' '.join(recs)} | {share} | {se_ppv_ci(m, 1)} | "
                 f"{se_ppv_ci(m, 2)} |")
    return L


#: Session 6 (issue 13): what the morphology-cluster candidates were and how they did.
S6_TRIED = [
    "- candidate, morphology clusters (session 6; 19 features: `beatnet-1`'s 13 plus 6 from"
    " unsupervised on-device patient adaptation, after de Chazal and Reilly 2006, IEEE TBME"
    " 53(12), and Llamedo and Martinez 2012, IEEE TBME 59(8)): 6 running integer templates "
    "of channel 0 over -100..+250 ms; each beat joins the nearest template (L1) or starts a"
    " new cluster in place of the least used; per cluster a count decaying by 1/128 per "
    "beat and the beats' typical prematurity.  The 6 features: the beat's cluster share of "
    "recent beats, that cluster's typical prematurity, the distance to the dominant "
    "cluster's template, the dominant cluster's typical prematurity (the majority-PAC "
    "case), pre-RR against a reference that follows the longest stable cycles (pairs of RR "
    "within 1/8 of each other; up 1/4, down 1/128 of the way), and the distance to the "
    "nearest template; about 1,500 more integer operations per beat (6 templates x 42 bins;"
    " in the MicroPython VM, with one template in use, 0.4-1 ms more per beat on a loaded "
    "machine).  Variant A (join within 3/4 of the template's L1 norm) was stopped after 4 "
    "of the 11 folds: S 72.7 / 24.2, V 90.0 / 69.2 there against `beatnet-1`'s 77.4 / 29.0,"
    " 91.5 / 77.1 on the same folds; it split a patient's usual shape over several clusters"
    " (record 215: median share of its N beats 34 of 64).  Variant B (join within the "
    "template's norm; a cluster whose template comes within half the dominant template's "
    "norm merges into it; 215's N share 59): all 11 folds, figures in the comparison below."
    "  NOT shipped: pooled S Se / +P 74.2 / 21.8 and V 85.5 / 73.2 against beatnet-1's 77.1"
    " / 24.6 and 83.6 / 77.5 (V Se +1.9, every other figure down).  The same features help "
    "the logistic-regression baseline (pooled S 79.6 / 26.7, V 81.4 / 74.9 with the 19 "
    "features against 74.1 / 26.4, 70.4 / 71.1 with the 13, same folds), so they carry "
    "information that transfers between patients, but the network turns them into rules "
    "that do not (fold 209,215: 215's ventricular beats, a rare premature shape, called S)."
    "  Variant C, B's features with dropout (0.2) and Gaussian noise (0.25) on the context "
    "input of the network (training only; the exported model is unchanged in form), LOO "
    "only: S 73.2 / 25.6, V 87.1 / 77.5: S +P +1.0 and V Se +3.5 at equal V +P, but S Se "
    "-3.9, more than the decision allows; not shipped, the direction to follow (regularise "
    "or constrain the network's use of the cluster features, or a linear head on them).  "
    "Code: `models/candidates/s6_morphology_clusters.patch` (B), `..._A.patch` and "
    "`..._C_train.patch` (not shipped; models/candidates/README.md says how to repeat).",
]

GROUP_CAVEATS = [
    "What the data can and cannot show: DS1 has 22 patients (one record each), "
    "9 women and 13 men, 5-9 per age group, so every group is a handful of "
    "patients, and a group's S figure is largely that of the one or two records "
    "that hold most of its S beats (the column above).  The intervals treat beats "
    "as independent; between patients they are not, so the real uncertainty is "
    "wider.  A difference between two groups here is a difference between a few "
    "patients, not evidence of a sex or age effect, and the absence of a "
    "difference does not show there is none: that needs many patients per group "
    "(the held-out DS2 records add 22 more, still few).  Age and sex also travel "
    "with the diagnoses of these few patients (which of them have AF, bundle "
    "branch block or frequent ectopy), which these counts cannot separate from "
    "age or sex.",
]


def classify_hard(model: bytes, hard: dict[str, list]) -> dict[str, dict[str, list]]:
    """Hard-case confusions (true x predicted) of ``model``: the classifier alone
    (``raw``) and rhythm-aware (``aware``, the device's rhythm monitor)."""
    from models.eval_loo_rhythm import conf, monitor_run

    out: dict[str, dict[str, list]] = {}
    for name, patients in hard.items():
        raw = np.zeros((5, 5), dtype=np.int64)
        aware = np.zeros((5, 5), dtype=np.int64)
        for b in patients:
            pred = np.argmax(run_int8(model, b.beat, b.rr), axis=1)
            eff, _ = monitor_run(b.r, pred)
            raw += conf(b.label, pred)
            aware += conf(b.label, np.array([c if c >= 0 else 0 for c in eff]))
        out[name] = {"raw": raw.tolist(), "aware": aware.tolist()}
    return out


def summary(label: str, cv: dict, meta: dict, hard: dict) -> dict:
    """What a model decision compares: LOO pooled and per-fold int8 confusions and
    the hard-case confusions (JSON-ready)."""
    return {"label": label, "rr_features": meta.get("rr_features"),
            "sha256": meta.get("sha256"), "size_bytes": meta.get("size_bytes"),
            "pooled_int8": cv["pooled"]["int8"]["confusion"],
            "folds": [{"records": f["records"], "int8": f["int8"]["confusion"]}
                      for f in cv["folds"]],
            "hard": hard}


def _sv(m) -> str:
    m = np.asarray(m)
    return " | ".join(se_ppv_ci(m, k).rsplit(" (", 1)[0] for k in (1, 2))


def compare_lines(cur: dict, others: list[dict]) -> list[str]:
    """The side-by-side tables of :func:`summary` dicts: this model, then the others."""
    L = ["| model | S Se / +P | V Se / +P |", "|---|---|---|"]
    for s in [cur, *others]:
        L.append(f"| {s['label']} | {_sv(s['pooled_int8'])} |")
    L += ["", "Per fold (int8), S and V Se / +P:", "",
          "| fold | " + " | ".join(f"{s['label']}: S | V" for s in [cur, *others]) + " |",
          "|---|" + "---|---|" * (1 + len(others))]
    for i, a in enumerate(cur["folds"]):
        cells = [_sv(s["folds"][i]["int8"]) for s in [cur, *others]]
        L.append(f"| {','.join(a['records'])} | " + " | ".join(cells) + " |")
    return L


def hard_lines(cur: dict, others: list[dict]) -> list[str]:
    L = [f"{len(HARD_SEEDS)} virtual patients per case (seeds {', '.join(map(str, HARD_SEEDS))}), "
         "real nstdb noise, 360 Hz, beats labelled with the simulator's ground truth.  "
         "Rhythm-aware = after the device's rhythm monitor (no S in AF).", "",
         "| case | model | S Se / +P raw | V Se / +P raw | S Se / +P rhythm-aware | "
         "N called S (aware) | N called V (aware) |",
         "|---|---|---|---|---|---|---|"]
    for name, (what, snr, _t) in HARD_CASES.items():
        for s in [cur, *others]:
            h = s["hard"].get(name)
            if h is None:
                continue
            raw, aw = np.asarray(h["raw"]), np.asarray(h["aware"])
            L.append(f"| {name}: {what}, {snr:g} dB | {s['label']} | "
                     f"{se_ppv_ci(raw, 1)} | {se_ppv_ci(raw, 2)} | {se_ppv_ci(aw, 1)} | "
                     f"{int(aw[0, 1])} of {int(aw[0].sum())} | {int(aw[0, 2])} |")
    L += ["", "Not simulated (the simulator has no such morphology or rhythm): bundle-"
          "branch-block beats and atrial flutter, two of the issue's failure modes; "
          "the figures above say nothing about them."]
    return L


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


def write_report(cv: dict, meta: dict, info: dict, lat: dict, exact: dict, out: Path,
                 groups: list[str] = (), hard: list[str] = (), compare: list[str] = ()
                 ) -> None:
    L: list[str] = ["# Beat classifier report", ""]
    L.append(f"Generated by `make eval-model` (`python -m models.eval_model`) on "
             f"{time.strftime('%Y-%m-%d')}; method in `models/train.py` and "
             "`models/eval_model.py`.  Classes are AAMI EC57 (N S V F Q); beats are the "
             "device pipeline's detections paired with the reference annotations (150 ms); "
             "a detection with no reference beat is a detection error (see "
             "`models/reports/qrs_eval.md`), not scored here.")
    L += ["", "## What the context features try (issue 13)", "",
          "- shipped, `beatnet-1` (13 context features): RR intervals against the "
          "patient's local mean (8 beats) and long-term mean, pre/post ratio, irregularity "
          "at lags 1 and 2, the beat's shape against the running average beat.  Held out "
          "(22 DS2 records, scored outside the project): S Se/+P 29.5/18.2, V 94.7/68.9; a "
          "patient whose premature atrial beats are the majority was called nearly all N, "
          "because the running means follow the premature beats.",
          "- candidate, sinus-cycle reference (13 features, same layout): prematurity "
          "against a reference that runs of ectopic beats cannot capture (the 7/8 quantile "
          "of the last 32 RR intervals between two beats of the usual QRS shape) in place "
          "of the running means: pre-RR, post-RR, pre + post (compensatory pause) and the "
          "local mean against it; the long-term mean dropped, the difference before the "
          "QRS (P wave) from the average beat added.  Tried before it and dropped: "
          "`beatnet-1`'s 13 features plus these 4 (17); on the majority-PAC hard case its "
          "S Se was 22 % (beatnet-1: 32 %), which is why the candidate replaces the means "
          "instead of adding to them, so that hard case was seen before the candidate "
          "was made and does not test it blind.  The candidate's code: "
          "`models/candidates/s5_sinus_reference_features.patch` (not shipped); the decision "
          "is in the comparison below.",
          *S6_TRIED,
          f"- This report's model: `{meta['version']}`, {meta['rr_features']} context "
          "features.", ""]
    L += ["## Leave-records-out cross-validation (22 DS1 records)", "",
          f"{meta['validation']['scheme']}; no beat of a validation record is ever in "
          "training (every augmented variant of a record stays with it).  Validation "
          "beats are the clean 360 Hz recordings.  Folds: "
          + "; ".join(",".join(f) for f in meta["validation"]["folds"]) + ".", ""]
    pooled = cv["pooled"]
    L += ["### Pooled over the folds", ""]
    L += _class_table([("int8 model", pooled["int8"]), ("float model", pooled["float"]),
                       (f"baseline: logistic regression on the {meta['rr_features']} context "
                        "features",
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
    if groups:
        L += ["### By sex and age group (leave-records-out, int8, classifier alone)", "",
              *groups, "", *GROUP_CAVEATS, ""]
    if compare:
        L += ["## The model decisions: every candidate, same folds and recipe", "",
              *compare, ""]
    if hard:
        L += ["## Simulator hard cases (never used to train or to pick a model)", "",
              *hard, ""]
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
    ap.add_argument("--compare", default=str(CANDIDATE),
                    help="summary JSON of the other candidates of the last decision (one "
                         "summary or a list; skipped if missing)")
    ap.add_argument("--label", default="shipped model",
                    help="this model's name in the comparison tables")
    ap.add_argument("--write-summary", default=None, metavar="JSON",
                    help="also write this model's summary (for a later --compare)")
    ap.add_argument("--summary-only", action="store_true",
                    help="with --write-summary: write the summary (cross-validation and "
                         "hard cases) and stop, no report (a candidate that is not shipped)")
    args = ap.parse_args(argv)
    if args.summary_only and not args.write_summary:
        ap.error("--summary-only needs --write-summary")
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
    cache = feature_cache()
    if args.summary_only:
        hard = classify_hard(model, build_hard(cache, args.jobs))
        Path(args.write_summary).write_text(
            json.dumps(summary(args.label, cv, meta, hard), indent=1) + "\n")
        log.info("summary %s", args.write_summary)
        return 0
    data = build(args.data, list(DS1_RECORDS), sorted(set(VARIANTS) | set(args.exact_variants)),
                 cache, nstdb, args.jobs)
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
    per_record = {r: np.asarray(m) for f in cv["folds"] for r, m in f["per_record"].items()}
    groups = group_table(per_record, args.data)
    log.info("simulator hard cases ...")
    mine = summary(args.label, cv, meta, classify_hard(model, build_hard(cache, args.jobs)))
    if args.write_summary:
        Path(args.write_summary).write_text(json.dumps(mine, indent=1) + "\n")
    others = []
    if args.compare and Path(args.compare).exists():
        others = json.loads(Path(args.compare).read_text())
        if isinstance(others, dict):
            others = [others]
    compare = compare_lines(mine, others) if others else []
    exact["wall_s"] = time.time() - t0
    write_report(cv, meta, info, lat, exact, Path(args.report), groups,
                 hard_lines(mine, others), compare)
    log.info("bit-exact: %d beats, %d mismatching values; report %s", len(beat), mismatches,
             args.report)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
