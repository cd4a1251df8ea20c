"""``medge ecg analyze RECORD [--channel N]`` (contract 3), run as a subprocess.

Records: WFDB records written here from simulator ECG (ground-truth R peaks)
at device rates (250, 360 Hz: run as is) and at other rates (500, 1000 Hz:
resampled to the nearest device rate, results mapped back), and the committed
MIT-BIH DS1 excerpts in tests/data/mitdb/ (reference beat annotations).

Scoring: a detection matches a reference beat within 150 ms (each reference
beat pairs with the nearest unpaired detection, as WFDB ``bxb``).  Beats and
detections in the first ``SKIP_S`` = 3 s are not scored (the detector learns
its thresholds over its first 2 s), nor those in the last ``END_S`` = 0.5 s
(a record ends abruptly: a beat whose R peak lies within the detector's
look-ahead of the end, about 0.2 s, cannot be confirmed).  Thresholds: Se and +P >= 99 % on the
simulator records (at least 140 scored beats each), >= 98 % on every MIT-BIH
excerpt (16.5 s scored, 17-40 beats: in practice no error allowed).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import wfdb

from sim.ecgsyn import EcgsynParams, ecgsyn

MEDGE = Path(sys.executable).with_name("medge")
EXCERPTS = Path(__file__).resolve().parent / "data" / "mitdb"
EXCERPT_RECORDS = ("101", "119", "208", "203")
BEAT_SYMBOLS = frozenset("NLRejAaJSVEF/fQ")
MATCH_MS = 150
SKIP_S = 3.0
END_S = 0.5
ROW = re.compile(r"^(0|[1-9][0-9]*),[NSVFQ]$")


def medge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MEDGE), *args], capture_output=True, text=True, timeout=300,
                          check=False)


def parse_csv(stdout: str) -> list[int]:
    lines = stdout.splitlines()
    assert lines and lines[0] == "sample,label"
    for line in lines[1:]:
        assert ROW.match(line), line
    samples = [int(line.split(",")[0]) for line in lines[1:]]
    assert samples == sorted(set(samples)), "samples must be strictly increasing"
    return samples


def score(ref: np.ndarray, det: np.ndarray, fs: float, n_samples: int
          ) -> tuple[int, int, int]:
    """(TP, FN, FP), counting only reference beats / detections in
    ``[SKIP_S, n_samples / fs - END_S)``."""
    window = MATCH_MS * fs / 1000.0
    det = np.asarray(det, dtype=np.int64)
    used = np.zeros(len(det), dtype=bool)
    matched_ref = np.zeros(len(ref), dtype=bool)
    for i, r in enumerate(np.asarray(ref, dtype=np.int64)):
        dist = np.abs(det - r).astype(np.float64)
        dist[used] = np.inf
        if len(dist) and dist.min() <= window:
            j = int(dist.argmin())
            used[j] = True
            matched_ref[i] = True
    lo = SKIP_S * fs
    hi = n_samples - END_S * fs
    ref = np.asarray(ref)
    scored_ref = (ref >= lo) & (ref < hi)
    tp = int((matched_ref & scored_ref).sum())
    fn = int((~matched_ref & scored_ref).sum())
    fp = int((~used & (det >= lo) & (det < hi)).sum())
    return tp, fn, fp


def se_ppv(tp: int, fn: int, fp: int) -> tuple[float, float]:
    return 100.0 * tp / max(1, tp + fn), 100.0 * tp / max(1, tp + fp)


def write_sim_record(directory: Path, name: str, fs: int, seconds: float = 120.0,
                     hr_bpm: float = 72.0, seed: int = 5, channels: int = 1,
                     ecg_channel: int = 0) -> np.ndarray:
    """A WFDB record (format 16, 200 adu/mV) of simulator ECG; returns the true R peaks."""
    ecg = ecgsyn(seconds, EcgsynParams(sample_rate_hz=fs, heart_rate_mean_bpm=hr_bpm),
                 np.random.default_rng(seed))
    digital = np.zeros((len(ecg.signal_mv), channels), dtype=np.int64)
    rng = np.random.default_rng(seed + 1)
    for ch in range(channels):
        if ch == ecg_channel:
            digital[:, ch] = np.rint(ecg.signal_mv * 200)
        else:  # another lead with low-level noise only
            digital[:, ch] = rng.integers(-3, 4, len(ecg.signal_mv))
    wfdb.wrsamp(name, fs=fs, units=["mV"] * channels,
                sig_name=[f"ch{c}" for c in range(channels)], d_signal=digital,
                fmt=["16"] * channels, adc_gain=[200.0] * channels, baseline=[0] * channels,
                write_dir=str(directory))
    return ecg.r_peaks


# --------------------------------------------------------------- simulator records


@pytest.mark.parametrize("fs", [250, 360, 500, 1000])
def test_simulator_record_beats_match_ground_truth(tmp_path: Path, fs: int) -> None:
    r_peaks = write_sim_record(tmp_path, "sim", fs)
    proc = medge("ecg", "analyze", str(tmp_path / "sim"))
    assert proc.returncode == 0, proc.stderr
    det = parse_csv(proc.stdout)
    assert det[-1] < 120 * fs  # in the record's own numbering
    tp, fn, fp = score(r_peaks, np.array(det), fs, 120 * fs)
    se, ppv = se_ppv(tp, fn, fp)
    assert tp + fn >= 140
    assert se >= 99.0 and ppv >= 99.0, (tp, fn, fp)
    # Native rates run as is; others are resampled and say so on stderr.
    if fs in (250, 360):
        assert "resampl" not in proc.stderr
    else:
        assert "resampled to 360 Hz" in proc.stderr


def test_resampled_record_timing_is_in_record_numbering(tmp_path: Path) -> None:
    # The same ECG at 500 Hz: detections land on the R peaks, not at 360/500 of them.
    fs = 500
    r_peaks = write_sim_record(tmp_path, "sim500", fs, seconds=60.0, hr_bpm=90.0, seed=9)
    det = np.array(parse_csv(medge("ecg", "analyze", str(tmp_path / "sim500")).stdout))
    late = det[det > SKIP_S * fs]
    err_ms = [1000.0 * np.abs(r_peaks - d).min() / fs for d in late]
    assert np.median(err_ms) <= 20.0


def test_channel_option_selects_the_lead(tmp_path: Path) -> None:
    fs = 250
    r_peaks = write_sim_record(tmp_path, "two", fs, seconds=60.0, channels=2, ecg_channel=1)
    proc = medge("ecg", "analyze", str(tmp_path / "two"), "--channel", "1")
    assert proc.returncode == 0, proc.stderr
    tp, fn, fp = score(r_peaks, np.array(parse_csv(proc.stdout)), fs, 60 * fs)
    se, ppv = se_ppv(tp, fn, fp)
    assert se >= 99.0 and ppv >= 99.0
    # Channel 0 holds only +-3 counts of noise (15 uV): few or no beats there.
    quiet = parse_csv(medge("ecg", "analyze", str(tmp_path / "two")).stdout)
    assert len(quiet) < 0.2 * len(r_peaks)


# --------------------------------------------------------------- MIT-BIH excerpts


@pytest.mark.parametrize("record", EXCERPT_RECORDS)
def test_mitdb_excerpt_beats_match_annotations(record: str) -> None:
    path = EXCERPTS / record
    proc = medge("ecg", "analyze", str(path))
    assert proc.returncode == 0, proc.stderr
    det = np.array(parse_csv(proc.stdout))
    ann = wfdb.rdann(str(path), "atr")
    ref = np.array([s for s, sym in zip(ann.sample, ann.symbol) if sym in BEAT_SYMBOLS])
    header = wfdb.rdheader(str(path))
    tp, fn, fp = score(ref, det, float(header.fs), int(header.sig_len))
    se, ppv = se_ppv(tp, fn, fp)
    assert se >= 98.0 and ppv >= 98.0, (record, tp, fn, fp)


def test_excerpts_are_small_and_attributed() -> None:
    total = sum(p.stat().st_size for p in EXCERPTS.iterdir())
    assert total < 200 * 1024
    readme = (EXCERPTS / "README.md").read_text()  # the folder's own README (e34a365)
    assert "ODC-By" in readme and "Moody GB" in readme
    for record in EXCERPT_RECORDS:
        assert f"`{record}`" in readme
        header = wfdb.rdheader(str(EXCERPTS / record))
        assert header.fs == 360 and header.fmt == ["212", "212"]


# --------------------------------------------------------------- errors


def assert_clean_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2
    assert proc.stdout == ""
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("medge: ") and "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_missing_record(tmp_path: Path) -> None:
    assert_clean_error(medge("ecg", "analyze", str(tmp_path / "nope")), "nope", "not found")


@pytest.mark.parametrize("channel", ["2", "-1", "99"])
def test_bad_channel(channel: str) -> None:
    proc = medge("ecg", "analyze", str(EXCERPTS / "101"), "--channel", channel)
    assert_clean_error(proc, "channel", channel)


def test_unreadable_header(tmp_path: Path) -> None:
    (tmp_path / "junk.hea").write_text("this is not a WFDB header\n\x00\x01 garbage\n")
    assert_clean_error(medge("ecg", "analyze", str(tmp_path / "junk")), "junk")


def test_header_without_its_signal_file(tmp_path: Path) -> None:
    write_sim_record(tmp_path, "lost", 250, seconds=5.0)
    (tmp_path / "lost.dat").unlink()
    assert_clean_error(medge("ecg", "analyze", str(tmp_path / "lost")), "lost")


@pytest.mark.parametrize("keep_bytes", [3, 3000])
def test_truncated_signal_file(tmp_path: Path, keep_bytes: int) -> None:
    """A .dat shorter than the header's length (one frame: 3 bytes of format 212
    for 2 signals) is an error, not a record of one frame repeated."""
    for ext in ("hea", "atr"):
        (tmp_path / f"101.{ext}").write_bytes((EXCERPTS / f"101.{ext}").read_bytes())
    (tmp_path / "101.dat").write_bytes((EXCERPTS / "101.dat").read_bytes()[:keep_bytes])
    held = keep_bytes // 3
    assert_clean_error(medge("ecg", "analyze", str(tmp_path / "101")),
                       "101", f"header says 7200 samples, the .dat holds {held}")


def test_model_option_with_a_missing_model(tmp_path: Path) -> None:
    proc = medge("ecg", "analyze", str(EXCERPTS / "101"), "--model", str(tmp_path / "nope"))
    assert_clean_error(proc, "model", "nope")


def test_model_option_with_a_model_the_device_refuses(tmp_path: Path) -> None:
    (tmp_path / "bad.tflite").write_bytes(b"not a flatbuffer")
    (tmp_path / "bad.json").write_text("{}")
    proc = medge("ecg", "analyze", str(EXCERPTS / "101"), "--model", str(tmp_path / "bad"))
    assert_clean_error(proc, "model", "bad")


def test_ecg_needs_a_sub_command() -> None:
    proc = medge("ecg")
    assert proc.returncode == 2 and "ECG_COMMAND" in proc.stderr
