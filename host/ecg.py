"""``medge ecg analyze``: a WFDB record through exactly the device's beat code.

The record's digital samples (``wfdb.rdrecord(physical=False)``) of one
channel are turned into the raw counts the device's ECG front end delivers
(``DEVICE_COUNTS_PER_MV`` counts per mV around zero, signed 16 bit), then fed
in blocks of one second, as the device loop does, to
:class:`firmware.signal.beatpipe.BeatPipeline` (filter chain, QRS detector, beat
features) and each beat to :class:`firmware.ml.infer.BeatClassifier` with the
shipped int8 model (``models/beatnet.tflite`` and its ``.json``; ``--model``
picks another), on LiteRT's reference kernels when LiteRT is installed, else
on the pure-Python int8 engine: the two give the same classes bit for bit.
A record whose rate the device supports
(``firmware.signal.filter_tables.SUPPORTED_RATES_HZ``) runs at its own rate; any
other is resampled (polyphase, :func:`scipy.signal.resample_poly`) to the
nearest supported rate and the detected sample numbers are mapped back to the
record's numbering (``round(i * fs_record / fs_device)``).

Output: CSV on stdout, header ``sample,label``, one row per beat, ``label``
one of the AAMI classes N S V F Q.  Without a usable model (files missing or
refused by the device's checks) every beat is labelled ``N`` and a warning
says why.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TextIO

import numpy as np

log = logging.getLogger(__name__)

#: ADC gain of the device's ECG front end (5 uV per count), the scale the
#: device's filters and detector are tuned for; the simulator's front end
#: (``sim.sources.ADC_COUNTS_PER_MV``) and MIT-BIH use the same.
DEVICE_COUNTS_PER_MV = 200
DEVICE_ADC_MIN = -32768
DEVICE_ADC_MAX = 32767
#: The detector is fed this much signal per call, as the device loop does.
BLOCK_MS = 1000
#: Label of every beat when no model can be used.
DEFAULT_LABEL = "N"
#: Mains frequency for the notch (MIT-BIH was recorded in the USA).
DEFAULT_MAINS_HZ = 60
#: The shipped model, without extension (``.tflite`` + ``.json``).
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "beatnet"


class RecordError(Exception):
    """The record cannot be analysed; the message is one line for the user."""


@dataclass(frozen=True)
class DeviceSignal:
    """One channel of a record as the device would see it."""

    counts: np.ndarray  # int16 raw counts at ``device_fs_hz``
    record_fs_hz: float
    device_fs_hz: int
    record_len: int  # samples in the record (its own rate)

    @property
    def resampled(self) -> bool:
        return self.device_fs_hz != self.record_fs_hz

    def to_record_samples(self, indices: list[int]) -> list[int]:
        """Device sample numbers -> the record's own numbering (rounded, unique, in range)."""
        if not self.resampled:
            return [int(i) for i in indices]
        ratio = self.record_fs_hz / self.device_fs_hz
        out: list[int] = []
        for i in indices:
            s = min(round(i * ratio), self.record_len - 1)
            if not out or s > out[-1]:
                out.append(s)
        return out


def supported_rates_hz() -> tuple[int, ...]:
    from firmware.signal.filter_tables import SUPPORTED_RATES_HZ

    return tuple(int(r) for r in SUPPORTED_RATES_HZ)


def device_rate_for(fs_hz: float, supported: tuple[int, ...]) -> int:
    """The record's own rate when the device supports it, else the nearest
    supported rate (a tie goes to the higher rate)."""
    for r in supported:
        if float(r) == float(fs_hz):
            return r
    return min(supported, key=lambda r: (abs(r - fs_hz), -r))


def _strip_extension(record: str) -> str:
    p = Path(record)
    if p.suffix in (".hea", ".dat", ".atr"):
        return str(p.with_suffix(""))
    return record


def read_channel(record: str, channel: int) -> tuple[np.ndarray, float, float, float]:
    """Digital samples of one channel, with fs, ADC gain and baseline.

    Raises RecordError with a one-line message for a missing or unreadable
    record or a bad channel number."""
    import wfdb

    record = _strip_extension(record)
    header = Path(record + ".hea")
    if not header.is_file():
        raise RecordError(f"no WFDB record at {record!r} ({header} not found)")
    try:
        hdr = wfdb.rdheader(record)
    except Exception as exc:  # wfdb raises many kinds for a malformed header
        raise RecordError(f"cannot read the header of {record!r}: {_one_line(exc)}") from exc
    n_sig = int(hdr.n_sig or 0)
    if n_sig < 1:
        raise RecordError(f"record {record!r} has no signals")
    if not 0 <= channel < n_sig:
        raise RecordError(
            f"record {record!r} has {n_sig} channel(s) (0..{n_sig - 1}); "
            f"--channel {channel} does not exist"
        )
    try:
        rec = wfdb.rdrecord(record, channels=[channel], physical=False)
    except Exception as exc:
        raise RecordError(f"cannot read record {record!r}: {_one_line(exc)}") from exc
    if rec.d_signal is None or rec.fs is None or not rec.fs > 0:
        raise RecordError(f"record {record!r} has no digital samples or no sampling rate")
    samples = np.asarray(rec.d_signal[:, 0], dtype=np.float64)
    gain = float(rec.adc_gain[0]) if rec.adc_gain and rec.adc_gain[0] else 200.0
    baseline = float(rec.baseline[0]) if rec.baseline and rec.baseline[0] is not None else 0.0
    return samples, float(rec.fs), gain, baseline


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def to_device_signal(
    digital: np.ndarray, fs_hz: float, adc_gain: float, baseline: float,
    supported: tuple[int, ...],
) -> DeviceSignal:
    """Scale to device counts (``DEVICE_COUNTS_PER_MV``, zero at the record's
    baseline), resample to a supported rate if needed, round and saturate."""
    mv = (digital - baseline) / adc_gain
    device_fs = device_rate_for(fs_hz, supported)
    if float(device_fs) != float(fs_hz):
        from scipy.signal import resample_poly

        frac = Fraction(device_fs) / Fraction(fs_hz).limit_denominator(1000)
        log.info("resampling %g Hz -> %d Hz (up %d, down %d)",
                 fs_hz, device_fs, frac.numerator, frac.denominator)
        mv = resample_poly(mv, frac.numerator, frac.denominator)
    counts = np.clip(np.rint(mv * DEVICE_COUNTS_PER_MV), DEVICE_ADC_MIN, DEVICE_ADC_MAX)
    return DeviceSignal(counts.astype(np.int16), fs_hz, device_fs, len(digital))


def detect_beats(counts: np.ndarray, fs_hz: int) -> list[int]:
    """Run the device's QRS detector over ``counts`` in one-second blocks."""
    from firmware.signal.qrs import QrsDetector

    det = QrsDetector(fs_hz)
    block = max(1, fs_hz * BLOCK_MS // 1000)
    data = counts.tolist()
    peaks: list[int] = []
    for start in range(0, len(data), block):
        peaks.extend(det.process(data[start : start + block]))
    peaks.extend(det.flush())
    return sorted(set(int(p) for p in peaks))


def load_classifier(model: str | Path | None = None, runtime: str = "auto"):
    """The beat classifier for ``model`` (path without extension; None: the
    shipped one), or None with a warning when it cannot be used."""
    from firmware.ml.infer import ModelSlot

    base = Path(model) if model else DEFAULT_MODEL
    slot = ModelSlot(runtime)
    if not slot.install_files(str(base.with_suffix(".tflite")), str(base.with_suffix(".json"))):
        log.warning("no beat classifier (%s): every beat is labelled %s",
                    slot.last_error, DEFAULT_LABEL)
        return None
    return slot.classifier


def classify_beats(counts: np.ndarray, fs_hz: int, classifier,
                   mains_hz: int = DEFAULT_MAINS_HZ) -> list[tuple[int, str]]:
    """The device's beat pipeline (and classifier) over ``counts``: (sample, label)."""
    from firmware.ml.infer import AAMI_LABELS
    from firmware.signal.beatpipe import BeatPipeline

    pipe = BeatPipeline(fs_hz, mains_hz, 0)
    feats = pipe.features
    block = max(1, fs_hz * BLOCK_MS // 1000)
    data = counts.tolist()
    out: list[tuple[int, str]] = []

    def drain(n: int) -> None:
        for _ in range(n):
            r = pipe.next_beat()
            label = (AAMI_LABELS[classifier.classify(feats.beat, feats.rr)]
                     if classifier is not None else DEFAULT_LABEL)
            out.append((int(r), label))

    for start in range(0, len(data), block):
        drain(pipe.process(data[start : start + block]))
    drain(pipe.flush())
    return out


def analyze_record(record: str, channel: int = 0, model: str | Path | None = None,
                   runtime: str = "auto") -> list[tuple[int, str]]:
    """Beats of ``record`` as ``(sample, label)`` in the record's numbering."""
    digital, fs, gain, baseline = read_channel(record, channel)
    sig = to_device_signal(digital, fs, gain, baseline, supported_rates_hz())
    if sig.resampled:
        log.warning("record rate %g Hz is not a device rate: resampled to %d Hz",
                    fs, sig.device_fs_hz)
    beats = classify_beats(sig.counts, sig.device_fs_hz, load_classifier(model, runtime))
    # Device sample numbers -> the record's; two beats rounded onto one record
    # sample keep the first label.
    keep: dict[int, str] = {}
    for s, label in beats:
        for rs in sig.to_record_samples([s]):
            keep.setdefault(rs, label)
    return sorted(keep.items())


def run_analyze(record: str, channel: int, out: TextIO | None = None,
                model: str | None = None, runtime: str = "auto") -> int:
    """The ``medge ecg analyze`` command: 0 on success, 2 on a bad record or channel."""
    out = out or sys.stdout
    try:
        beats = analyze_record(record, channel, model, runtime)
    except RecordError as exc:
        print(f"medge: {exc}", file=sys.stderr)
        return 2
    lines = ["sample,label"]
    lines.extend(f"{s},{label}" for s, label in beats)
    out.write("\n".join(lines) + "\n")
    return 0
