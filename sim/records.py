"""WFDB records as the device's ECG front end delivers them: the one record reader.

Everything that feeds a recorded signal to the device's code reads it here:
``medge ecg analyze`` (``host/services/ecg.py``), the replay sources
(``sim/replay.py``), the beat datasets (``models/dataset.py``) and the QRS
evaluation (``models/eval_qrs.py``).  The steps are separate functions so a
caller can work between them (the training set adds noise in mV between
steps 2 and 3); :func:`device_signal` runs them all.

1. :func:`read_channel`: one channel's digital samples (ADC units) with the
   header's rate, gain and baseline (:class:`RecordChannel`).  Every problem
   is a :class:`RecordError` with a one-line message naming the record: no
   header, a header wfdb cannot read, a channel that does not exist, a signal
   file that is missing or holds fewer samples than the header says (wfdb
   would otherwise repeat a lone frame over the header's length and hand back
   a flat line).
2. :meth:`RecordChannel.millivolts`: ``(adu - baseline) / gain``, the
   header's physical unit (WFDB: ADC units per physical unit), converted to mV
   when the header says V or uV.
3. :func:`resample_mv`: polyphase resampling (:func:`scipy.signal.resample_poly`,
   up and down by the reduced ratio of the two rates) to the device rate;
   :func:`device_rate_for` picks it (the record's own rate when the device
   supports it, else the nearest supported one).
4. :func:`mv_to_counts` (``sim.adc``, the simulated front end's quantiser):
   ``rint(mv * ECG_COUNTS_PER_MV)`` saturated to the int16 rails
   (``firmware.params``).

:class:`DeviceSignal` keeps the counts with both rates and maps sample numbers
both ways: :meth:`DeviceSignal.to_record_samples` (device -> record, for
detections: ``round(i * fs_record / fs_device)``, unique, in range) and
:meth:`DeviceSignal.to_device_samples` (record -> device, for annotations:
``rint(s * fs_device / fs_record)``).  :func:`read_annotations` reads an
annotation file.

Limits: single-segment records (a multi-segment header is a RecordError);
the signal-length check knows the uncompressed WFDB formats (8, 16, 24, 32,
61, 80, 160, 212, 310, 311) and skips FLAC-compressed ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from firmware.params import SUPPORTED_RATES_HZ
from sim.adc import mv_to_counts

log = logging.getLogger(__name__)

__all__ = [
    "Annotations",
    "DeviceSignal",
    "RecordChannel",
    "RecordError",
    "channel_names",
    "device_rate_for",
    "device_signal",
    "mv_to_counts",
    "read_annotations",
    "read_channel",
    "resample_mv",
    "to_device_signal",
]

#: WFDB's default ADC gain (adu per physical unit) when a header gives 0.
WFDB_DEFAULT_ADC_GAIN = 200.0
#: Mains frequency of the MIT-BIH recordings (Boston, USA): the notch used on them.
MITDB_MAINS_HZ = 60
#: mV per physical unit for the units an ECG header may name (others: taken as mV).
_MV_PER_UNIT = {"mV": 1.0, "uV": 1e-3, "\u00b5V": 1e-3, "V": 1e3}
#: Bits per sample of the uncompressed WFDB signal formats (310/311: 3 in 32 bits).
_FORMAT_BITS = {"8": 8.0, "16": 16.0, "24": 24.0, "32": 32.0, "61": 16.0, "80": 8.0,
                "160": 16.0, "212": 12.0, "310": 32.0 / 3.0, "311": 32.0 / 3.0}
_EXTENSIONS = (".hea", ".dat", ".atr")


class RecordError(Exception):
    """The record cannot be used; the message is one line for the user."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _strip_extension(record: str | Path) -> str:
    p = Path(record)
    return str(p.with_suffix("")) if p.suffix in _EXTENSIONS else str(record)


def _read_header(record: str) -> Any:
    import wfdb

    header = Path(record + ".hea")
    if not header.is_file():
        raise RecordError(f"no WFDB record at {record!r} ({header} not found)")
    try:
        hdr = wfdb.rdheader(record)
    except Exception as exc:  # wfdb raises many kinds for a malformed header
        raise RecordError(f"cannot read the header of {record!r}: {_one_line(exc)}") from exc
    if not hasattr(hdr, "file_name"):
        raise RecordError(f"record {record!r} is a multi-segment record (not supported)")
    if int(hdr.n_sig or 0) < 1:
        raise RecordError(f"record {record!r} has no signals")
    return hdr


def channel_names(record: str | Path) -> list[str]:
    """The signal names in the record's header (RecordError as :func:`read_channel`)."""
    hdr = _read_header(_strip_extension(record))
    return [str(n) for n in (hdr.sig_name or [])]


def _check_signal_file(record: str, hdr: Any, channel: int) -> None:
    """RecordError if the channel's signal file is missing or shorter than the header says."""
    name = hdr.file_name[channel]
    path = Path(record).parent / name
    if not path.is_file():
        raise RecordError(f"record {record!r}: signal file {name} not found")
    sig_len = int(hdr.sig_len or 0)
    if sig_len <= 0:  # no length in the header: wfdb reads the whole file
        return
    same_file = [i for i, f in enumerate(hdr.file_name) if f == name]
    bits = [_FORMAT_BITS.get(str(hdr.fmt[i])) for i in same_file]
    if any(b is None for b in bits):  # a compressed format: its size says nothing
        return
    spf = hdr.samps_per_frame or [1] * len(hdr.file_name)
    frame_bits = sum(b * int(spf[i] or 1) for b, i in zip(bits, same_file))
    offset = int((hdr.byte_offset or [None] * len(hdr.file_name))[channel] or 0)
    held = int(max(0, path.stat().st_size - offset) * 8 // frame_bits)
    if held < sig_len:
        where = "the .dat" if name.endswith(".dat") else name
        raise RecordError(f"record {record!r}: header says {sig_len} samples, "
                          f"{where} holds {held}")


@dataclass(frozen=True)
class RecordChannel:
    """One channel of a record as stored: digital samples and how to read them."""

    record: str  # path without extension
    channel: int
    name: str
    units: str
    fs_hz: float
    adc_gain: float  # ADC units per physical unit
    baseline: float  # ADC units at 0 physical units
    digital: npt.NDArray[np.float64]  # ADC units

    def physical(self) -> npt.NDArray[np.float64]:
        """``(adu - baseline) / gain`` in the header's unit (PPG: arbitrary units)."""
        return (self.digital - self.baseline) / self.adc_gain

    def millivolts(self) -> npt.NDArray[np.float64]:
        """The physical signal in mV (a header in V or uV is converted; others are mV)."""
        mv = self.physical()
        scale = _MV_PER_UNIT.get(self.units, 1.0)
        return mv if scale == 1.0 else mv * scale


def read_channel(record: str | Path, channel: int = 0) -> RecordChannel:
    """Channel ``channel`` of the WFDB record at ``record`` (path, extension optional).

    Raises :class:`RecordError` (one line) for a missing or unreadable record,
    a bad channel number, or a signal file missing or shorter than the header."""
    import wfdb

    record = _strip_extension(record)
    hdr = _read_header(record)
    n_sig = int(hdr.n_sig)
    if not isinstance(channel, int) or not 0 <= channel < n_sig:
        raise RecordError(
            f"record {record!r} has {n_sig} channel(s) (0..{n_sig - 1}); "
            f"--channel {channel} does not exist"
        )
    _check_signal_file(record, hdr, channel)
    try:
        rec = wfdb.rdrecord(record, channels=[channel], physical=False)
    except Exception as exc:
        raise RecordError(f"cannot read record {record!r}: {_one_line(exc)}") from exc
    if rec.d_signal is None or rec.fs is None or not rec.fs > 0:
        raise RecordError(f"record {record!r} has no digital samples or no sampling rate")
    gain = float(rec.adc_gain[0]) if rec.adc_gain and rec.adc_gain[0] else WFDB_DEFAULT_ADC_GAIN
    baseline = float(rec.baseline[0]) if rec.baseline and rec.baseline[0] is not None else 0.0
    return RecordChannel(
        record=record, channel=channel,
        name=str((rec.sig_name or [""])[0] or ""), units=str((rec.units or ["mV"])[0] or "mV"),
        fs_hz=float(rec.fs), adc_gain=gain, baseline=baseline,
        digital=np.asarray(rec.d_signal[:, 0], dtype=np.float64))


@dataclass(frozen=True)
class Annotations:
    """An annotation file: sample numbers (the record's numbering) and symbols."""

    samples: npt.NDArray[np.int64]
    symbols: list[str]


def read_annotations(record: str | Path, extension: str = "atr") -> Annotations:
    """The record's ``extension`` annotations (RecordError if unreadable)."""
    import wfdb

    record = _strip_extension(record)
    try:
        ann = wfdb.rdann(record, extension)
    except Exception as exc:
        raise RecordError(f"cannot read the {extension} annotations of {record!r}: "
                          f"{_one_line(exc)}") from exc
    return Annotations(np.asarray(ann.sample, dtype=np.int64), list(ann.symbol))


def device_rate_for(fs_hz: float, supported: Sequence[int] = SUPPORTED_RATES_HZ) -> int:
    """The record's own rate when ``supported`` has it, else the nearest rate in
    ``supported`` (a tie goes to the higher rate)."""
    for r in supported:
        if float(r) == float(fs_hz):
            return int(r)
    return int(min(supported, key=lambda r: (abs(r - fs_hz), -r)))


def resample_mv(mv: npt.ArrayLike, fs_from_hz: float, fs_to_hz: int) -> npt.NDArray[np.float64]:
    """``mv`` from ``fs_from_hz`` to ``fs_to_hz`` (polyphase, the reduced ratio;
    a non-integer record rate is approximated within 1/1000)."""
    mv = np.asarray(mv, dtype=np.float64)
    if float(fs_to_hz) == float(fs_from_hz):
        return mv
    from scipy.signal import resample_poly

    frac = Fraction(int(fs_to_hz)) / Fraction(fs_from_hz).limit_denominator(1000)
    log.info("resampling %g Hz -> %d Hz (up %d, down %d)",
             fs_from_hz, fs_to_hz, frac.numerator, frac.denominator)
    return resample_poly(mv, frac.numerator, frac.denominator)


@dataclass(frozen=True)
class DeviceSignal:
    """One channel as the device sees it: int16 counts at ``device_fs_hz``."""

    counts: npt.NDArray[np.int16]
    record_fs_hz: float
    device_fs_hz: int
    record_len: int  # samples in the record (its own rate)

    @property
    def resampled(self) -> bool:
        return float(self.device_fs_hz) != float(self.record_fs_hz)

    def to_record_samples(self, indices: Sequence[int]) -> list[int]:
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

    def to_device_samples(self, samples: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Record sample numbers (annotations) -> device sample numbers (rounded)."""
        samples = np.asarray(samples, dtype=np.int64)
        if not self.resampled:
            return samples
        return np.rint(samples * (self.device_fs_hz / self.record_fs_hz)).astype(np.int64)


def to_device_signal(mv: npt.ArrayLike, fs_hz: float, device_fs_hz: int) -> DeviceSignal:
    """Millivolts at the record's rate -> device counts at ``device_fs_hz``
    (:func:`resample_mv`, then :func:`mv_to_counts`)."""
    mv = np.asarray(mv, dtype=np.float64)
    counts = mv_to_counts(resample_mv(mv, fs_hz, device_fs_hz))
    return DeviceSignal(counts, float(fs_hz), int(device_fs_hz), len(mv))


def device_signal(record: str | Path, channel: int = 0,
                  device_fs_hz: int | None = None) -> DeviceSignal:
    """Channel ``channel`` of ``record`` as device counts: at ``device_fs_hz``, or
    (None) at :func:`device_rate_for` the record's rate."""
    ch = read_channel(record, channel)
    fs = device_rate_for(ch.fs_hz) if device_fs_hz is None else int(device_fs_hz)
    return to_device_signal(ch.millivolts(), ch.fs_hz, fs)
