"""Train, quantize and export the beat classifier; leave-records-out validation.

Run (TensorFlow comes with the ``train`` extra; ``make model`` installs it)::

    python -m models.train ../shared/data/mitdb [--nstdb ../shared/data/nstdb]
        [--folds 11] [--epochs 8] [--out models/beatnet]

What it does, in order:

1. Beats of the 22 DS1 records from the device's own pipeline
   (:mod:`models.dataset`; variants ``clean``, ``r250`` and two real-noise
   variants per record).
2. Leave-records-out cross-validation: the records are dealt into ``--folds``
   groups (sorted by S-beat count, dealt round-robin, so every fold has some
   supraventricular beats); for each fold a model is trained on every variant
   of the other records (plus the simulated patients of
   :data:`models.dataset.SIM_PATIENTS`) and scored on the clean beats of the
   held-out ones, float and int8.  No beat of a validation record is ever in training.
   A logistic regression on the RR features alone is trained and scored on
   the same folds, the baseline that shows what the network adds.
3. The shipped model: the same recipe on all 22 records, post-training
   full-integer quantization (int8 inputs and outputs, representative beats
   from the training set), exported as ``<out>.tflite`` plus ``<out>.json``
   metadata (labels, input layout and quantization, rates, window, sha256,
   training records, validation metrics).

Class imbalance: the loss weights each class by N_total / (5 N_class) (no
weight for absent classes), except F, which gets at most V's weight (see
:func:`class_weights`).  Chosen on the validation folds during development,
against a square-root weighting (S Se about 45 % instead of 78 %).

The results of step 2 are cached in ``var/model/cv.json`` (keyed by the
settings, this file and the device's feature code), so ``make eval-model`` and
``make model`` share them; each fold's result is kept as it is done
(``var/model/folds/<key>/``), so an interrupted run goes on where it stopped and
``--only-folds`` lets two processes share the folds.

Issue 13 candidates are compared on the same folds (``make eval-model``
shows both; ``models/reports/beat_model_candidate.json`` holds the other
one's figures); ``build_model`` takes the context-feature count from the data,
so a candidate with another feature layout trains with the same code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from firmware.params import (
    BEAT_CHANNELS,
    BEAT_WINDOW_AFTER_MS,
    BEAT_WINDOW_BEFORE_MS,
    BEAT_WINDOW_POINTS,
    INPUT_SCALE_INV,
    RR_FEATURES,
    SUPPORTED_RATES_HZ,
)
from models.dataset import (
    CLASSES,
    DS1_RECORDS,
    SIM_PATIENTS,
    Beats,
    build,
    build_sim,
    feature_cache,
)

log = logging.getLogger(__name__)

VARIANTS = ["clean", "r250", "noise1", "noise2"]
MODEL_NAME = "beatnet"
CW_POWER = 1.0
SEED = 20261124
K = len(CLASSES)


# ---------------------------------------------------------------- the model


def build_model(tf, batch_size=None, rr_features=RR_FEATURES):
    """The network: a small 1-D CNN on the beat window squeezed to 8 values
    (with dropout), beside a dense layer on the context features, joined
    into two dense layers.  Output: 5 logits (no softmax: the device takes the
    arg max).

    Why so narrow a morphology branch: in leave-records-out validation a wider
    one (176 CNN features straight into the joint layer) learns the training
    patients' beat shapes and calls unseen patients' ectopic beats normal or
    fusion; squeezed to 8 values, the model leans on the patient-relative
    features, which transfer (pooled S Se 78 vs 47 %, V Se 83 vs 84 %, on 3
    folds during development; the report has the full figures)."""
    L = tf.keras.layers
    beat = tf.keras.Input((BEAT_WINDOW_POINTS, BEAT_CHANNELS), batch_size=batch_size, name="beat")
    rr = tf.keras.Input((rr_features,), batch_size=batch_size, name="rr")
    x = L.Conv1D(8, 7, padding="same", activation="relu")(beat)
    x = L.MaxPooling1D(2)(x)
    x = L.Conv1D(16, 5, padding="same", activation="relu")(x)
    x = L.MaxPooling1D(2)(x)
    x = L.Conv1D(16, 5, padding="same", activation="relu")(x)
    x = L.MaxPooling1D(2)(x)
    x = L.Flatten()(x)
    x = L.Dropout(0.5)(x)
    x = L.Dense(8, activation="relu")(x)
    y = L.Dense(16, activation="relu")(rr)
    z = L.Concatenate()([x, y])
    z = L.Dense(32, activation="relu")(z)
    z = L.Dropout(0.3)(z)
    out = L.Dense(K, name="logits")(z)
    return tf.keras.Model([beat, rr], out)


def to_float(beat: np.ndarray, rr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 features -> the float inputs the network is trained on (q / 32)."""
    b = beat.astype(np.float32).reshape(-1, BEAT_WINDOW_POINTS, BEAT_CHANNELS) / INPUT_SCALE_INV
    return b, rr.astype(np.float32) / INPUT_SCALE_INV


def class_weights(labels: np.ndarray) -> dict[int, float]:
    power = CW_POWER
    counts = np.bincount(labels, minlength=K).astype(np.float64)
    total = counts.sum()
    w = {c: float((total / (K * counts[c])) ** power) if counts[c] else 0.0 for c in range(K)}
    # F (fusion) comes almost entirely from one DS1 patient (208): weighted up
    # like the others, the network learns that patient's beats and calls other
    # patients' late ventricular beats F.  It gets at most V's weight.
    w[3] = min(w[3], w[2])
    return w


def train_model(tf, beat, rr, labels, epochs: int, seed: int):
    tf.keras.utils.set_random_seed(seed)
    model = build_model(tf, rr_features=rr.shape[1])
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    xb, xr = to_float(beat, rr)
    sched = tf.keras.callbacks.LearningRateScheduler(
        lambda ep, lr: 1e-3 if ep < epochs * 2 // 3 else 2e-4)
    model.fit([xb, xr], labels.astype(np.int64), batch_size=256, epochs=epochs,
              class_weight=class_weights(labels), verbose=0, shuffle=True, callbacks=[sched])
    return model


def quantize(tf, model, beat, rr, n_rep: int = 2000, seed: int = 0) -> bytes:
    """Full-integer post-training quantization with int8 inputs and outputs.

    The representative set is ``n_rep`` training beats; one of them carries the
    int8 extremes -128 and 127 in one element of each input, so both inputs get
    scale 1/32 and zero point 0 (the device's int8 features *are* the inputs)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(beat), size=min(n_rep, len(beat)), replace=False)
    xb, xr = to_float(beat[idx], rr[idx])
    xb[0, 0, 0], xb[0, 1, 0] = -128 / INPUT_SCALE_INV, 127 / INPUT_SCALE_INV
    xr[0, 0], xr[0, 1] = -128 / INPUT_SCALE_INV, 127 / INPUT_SCALE_INV

    def rep():
        for i in range(len(idx)):
            yield {"beat": xb[i:i + 1], "rr": xr[i:i + 1]}

    # Exported with a fixed batch of 1: static shapes, no SHAPE/PACK ops.
    fixed = build_model(tf, batch_size=1, rr_features=rr.shape[1])
    fixed.set_weights(model.get_weights())
    conv = tf.lite.TFLiteConverter.from_keras_model(fixed)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


# ---------------------------------------------------------------- inference


def litert_interpreter(model: bytes, reference: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    it = Interpreter(model_content=model, experimental_op_resolver_type=kind)
    it.allocate_tensors()
    return it


def input_order(it) -> list[str]:
    """Which feature ("beat" or "rr") each TFLite input is, in input order."""
    out = []
    for d in it.get_input_details():
        out.append("beat" if int(np.prod(d["shape"])) == BEAT_WINDOW_POINTS * BEAT_CHANNELS
                   else "rr")
    return out


def run_int8(model: bytes, beat: np.ndarray, rr: np.ndarray) -> np.ndarray:
    """int8 logits [n, 5] of the quantized model (LiteRT reference kernels)."""
    it = litert_interpreter(model)
    ins = it.get_input_details()
    outd = it.get_output_details()[0]
    feats = {"beat": beat, "rr": rr}
    order = input_order(it)
    out = np.zeros((len(beat), K), dtype=np.int8)
    for i in range(len(beat)):
        for d, name in zip(ins, order):
            it.set_tensor(d["index"], feats[name][i].reshape(d["shape"]))
        it.invoke()
        out[i] = it.get_tensor(outd["index"]).reshape(-1)
    return out


# ------------------------------------------------------------------ scoring


def confusion(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    m = np.zeros((K, K), dtype=np.int64)
    np.add.at(m, (truth, pred), 1)
    return m


def se_ppv(m: np.ndarray) -> dict[str, dict[str, float | None]]:
    out = {}
    for c, name in enumerate(CLASSES):
        tp = m[c, c]
        se = tp / m[c].sum() if m[c].sum() else None
        ppv = tp / m[:, c].sum() if m[:, c].sum() else None
        out[name] = {"se": None if se is None else round(100 * float(se), 2),
                     "ppv": None if ppv is None else round(100 * float(ppv), 2),
                     "n": int(m[c].sum())}
    return out


def accuracy(m: np.ndarray) -> float:
    return round(100 * float(np.trace(m) / max(1, m.sum())), 3)


# ------------------------------------------------------------- the baseline


def fit_logreg(x: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression (class-weighted like the network), L-BFGS."""
    from scipy.optimize import minimize

    w_cls = class_weights(y)
    sw = np.array([w_cls[int(c)] for c in y])
    xs = x.astype(np.float64) / INPUT_SCALE_INV
    n, d = xs.shape
    onehot = np.eye(K)[y]

    def loss(theta):
        w = theta[: d * K].reshape(d, K)
        b = theta[d * K:]
        z = xs @ w + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        ll = -(sw * np.log(np.maximum((p * onehot).sum(axis=1), 1e-12))).sum() / n
        g = (p - onehot) * sw[:, None] / n
        gw = xs.T @ g + l2 * w
        return ll + 0.5 * l2 * (w * w).sum(), np.concatenate([gw.ravel(), g.sum(axis=0)])

    res = minimize(loss, np.zeros(d * K + K), jac=True, method="L-BFGS-B",
                   options={"maxiter": 500})
    return res.x[: d * K].reshape(d, K), res.x[d * K:]


# ------------------------------------------------------- cross-validation


def make_folds(data: dict[tuple[str, str], Beats], records: list[str], n: int) -> list[list[str]]:
    s_count = {r: int(np.sum(data[(r, "clean")].label == 1)) for r in records}
    order = sorted(records, key=lambda r: (-s_count[r], r))
    folds: list[list[str]] = [[] for _ in range(n)]
    for i, r in enumerate(order):
        folds[i % n].append(r)
    return [sorted(f) for f in folds]


def stack(data, records: list[str], variants: list[str], extra: list[Beats] = ()):
    parts = [data[(r, v)] for r in records for v in variants] + list(extra)
    beat = np.concatenate([p.beat for p in parts])
    rr = np.concatenate([p.rr for p in parts])
    label = np.concatenate([p.label for p in parts])
    keep = label >= 0
    return beat[keep], rr[keep], label[keep].astype(np.int64)


def cross_validate(tf, data, records: list[str], folds: list[list[str]], epochs: int,
                   sim: list[Beats] = (), fold_dir: Path | None = None,
                   only: set[int] | None = None) -> dict:
    """Train and score one model per fold (see the module docstring).

    With ``fold_dir`` each fold's result is kept there as ``<i>.json`` and read
    back instead of trained again (fold ``i`` is seeded ``SEED + i`` whatever
    else runs, so folds can be run by several processes at once: ``only`` = the
    fold indices this call may train; the others are taken from ``fold_dir`` or
    left out).  ``result["complete"]`` says whether every fold is in."""
    result: dict = {"folds": []}
    pooled = {k: np.zeros((K, K), dtype=np.int64) for k in ("float", "int8", "baseline")}
    for i, val in enumerate(folds):
        path = fold_dir / f"{i}.json" if fold_dir else None
        if path and path.exists():
            fold = json.loads(path.read_text())
            result["folds"].append(fold)
            for key in pooled:
                pooled[key] += np.asarray(fold[key]["confusion"])
            continue
        if only is not None and i not in only:
            continue
        t0 = time.time()
        train = [r for r in records if r not in val]
        tb, tr, tl = stack(data, train, VARIANTS, sim)
        vb, vr, vl = stack(data, val, ["clean"])
        # Which held-out record each validation beat is (for per-patient groups).
        vrec = np.concatenate([np.full(int(np.sum(data[(r, "clean")].label >= 0)), j)
                               for j, r in enumerate(val)])
        model = train_model(tf, tb, tr, tl, epochs, SEED + i)
        xb, xr = to_float(vb, vr)
        pf = np.argmax(model.predict([xb, xr], verbose=0, batch_size=1024), axis=1)
        q = quantize(tf, model, tb, tr, seed=i)
        pq = np.argmax(run_int8(q, vb, vr), axis=1)
        w, b = fit_logreg(tr, tl)
        pb = np.argmax((vr.astype(np.float64) / INPUT_SCALE_INV) @ w + b, axis=1)
        fold = {"records": val, "per_record": {
            r: confusion(vl[vrec == j], pq[vrec == j]).tolist() for j, r in enumerate(val)}}
        for key, pred in (("float", pf), ("int8", pq), ("baseline", pb)):
            m = confusion(vl, pred)
            pooled[key] += m
            fold[key] = {"confusion": m.tolist(), "classes": se_ppv(m), "accuracy": accuracy(m)}
        result["folds"].append(fold)
        log.info("fold %d/%d %s: int8 %s  (%.0f s)", i + 1, len(folds), ",".join(val),
                 _brief(fold["int8"]["classes"]), time.time() - t0)
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(fold))
    result["complete"] = len(result["folds"]) == len(folds)
    result["pooled"] = {k: {"confusion": m.tolist(), "classes": se_ppv(m), "accuracy": accuracy(m)}
                        for k, m in pooled.items()}
    return result


def _brief(classes: dict) -> str:
    return " ".join(f"{c} {v['se']}/{v['ppv']}" for c, v in classes.items() if v["n"])


# ------------------------------------------------------------------ export


def tensor_meta(d: dict) -> dict:
    scale, zp = d["quantization"]
    return {"tensor": d["name"], "shape": [int(v) for v in d["shape"]],
            "dtype": "int8", "scale": float(scale), "zero_point": int(zp)}


def metadata(model: bytes, records: list[str], cv: dict, settings: dict) -> dict:
    it = litert_interpreter(model)
    order = input_order(it)
    inputs = []
    for d, name in zip(it.get_input_details(), order):
        inputs.append({"name": name, **tensor_meta(d)})
    outd = it.get_output_details()[0]
    return {
        "format": "medge-model/1",
        "name": MODEL_NAME,
        "version": settings["version"],
        "task": "AAMI EC57 beat class from one ECG lead (MLII-like)",
        "labels": list(CLASSES),
        "sha256": hashlib.sha256(model).hexdigest(),
        "size_bytes": len(model),
        "sample_rates_hz": list(SUPPORTED_RATES_HZ),
        "window": {"before_ms": BEAT_WINDOW_BEFORE_MS, "after_ms": BEAT_WINDOW_AFTER_MS,
                   "points": BEAT_WINDOW_POINTS, "channels": BEAT_CHANNELS},
        "rr_features": RR_FEATURES,
        "inputs": inputs,
        "output": {"name": "logits", **tensor_meta(outd)},
        "training": {"records": records, "variants": VARIANTS, **settings},
        "validation": {"scheme": f"leave-records-out, {len(cv['folds'])} folds",
                       "folds": [f["records"] for f in cv["folds"]],
                       "pooled_int8": cv["pooled"]["int8"]["classes"],
                       "pooled_float": cv["pooled"]["float"]["classes"],
                       "accuracy_int8": cv["pooled"]["int8"]["accuracy"],
                       "accuracy_float": cv["pooled"]["float"]["accuracy"]},
    }


def full_model(tf, data, records: list[str], sim: list[Beats], epochs: int,
               fold_dir: Path) -> bytes:
    """The int8 model trained on every record (seed ``SEED + 100``), cached as
    ``fold_dir/full.tflite``."""
    path = fold_dir / "full.tflite"
    if path.exists():
        return path.read_bytes()
    tb, tr, tl = stack(data, records, VARIANTS, sim)
    model = train_model(tf, tb, tr, tl, epochs, SEED + 100)
    q = quantize(tf, model, tb, tr, seed=100)
    fold_dir.mkdir(parents=True, exist_ok=True)
    path.write_bytes(q)
    return q


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.split("\n")[0])
    ap.add_argument("data", help="folder with the MIT-BIH DS1 records")
    ap.add_argument("--nstdb", default=None, help="nstdb folder (default: DATA/../nstdb)")
    ap.add_argument("--folds", type=int, default=11)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--out", default=f"models/{MODEL_NAME}")
    ap.add_argument("--cache", default=None,
                    help="beat-feature cache (default: var/beats/<key of the device code>)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-export", action="store_true", help="cross-validate only")
    ap.add_argument("--only-folds", default=None, metavar="I,J,...",
                    help="train only these folds (0-based; the rest from the fold cache; "
                         "'full': the model on every record), e.g. to run the folds in "
                         "several processes at once")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    nstdb = args.nstdb or str(Path(args.data).parent / "nstdb")
    records = list(DS1_RECORDS)
    cache = Path(args.cache) if args.cache else feature_cache()
    data = build(args.data, records, VARIANTS, cache, nstdb, args.jobs)
    sim = build_sim(cache, args.jobs)
    settings = {"epochs": args.epochs, "seed": SEED, "folds": args.folds,
                "simulated_patients": [f"{r}{s}" for r, s in SIM_PATIENTS],
                "version": f"{MODEL_NAME}-1", "tensorflow": tf.__version__,
                "features": feature_cache().name}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()
                         + Path(__file__).read_bytes()).hexdigest()[:16]
    cv_path = Path("var/model/cv.json")
    cv = None
    if cv_path.exists():
        cached = json.loads(cv_path.read_text())
        if cached.get("key") == key:
            cv = cached["cv"]
            log.info("cross-validation results from %s", cv_path)
    fold_dir = Path("var/model/folds") / key
    parts = args.only_folds.split(",") if args.only_folds else None
    if parts and "full" in parts:  # the shipped model's training, cached for the export
        full_model(tf, data, records, sim, args.epochs, fold_dir)
        parts.remove("full")
        if not parts:
            return 0
    if cv is None:
        folds = make_folds(data, records, args.folds)
        only = {int(v) for v in parts} if parts is not None else None
        cv = cross_validate(tf, data, records, folds, args.epochs, sim, fold_dir, only)
        if not cv["complete"]:
            log.info("%d of %d folds done (the rest: --only-folds in another process)",
                     len(cv["folds"]), len(folds))
            return 0
        cv_path.parent.mkdir(parents=True, exist_ok=True)
        cv_path.write_text(json.dumps({"key": key, "cv": cv}))
    log.info("pooled int8: %s", _brief(cv["pooled"]["int8"]["classes"]))
    log.info("pooled float: %s", _brief(cv["pooled"]["float"]["classes"]))
    log.info("pooled baseline: %s", _brief(cv["pooled"]["baseline"]["classes"]))
    if args.no_export:
        return 0
    q = full_model(tf, data, records, sim, args.epochs, fold_dir)
    meta = metadata(q, records, cv, settings)
    out = Path(args.out)
    out.with_suffix(".tflite").write_bytes(q)
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    log.info("wrote %s (%d bytes) and %s", out.with_suffix(".tflite"), len(q),
             out.with_suffix(".json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
