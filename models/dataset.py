"""Beat datasets for the classifier, made by the device's own code.

Every beat's model input comes from :class:`firmware.signal.beatpipe.BeatPipeline`
(filter chain, QRS detector and beat features: the code the device runs), fed
a record's samples exactly as ``medge ecg analyze`` feeds them (the record
reader ``sim.records``: device counts, ``ECG_COUNTS_PER_MV`` around the
record's baseline; a noise variant adds its noise in mV before the
resampling and quantisation steps).
Detected beats are labelled with the reference annotation they pair with
(EC57/bxb pairing within 150 ms, ``models.eval_qrs.match_beats``), mapped to
the AAMI EC57 classes; a detection with no reference beat gets label -1 (it
is a detection error, not a class) and is left out of training and of the
class figures.

Variants (augmentation): ``clean`` (360 Hz as recorded), ``r250`` (resampled
to 250 Hz, the other device rate), and ``noise<k>``: the record's ECG times a
random gain (0.5-2) plus a random stretch of real noise from the MIT-BIH Noise
Stress Test Database (``ma`` muscle artefact, ``em`` electrode motion, ``bw``
baseline wander) at a random SNR of 6-18 dB, where SNR = 10 log10(var(ECG) /
var(noise)) over the record (the ECG minus its median).  Variants are cached
as ``.npz`` files under ``var/beats/<key>/`` (never committed), the key a hash of
the device code that makes them (:func:`feature_cache`), so a change of the
features never reuses old ones.

Simulated patients (:func:`sim_beats`): ``sim.patient.VirtualPatient`` with
one rhythm each (atrial fibrillation, premature atrial and ventricular beats,
sinus), real noise at 12-24 dB, labelled with the simulator's ground truth.
They add what DS1 has little of (two AF patients, few S beats) to every
fold's training set; they are never validation data.

Validation must stay patient-wise: the folds in ``models.train`` split by
record, and every variant of a record goes where the record goes.
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware.params import (
    BEAT_CHANNELS,
    BEAT_WINDOW_POINTS,
    ECG_ADC_MAX_COUNT,
    ECG_ADC_MIN_COUNT,
    RR_FEATURES,
)
from models.eval_qrs import DS1_RECORDS as DS1_RECORDS  # for models.train, models.eval_model
from models.eval_qrs import MATCH_WINDOW_MS, SOURCE_FS_HZ, match_beats
from sim.records import MITDB_MAINS_HZ

log = logging.getLogger(__name__)

MAINS_HZ = MITDB_MAINS_HZ  # MIT-BIH was recorded in Boston
CLASSES = ("N", "S", "V", "F", "Q")
AAMI = {
    "N": 0, "L": 0, "R": 0, "e": 0, "j": 0,
    "A": 1, "a": 1, "J": 1, "S": 1,
    "V": 2, "E": 2,
    "F": 3,
    "/": 4, "f": 4, "Q": 4,
}
NOISE_KINDS = ("ma", "em", "bw")
BEAT_LEN = BEAT_WINDOW_POINTS * BEAT_CHANNELS


@dataclass(frozen=True)
class Variant:
    name: str
    fs_hz: int = SOURCE_FS_HZ
    noise: str | None = None
    snr_db: float = 0.0
    gain: float = 1.0
    offset_s: float = 0.0

    @classmethod
    def make(cls, name: str, record: str) -> Variant:
        """The variant ``name`` for ``record``: noise draws are seeded by both."""
        if name == "clean":
            return cls(name)
        if name == "r250":
            return cls(name, fs_hz=250)
        if name.startswith("noise"):
            seed = int(record) * 1000 + int(name[5:] or 0)
            rng = np.random.default_rng(seed)
            return cls(name, noise=str(rng.choice(NOISE_KINDS)),
                       snr_db=float(rng.uniform(6, 18)), gain=float(rng.uniform(0.5, 2.0)),
                       offset_s=float(rng.uniform(0, 1500)))
        raise ValueError(f"unknown variant {name!r} (clean, r250, noise<k>)")


@dataclass
class Beats:
    """One record's beats: R sample (at the variant's rate), inputs, labels."""

    record: str
    variant: str
    r: np.ndarray  # int64 [n]
    beat: np.ndarray  # int8 [n, 180]
    rr: np.ndarray  # int8 [n, 8]
    label: np.ndarray  # int8 [n], -1: no reference beat
    missed: np.ndarray  # int64 [5]: reference beats per class that no detection paired

    def save(self, path: Path) -> None:
        np.savez_compressed(path, r=self.r, beat=self.beat, rr=self.rr, label=self.label,
                            missed=self.missed)

    @classmethod
    def load(cls, path: Path, record: str, variant: str) -> Beats:
        z = np.load(path)
        return cls(record, variant, z["r"], z["beat"], z["rr"], z["label"], z["missed"])


def feature_cache(root: str | Path = "var/beats") -> Path:
    """``root/<key>``: the cache folder of the features this tree's device code
    makes; the key hashes ``firmware/signal/*.py`` and the pipeline's constants
    in ``firmware/params.py`` (their values: other parameters may change freely)."""
    import hashlib

    import firmware.params as params

    h = hashlib.sha256()
    for path in sorted((Path(__file__).resolve().parent.parent / "firmware" / "signal")
                       .glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    consts = sorted((k, getattr(params, k)) for k in dir(params)
                    if k.startswith(("BEAT_", "RR_", "ECG_", "INPUT_", "QRS_")))
    h.update(repr(consts).encode())
    return Path(root) / h.hexdigest()[:12]


def run_pipeline(counts: np.ndarray, fs_hz: int, mains_hz: int = MAINS_HZ,
                 block: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The device's beat pipeline over int ``counts``: (R indices, beat, rr)."""
    from firmware.signal.beatpipe import BeatPipeline

    pipe = BeatPipeline(fs_hz, mains_hz, 0)
    feats = pipe.features
    data = np.clip(np.asarray(counts), ECG_ADC_MIN_COUNT, ECG_ADC_MAX_COUNT)
    data = data.astype(np.int64).tolist()
    block = block or fs_hz
    rs: list[int] = []
    beats = bytearray()
    rrs = bytearray()

    def drain(n: int) -> None:
        for _ in range(n):
            rs.append(pipe.next_beat())
            beats.extend(bytes(feats.beat))
            rrs.extend(bytes(feats.rr))

    for i in range(0, len(data), block):
        drain(pipe.process(data[i:i + block]))
    drain(pipe.flush())
    n = len(rs)
    return (np.asarray(rs, dtype=np.int64),
            np.frombuffer(bytes(beats), dtype=np.int8).reshape(n, BEAT_LEN).copy(),
            np.frombuffer(bytes(rrs), dtype=np.int8).reshape(n, RR_FEATURES).copy())


def mlii_channel(path: str) -> int:
    """The MLII channel of a record (channel 0 if none is named so)."""
    from sim.records import channel_names

    names = channel_names(path)
    return names.index("MLII") if "MLII" in names else 0


def _noise(kind: str, nstdb: Path, n: int, offset: int) -> np.ndarray:
    import wfdb

    if kind == "em":
        x = np.load(nstdb / "em_derived_0dB_mV_360hz.npy")[:, 0].astype(np.float64)
    else:
        x = wfdb.rdrecord(str(nstdb / kind), channels=[0]).p_signal[:, 0]
    x = x - np.mean(x)
    reps = -(-(offset + n) // len(x))
    return np.tile(x, reps)[offset:offset + n]


def record_beats(data_dir: str, record: str, variant: Variant,
                 nstdb: str | None = None) -> Beats:
    """Run one record (MLII) in one variant through the device pipeline and label it."""
    from sim.records import read_annotations, read_channel, to_device_signal

    path = str(Path(data_dir) / record)
    ch = read_channel(path, mlii_channel(path))
    if ch.fs_hz != SOURCE_FS_HZ:
        raise ValueError(f"{path}: expected {SOURCE_FS_HZ} Hz, the header says {ch.fs_hz:g}")
    mv = ch.millivolts()
    ann = read_annotations(path)
    keep = np.array([s in AAMI for s in ann.symbols], dtype=bool)
    ref = ann.samples[keep]
    ref_cls = np.array([AAMI[s] for s in np.asarray(ann.symbols)[keep]], dtype=np.int8)
    if variant.noise:
        if not nstdb:
            raise ValueError("noise variants need the nstdb folder")
        noise = _noise(variant.noise, Path(nstdb), len(mv), int(variant.offset_s * SOURCE_FS_HZ))
        sig = mv - np.median(mv)
        scale = np.sqrt(np.var(sig) / (np.var(noise) * 10 ** (variant.snr_db / 10)))
        mv = variant.gain * (mv + scale * noise)
    fs = variant.fs_hz
    dev = to_device_signal(mv, ch.fs_hz, fs)
    ref = dev.to_device_samples(ref)
    r, beat, rr = run_pipeline(dev.counts, fs)
    window = (MATCH_WINDOW_MS * fs + 500) // 1000
    ref_ok, test_ok = match_beats(ref, r, window)
    label = np.full(len(r), -1, dtype=np.int8)
    label[test_ok] = ref_cls[ref_ok]
    missed = np.bincount(ref_cls[~ref_ok], minlength=len(CLASSES)).astype(np.int64)
    return Beats(record, variant.name, r, beat, rr, label, missed)


#: Simulated training patients: (rhythm, seed); 15 minutes each.
SIM_PATIENTS = (("af", 1), ("af", 2), ("af", 3), ("af", 4), ("pac", 1), ("pac", 2),
                ("pac", 3), ("pvc", 1), ("pvc", 2), ("sinus", 1))
SIM_MINUTES = 15


def sim_beats(rhythm: str, seed: int, minutes: float = SIM_MINUTES) -> Beats:
    """One simulated patient through the device pipeline at 360 Hz, labelled
    with the simulator's ground truth (its AAMI class per beat)."""
    from models.eval_sim import rhythm_scenario

    rng = np.random.default_rng(seed * 7919 + len(rhythm))
    return scenario_beats(rhythm_scenario(rhythm, minutes), f"sim-{rhythm}{seed}", seed,
                          float(rng.uniform(12, 24)), minutes)


def scenario_beats(scenario, name: str, seed: int, snr_db: float, minutes: float) -> Beats:
    """A virtual patient of ``scenario`` (real noise at ``snr_db``) through the device
    pipeline at 360 Hz, labelled with the simulator's ground truth."""
    from sim.patient import VirtualPatient

    fs = SOURCE_FS_HZ
    patient = VirtualPatient(scenario, seed, fs, snr_db=snr_db, mains_uv=0.0, lead_off=False)
    seconds = int(minutes * 60)
    ecg = np.concatenate([patient.next_chunk(fs).ecg for _ in range(seconds)])
    ref = patient.truth.beat_samples()
    ref_cls = np.array([AAMI[c] for c in patient.truth.beat_classes()], dtype=np.int8)
    r, beat, rr = run_pipeline(ecg.astype(np.int64), fs)
    window = (MATCH_WINDOW_MS * fs + 500) // 1000
    ref_ok, test_ok = match_beats(ref, r, window)
    label = np.full(len(r), -1, dtype=np.int8)
    label[test_ok] = ref_cls[ref_ok]
    missed = np.bincount(ref_cls[~ref_ok], minlength=len(CLASSES)).astype(np.int64)
    return Beats(name, "sim", r, beat, rr, label, missed)


#: Simulator hard cases for the beat classes (issue 13's failure modes), scored in
#: ``models/reports/beat_model.md`` and never used to train or to pick a model:
#: name -> (what it tests, SNR dB, scenario tables).  Their seeds (HARD_SEEDS) are
#: not the training patients' (SIM_PATIENTS).
HARD_CASES: dict[str, tuple[str, float, dict]] = {
    "pac_majority": ("premature atrial beats the majority (about 2 in 3), in runs, over a "
                     "slow sinus rhythm (50 bpm) with pauses", 18.0,
                     {"vitals": {"heart_rate_bpm": 50},
                      "rhythm": {"pac_burden_percent": 40, "pauses_per_hour": 30}}),
    "af_pvc": ("atrial fibrillation (95 bpm) with a few PVCs: its N beats must not be S",
               18.0, {"vitals": {"heart_rate_bpm": 95},
                      "rhythm": {"segments": [[0, "af"]], "pvc_burden_percent": 4}}),
    "sinus_arrhythmia": ("sinus rhythm with strong heart-rate variability (8 bpm SD) and "
                         "5 % PACs", 18.0,
                         {"vitals": {"heart_rate_bpm": 65},
                          "patient": {"hrv_std_bpm": 8.0},
                          "variation": {"heart_rate_percent": 15.0},
                          "rhythm": {"pac_burden_percent": 5}}),
    "pvc_noise": ("sinus rhythm with 10 % PVCs in heavy real noise (6 dB)", 6.0,
                  {"vitals": {"heart_rate_bpm": 75},
                   "rhythm": {"pvc_burden_percent": 10}}),
}
HARD_SEEDS = (201, 202, 203)
HARD_MINUTES = 6


def hard_case_beats(name: str, seed: int, minutes: float = HARD_MINUTES) -> Beats:
    """One hard-case patient (:data:`HARD_CASES`) through the device pipeline."""
    from models.eval_sim import _BASE_VITALS
    from sim.scenario import parse_scenario

    _what, snr_db, tables = HARD_CASES[name]
    data = {"name": f"hard-{name}", "duration_s": minutes * 60.0,
            **{k: dict(v) for k, v in tables.items()}}
    data["vitals"] = {**_BASE_VITALS, **tables["vitals"]}
    return scenario_beats(parse_scenario(data, f"hard-{name}"), f"hard-{name}{seed}", seed,
                          snr_db, minutes)


def _hard_job(args: tuple[str, int, str]) -> str:
    name, seed, out = args
    hard_case_beats(name, seed).save(Path(out))
    return out


def build_hard(cache: Path, jobs: int = 2) -> dict[str, list[Beats]]:
    """Beats of every hard-case patient, from the cache or made now."""
    cache.mkdir(parents=True, exist_ok=True)
    paths = {(n, s): cache / f"hard-{n}{s}.npz" for n in HARD_CASES for s in HARD_SEEDS}
    todo = [(n, s, str(p)) for (n, s), p in paths.items() if not p.exists()]
    if todo:
        log.info("simulating %d hard-case patients with %d workers", len(todo), jobs)
        with ProcessPoolExecutor(jobs) as ex:
            list(ex.map(_hard_job, todo))
    return {n: [Beats.load(paths[(n, s)], f"hard-{n}{s}", "sim") for s in HARD_SEEDS]
            for n in HARD_CASES}


def _sim_job(args: tuple[str, int, str]) -> str:
    rhythm, seed, out = args
    sim_beats(rhythm, seed).save(Path(out))
    return out


def build_sim(cache: Path, jobs: int = 2) -> list[Beats]:
    """Beats of every simulated training patient, from the cache or made now."""
    cache.mkdir(parents=True, exist_ok=True)
    paths = [(r, s, cache / f"sim-{r}{s}.npz") for r, s in SIM_PATIENTS]
    todo = [(r, s, str(p)) for r, s, p in paths if not p.exists()]
    if todo:
        log.info("simulating %d training patients with %d workers", len(todo), jobs)
        with ProcessPoolExecutor(jobs) as ex:
            list(ex.map(_sim_job, todo))
    return [Beats.load(p, f"sim-{r}{s}", "sim") for r, s, p in paths]


def _job(args: tuple[str, str, str, str | None, str]) -> str:
    data_dir, record, vname, nstdb, out = args
    b = record_beats(data_dir, record, Variant.make(vname, record), nstdb)
    b.save(Path(out))
    return out


def build(data_dir: str, records: list[str], variants: list[str], cache: Path,
          nstdb: str | None, jobs: int = 2) -> dict[tuple[str, str], Beats]:
    """Beats of every (record, variant), from the cache or made now (in parallel)."""
    cache.mkdir(parents=True, exist_ok=True)
    todo = []
    for rec in records:
        for v in variants:
            out = cache / f"{rec}_{v}.npz"
            if not out.exists():
                todo.append((data_dir, rec, v, nstdb, str(out)))
    if todo:
        log.info("extracting %d record variants with %d workers", len(todo), jobs)
        with ProcessPoolExecutor(jobs) as ex:
            for out in ex.map(_job, todo):
                log.info("  %s", out)
    return {(rec, v): Beats.load(cache / f"{rec}_{v}.npz", rec, v)
            for rec in records for v in variants}
