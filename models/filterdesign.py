"""Design the device's ECG filters with scipy and quantize them to Q15 tables.

``python -m models.filterdesign --write`` (``make tables``) regenerates the
committed firmware module ``firmware/signal/filter_tables.py`` from :data:`DESIGN`,
the one set of design parameters (corner frequencies, orders, notch Q,
supported rates); ``--check`` exits 1 if the committed file is stale;
without options it prints a report: the tables, their quantization error,
integer noise floors and group delays.

The pipeline for each (sample rate, filter):

1. **Design** in zero-pole-gain form with scipy.signal (Butterworth band-
   and low-pass, ``iirnotch``) and pair poles with their nearest zeros into
   second-order sections (``zpk2sos(..., pairing="nearest")``, which orders
   the sections so the poles closest to the unit circle come last).  The
   baseline high-pass is the exception, see below.
2. **Scale** against internal overflow (L-infinity scaling): the gain of
   each section but the last is set so the cumulative response from the
   filter input to that section's output peaks at exactly 1 (0 dB) over
   0 .. fs/2; the last section restores the design's overall gain (whose
   peak is 1 for every filter here).  A full-scale sinusoid therefore never
   saturates a section; the input scaling of ``firmware/signal/ecgfilter.py`` keeps
   ECG at most half scale so transients (steps, overshoot) have 6 dB of
   headroom.
3. **Quantize** to the CMSIS-DSP ``arm_biquad_cascade_df1_q15`` layout
   ``{b0, 0, b1, b2, a1, a2}`` per section, with ``a1``/``a2`` negated
   relative to scipy's ``a`` (CMSIS adds the feedback terms).  One
   ``post_shift`` serves the whole cascade (as in CMSIS): the smallest
   ``0..7`` for which every coefficient ``c / 2**post_shift``, rounded to
   Q15 half away from zero, lies in -32768..32767 (so coefficients up to
   ``2**post_shift`` in magnitude fit); the conversion is the device's own
   :func:`firmware.signal.dsp.float_to_q15` (round, then saturate; with that
   post_shift the saturation never triggers).  Zeros that sit exactly on the
   unit circle stay there: where the float section has ``B(1) = 0``,
   ``B(-1) = 0`` or ``b2 = b0`` the integer section gets the same identity
   exactly (``b1 = -(b0 + b2)`` etc.), so the high-passes block DC exactly
   and the notches keep an unbounded notch depth at their (slightly moved)
   notch frequency.  If that adjustment pushes a coefficient out of range
   the next post_shift is used.

**Baseline high-pass: first-order sections.**  A second-order section for a
0.5 Hz corner at 250-360 Hz has ``a1 ~ 1.98``, hence post_shift 1 (Q14),
and Q14 cannot place its poles: they sit ~0.009 from z = 1 with an angle
whose square (~8e-5) is about one Q14 step.  Measured: the rounded 2nd-order
Butterworth deviates from its design by 0.34 dB in the passband (-0.60
instead of -0.26 dB at 1 Hz), and no choice of neighbouring integer
coefficients gets below 0.18 dB.  The baseline filter is therefore
``baseline_order`` identical first-order high-pass sections (real poles,
all coefficients below 1, post_shift 0, full Q15 resolution), their corner
``baseline_section_corner_hz`` set so the cascade is -3 dB at
``baseline_corner_hz``: quantization error < 0.005 dB above 1 Hz.

**Structure: error feedback where poles are near z = 1.**  A plain CMSIS DF1
section truncates ``acc >> (15 - post_shift)`` toward minus infinity, and
that error passes through ``1 / A(z)``, whose DC gain is ~180 for the
baseline sections and ~100 for the second QRS band-pass section.  Measured
with :func:`noise_floor` (LSB of the Q15 output, 360 Hz): the plain DF1
baseline sits at -64 LSB with zero input, -178 with constant input, and its
error against the float filter with the same coefficients has a mean of -89
LSB; the QRS band-pass sticks at -99 LSB.  (A second-order Butterworth
baseline section in Q14 was far worse: a dead band of -16183 LSB, half of
full scale.)  Scaling the input up does not help: the dead band is in
absolute LSB.  Tables named in :data:`NOISE_SHAPED` are therefore meant for
:class:`firmware.signal.dsp.BiquadCascadeEfQ15`: the same arithmetic plus error
feedback of the truncation remainder, first order (``1 - z**-1``) for a
first-order section and second order (``(1 - z**-1)**2``) for a biquad,
zeros that cancel the poles near z = 1.  Measured: zero and constant inputs
settle to exactly 0 (baseline), the error against the float filter has mean
0, rms ~0.4 LSB and peak < 2 LSB, for the 40 Hz low-pass too (plain: mean
-0.9 .. -1.5 LSB).  The notches (poles at 50/60 Hz, far from z = 1) keep the
plain CMSIS form, bit-exact with CMSIS-DSP: their error is 1.0 .. 1.75 LSB
rms either way (error feedback: 1.2 .. 1.75).  The report and
tests/test_filterdesign.py give every figure.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from firmware import params as firmware_params
from firmware.signal import dsp

REPO_ROOT = Path(__file__).resolve().parent.parent
TABLES_PATH = REPO_ROOT / "firmware" / "signal" / "filter_tables.py"


@dataclass(frozen=True)
class DesignParams:
    """The filter design parameters, units in the names.  The generated
    ``firmware/signal/filter_tables.py`` repeats them as named constants."""

    sample_rates_hz: tuple[int, ...] = firmware_params.SUPPORTED_RATES_HZ
    mains_hz: tuple[int, ...] = firmware_params.SUPPORTED_MAINS_HZ
    #: Baseline-wander removal: ``baseline_order`` identical first-order
    #: high-pass sections, -3 dB in all at ``baseline_corner_hz``.
    baseline_corner_hz: float = 0.5
    baseline_order: int = 2
    #: Mains notch (scipy.signal.iirnotch): quality factor = f0 / -3 dB bandwidth.
    notch_q: float = 30.0
    #: QRS band-pass for the detector (Pan-Tompkins' 5-15 Hz band): Butterworth,
    #: ``qrs_order`` poles per band edge (2 * qrs_order poles in all).
    qrs_low_hz: float = 5.0
    qrs_high_hz: float = 15.0
    qrs_order: int = 2
    #: Monitoring-band low-pass (optional, for display and the beat classifier).
    monitor_lowpass_hz: float = 40.0
    monitor_lowpass_order: int = 2
    #: Frequency at which group delays are tabulated (the QRS energy band's centre).
    group_delay_ref_hz: float = 10.0


DESIGN = DesignParams()

#: Every table name, in the order of the generated module.
FILTER_NAMES = ("baseline", "notch50", "notch60", "qrs_bandpass", "monitor_lowpass")
#: Tables meant for dsp.BiquadCascadeEfQ15 (error feedback); the rest for BiquadCascadeQ15.
NOISE_SHAPED = ("baseline", "qrs_bandpass", "monitor_lowpass")

_SCALE_GRID_POINTS = 1 << 14
_MAX_POST_SHIFT = 7


@dataclass(frozen=True)
class Q15Table:
    """A quantized cascade: the arguments of ``dsp.BiquadCascadeQ15``."""

    num_stages: int
    coeffs: tuple[int, ...]
    post_shift: int

    def as_tuple(self) -> tuple[int, tuple[int, ...], int]:
        return (self.num_stages, self.coeffs, self.post_shift)

    def as_sos(self) -> np.ndarray:
        """The exact float filter these integers implement (scipy SOS layout)."""
        k = 2.0**self.post_shift / 32768.0
        rows = []
        for s in range(self.num_stages):
            b0, _, b1, b2, a1, a2 = self.coeffs[6 * s : 6 * s + 6]
            rows.append([b0 * k, b1 * k, b2 * k, 1.0, -a1 * k, -a2 * k])
        return np.array(rows)


# ---------------------------------------------------------------- design


def _check_rate(fs_hz: int, params: DesignParams) -> None:
    if fs_hz not in params.sample_rates_hz:
        raise ValueError(
            f"unsupported sample rate {fs_hz!r} Hz; supported: {params.sample_rates_hz}"
        )


def design_zpk(fs_hz: int, name: str, params: DesignParams = DESIGN) -> tuple:
    """The float design of table ``name`` at ``fs_hz``: scipy (z, p, k)."""
    _check_rate(fs_hz, params)
    if name == "baseline":
        z, p, k = signal.butter(1, baseline_section_corner_hz(params), "highpass", fs=fs_hz,
                                output="zpk")
        n = params.baseline_order
        return np.repeat(z, n), np.repeat(p, n), k**n
    if name.startswith("notch") and name[5:].isdigit() and int(name[5:]) in params.mains_hz:
        b, a = signal.iirnotch(int(name[5:]), params.notch_q, fs=fs_hz)
        return signal.tf2zpk(b, a)
    if name == "qrs_bandpass":
        band = [params.qrs_low_hz, params.qrs_high_hz]
        return signal.butter(params.qrs_order, band, "bandpass", fs=fs_hz, output="zpk")
    if name == "monitor_lowpass":
        return signal.butter(
            params.monitor_lowpass_order,
            params.monitor_lowpass_hz,
            "lowpass",
            fs=fs_hz,
            output="zpk",
        )
    raise ValueError(f"unknown filter {name!r}; known: {FILTER_NAMES}")


def baseline_section_corner_hz(params: DesignParams = DESIGN) -> float:
    """Corner of each of the ``baseline_order`` identical first-order sections
    that puts the cascade's -3 dB point at ``baseline_corner_hz``:
    ``(1 + (fc / f)**2)**N = 2`` at ``f = baseline_corner_hz``."""
    n = params.baseline_order
    return params.baseline_corner_hz * math.sqrt(2.0 ** (1.0 / n) - 1.0)


def _first_order_sections(z: np.ndarray, p: np.ndarray, k: float) -> np.ndarray:
    """One first-order section (as a SOS row) per real pole, zeros paired by order."""
    n = len(p)
    gain = abs(k) ** (1.0 / n)
    rows = []
    for i in range(n):
        b = gain * np.array([1.0, -float(np.real(z[i]))])
        rows.append([b[0], b[1], 0.0, 1.0, -float(np.real(p[i])), 0.0])
    if k < 0:
        rows[0][:3] = [-v for v in rows[0][:3]]
    return np.array(rows)


def _response(sos: np.ndarray, fs_hz: int) -> np.ndarray:
    grid = np.linspace(0.0, fs_hz / 2.0, _SCALE_GRID_POINTS + 1)  # Nyquist included
    _, h = signal.sosfreqz(sos, worN=grid, fs=fs_hz)
    return h


def scale_sections(sos: np.ndarray, fs_hz: int) -> np.ndarray:
    """L-infinity scaling: the cumulative response up to each section but the
    last peaks at 1; the last section keeps the overall gain as designed."""
    sos = np.array(sos, dtype=float)
    total = 1.0
    for k in range(len(sos) - 1):
        peak = float(np.max(np.abs(_response(sos[: k + 1], fs_hz))))
        sos[k, :3] /= peak
        total *= peak
    sos[-1, :3] *= total
    return sos


def design_sos(fs_hz: int, name: str, params: DesignParams = DESIGN) -> np.ndarray:
    """Float second-order sections of ``name`` at ``fs_hz``, paired and scaled."""
    z, p, k = design_zpk(fs_hz, name, params)
    if name == "baseline":
        sos = _first_order_sections(z, p, k)
    else:
        sos = signal.zpk2sos(z, p, k, pairing="nearest")
    return scale_sections(sos, fs_hz)


# ---------------------------------------------------------------- quantization


def _round_half_away(x: float) -> int:
    return math.floor(abs(x) + 0.5) * (1 if x >= 0 else -1)


def _section_values(row: np.ndarray) -> list[float]:
    b0, b1, b2, a0, a1, a2 = (float(v) for v in row)
    if a0 != 1.0:
        b0, b1, b2, a1, a2 = b0 / a0, b1 / a0, b2 / a0, a1 / a0, a2 / a0
    return [b0, b1, b2, -a1, -a2]  # CMSIS signs: y = b.x + a1 y1 + a2 y2


def _keep_unit_circle_zeros(vals: list[float], q: list[int]) -> None:
    """Make the integer numerator keep the float one's exact unit-circle zeros."""
    b0, b1, b2 = vals[:3]
    tol = 1e-9 * max(abs(b0), abs(b1), abs(b2))
    at_plus1 = abs(b0 + b1 + b2) <= tol
    at_minus1 = abs(b0 - b1 + b2) <= tol
    if at_plus1 and at_minus1:  # zeros at +1 and -1: b = g * (1, 0, -1)
        q[1] = 0
        q[2] = -q[0]
        return
    if abs(b2 - b0) <= tol:  # conjugate pair on the unit circle (notch), or a double zero at +-1
        q[2] = q[0]
    if at_plus1:
        q[1] = -(q[0] + q[2])
    elif at_minus1:
        q[1] = q[0] + q[2]


def _gain_at(sos: np.ndarray, w: float) -> float:
    _, h = signal.sosfreqz(sos, worN=[w])
    return float(abs(h[0]))


def quantize_sos(sos: np.ndarray) -> Q15Table:
    """Q15 CMSIS-order table of ``sos``; the post_shift rule is in the module docstring.

    Gain correction: in a cascade the last section's numerator absorbs the
    gain error that quantizing the earlier sections left at the frequency of
    the design's peak response (small numerators such as the QRS band-pass'
    first section, b0 = 140, are only 0.7 % fine).
    """
    sos = np.atleast_2d(np.asarray(sos, dtype=float))
    sections = [_section_values(row) for row in sos]
    w_grid, h = signal.sosfreqz(sos, worN=_SCALE_GRID_POINTS)
    w_peak = float(w_grid[int(np.argmax(np.abs(h)))])
    for post_shift in range(_MAX_POST_SHIFT + 1):
        scale = 2.0**post_shift
        fits = all(
            -32768 <= _round_half_away(v * 32768.0 / scale) <= 32767
            for vals in sections
            for v in vals
        )
        if not fits:
            continue
        coeffs: list[int] = []
        for i, vals in enumerate(sections):
            if i > 0 and i == len(sections) - 1:
                done = Q15Table(i, tuple(coeffs), post_shift).as_sos()
                ratio = _gain_at(sos[:i], w_peak) / _gain_at(done, w_peak)
                vals = [v * ratio for v in vals[:3]] + vals[3:]
            q = [dsp.float_to_q15(v / scale) for v in vals]
            _keep_unit_circle_zeros(vals, q)
            b0, b1, b2, a1, a2 = q
            coeffs += [b0, 0, b1, b2, a1, a2]
        if all(-32768 <= c <= 32767 for c in coeffs):
            return Q15Table(len(sections), tuple(coeffs), post_shift)
    raise ValueError(f"coefficients do not fit Q15 with post_shift <= {_MAX_POST_SHIFT}")


def q15_table(fs_hz: int, name: str, params: DesignParams = DESIGN) -> Q15Table:
    return quantize_sos(design_sos(fs_hz, name, params))


# ---------------------------------------------------------------- analysis


def group_delay_samples(sos: np.ndarray, f_hz: float, fs_hz: int) -> float:
    """Group delay of the cascade at ``f_hz``, in samples."""
    total = 0.0
    for row in np.atleast_2d(sos):
        _, gd = signal.group_delay((row[:3], row[3:]), w=[f_hz], fs=fs_hz)
        total += float(gd[0])
    return total


def passband_hz(name: str, fs_hz: int, params: DesignParams = DESIGN) -> tuple[float, float]:
    """Where each filter's quantized response must track its design closely."""
    nyq_guard = 0.49 * fs_hz
    if name == "baseline":
        return (2.0 * params.baseline_corner_hz, nyq_guard)
    if name.startswith("notch"):
        return (0.0, nyq_guard)  # minus the notch region, see notch_exclusion_hz
    if name == "qrs_bandpass":
        return (params.qrs_low_hz, params.qrs_high_hz)
    if name == "monitor_lowpass":
        return (0.0, 0.5 * params.monitor_lowpass_hz)
    raise ValueError(f"unknown filter {name!r}")


def notch_exclusion_hz(name: str, params: DesignParams = DESIGN) -> tuple[float, float] | None:
    """The band around a notch excluded from the passband comparison: +-3 bandwidths."""
    if not name.startswith("notch"):
        return None
    f0 = float(name[5:])
    bw = f0 / params.notch_q
    return (f0 - 3 * bw, f0 + 3 * bw)


def response_db(sos: np.ndarray, freqs_hz: np.ndarray, fs_hz: int) -> np.ndarray:
    _, h = signal.sosfreqz(sos, worN=np.asarray(freqs_hz, dtype=float), fs=fs_hz)
    return 20 * np.log10(np.maximum(np.abs(h), 1e-300))


def passband_freqs_hz(name: str, fs_hz: int, params: DesignParams = DESIGN) -> np.ndarray:
    lo, hi = passband_hz(name, fs_hz, params)
    f = np.linspace(lo, hi, 2000)
    excl = notch_exclusion_hz(name, params)
    if excl is not None:
        f = f[(f < excl[0]) | (f > excl[1])]
    return f


def quantization_error_db(fs_hz: int, name: str, params: DesignParams = DESIGN) -> float:
    """Largest |quantized - design| response difference over the passband, in dB."""
    sos = design_sos(fs_hz, name, params)
    f = passband_freqs_hz(name, fs_hz, params)
    diff = response_db(quantize_sos(sos).as_sos(), f, fs_hz) - response_db(sos, f, fs_hz)
    return float(np.max(np.abs(diff)))


def filter_class(name: str) -> Callable[..., dsp.BiquadCascadeQ15]:
    return dsp.BiquadCascadeEfQ15 if name in NOISE_SHAPED else dsp.BiquadCascadeQ15


def run_integer(table: Q15Table, samples: Sequence[int], noise_shaped: bool) -> np.ndarray:
    """Run ``samples`` through the device implementation of ``table``."""
    cls = dsp.BiquadCascadeEfQ15 if noise_shaped else dsp.BiquadCascadeQ15
    filt = cls(*table.as_tuple())
    return np.array(filt.process([int(v) for v in samples]), dtype=np.int64)


def _slowest_time_constant_samples(table: Q15Table) -> float:
    radius = max(float(np.max(np.abs(np.roots(row[3:])))) for row in table.as_sos())
    return 1.0 / max(1.0 - radius, 1e-6)


def integer_gain_db(
    table: Q15Table,
    fs_hz: int,
    f_hz: float,
    noise_shaped: bool,
    amplitude: int = 16384,
) -> float:
    """Gain of the integer implementation at ``f_hz`` measured with a sinusoid.

    The input is ``round(amplitude * sin(2 pi f n / fs))``; after the slowest
    pole has decayed (12 time constants, at least 1 s) a least-squares fit of
    sine, cosine and offset over max(2 s, 10 periods) gives the output
    amplitude, compared with the same fit of the input.
    """
    settle = max(int(12 * _slowest_time_constant_samples(table)), fs_hz)
    measure = max(2 * fs_hz, int(10 * fs_hz / f_hz))
    n = np.arange(settle + measure)
    x = np.round(amplitude * np.sin(2 * np.pi * f_hz * n / fs_hz)).astype(np.int64)
    y = run_integer(table, x, noise_shaped)
    basis = np.column_stack(
        [
            np.sin(2 * np.pi * f_hz * n[settle:] / fs_hz),
            np.cos(2 * np.pi * f_hz * n[settle:] / fs_hz),
            np.ones(measure),
        ]
    )

    def amp(v: np.ndarray) -> float:
        c, *_ = np.linalg.lstsq(basis, v[settle:].astype(float), rcond=None)
        return float(math.hypot(c[0], c[1]))

    return 20 * math.log10(max(amp(y), 1e-12) / amp(x))


@dataclass(frozen=True)
class NoiseFloor:
    """Integer-vs-float behaviour of one table, in LSB of the Q15 output.

    ``zero_*``: output range in the last 10 s of 60 s of zero input that
    follow 5 s of random input (dead band / limit cycles); ``dc_*``: output
    range in the last 10 s of 120 s of constant input 10000 minus the float
    filter's steady state; ``ramp_max``: worst |error| against the float
    filter over the second half of a 120 s ramp from -16000 to +16000;
    ``err_*``: error against the float filter (same quantized coefficients,
    ``scipy.signal.sosfilt``) for 60 s of Gaussian noise, sd 3000 LSB.
    """

    zero_min: int
    zero_max: int
    dc_min: float
    dc_max: float
    ramp_max: float
    err_mean: float
    err_rms: float
    err_max: float


def noise_floor(table: Q15Table, fs_hz: int, noise_shaped: bool, seed: int = 1) -> NoiseFloor:
    rng = np.random.default_rng(seed)
    ref_sos = table.as_sos()

    burst = rng.integers(-8000, 8000, 5 * fs_hz)
    x = np.concatenate([burst, np.zeros(60 * fs_hz, dtype=np.int64)])
    tail = run_integer(table, x, noise_shaped)[-10 * fs_hz :]

    dc = np.full(120 * fs_hz, 10000, dtype=np.int64)
    dc_err = (run_integer(table, dc, noise_shaped) - signal.sosfilt(ref_sos, dc.astype(float)))[
        -10 * fs_hz :
    ]

    ramp = np.round(np.linspace(-16000, 16000, 120 * fs_hz)).astype(np.int64)
    ramp_err = run_integer(table, ramp, noise_shaped) - signal.sosfilt(ref_sos, ramp.astype(float))
    ramp_err = ramp_err[len(ramp_err) // 2 :]

    noise = np.clip(np.round(rng.standard_normal(60 * fs_hz) * 3000), -32768, 32767)
    err = run_integer(table, noise, noise_shaped) - signal.sosfilt(ref_sos, noise)
    return NoiseFloor(
        zero_min=int(tail.min()),
        zero_max=int(tail.max()),
        dc_min=float(dc_err.min()),
        dc_max=float(dc_err.max()),
        ramp_max=float(np.max(np.abs(ramp_err))),
        err_mean=float(err.mean()),
        err_rms=float(np.sqrt(np.mean(err**2))),
        err_max=float(np.max(np.abs(err))),
    )


# ---------------------------------------------------------------- code generation

_HEADER = '''\
# GENERATED FILE - do not edit.  Regenerate with `python -m models.filterdesign --write`
# (`make tables`) after changing the design parameters in models/filterdesign.py;
# tests/test_filterdesign.py fails when this file and the generator disagree.
"""Q15 filter tables of the device's ECG chain (CMSIS-DSP biquad layout).

Data only: :mod:`firmware.signal.filters` reads it (``table(fs_hz, name)``
gives ``(num_stages, coeffs, post_shift)``, the arguments of
``firmware.signal.dsp.BiquadCascadeQ15`` (``coeffs``: per section
``{{b0, 0, b1, b2, a1, a2}}`` in Q15 scaled down by ``2**post_shift``, ``a1``/``a2``
negated relative to scipy)).  Tables named in ``NOISE_SHAPED`` are meant for
``firmware.signal.dsp.BiquadCascadeEfQ15`` (same arguments, error feedback): their
poles sit so close to z = 1 that plain truncation leaves a DC offset (dead
band) of about a hundred LSB (figures in models/filterdesign.py).

Design (models/filterdesign.py ``DESIGN``; the constants below repeat it):

- ``baseline``: {baseline_order} identical first-order high-pass sections, -3 dB at
  {baseline_corner_hz} Hz in all (baseline-wander removal; first-order sections keep full
  Q15 resolution on poles this close to z = 1);
- ``notch50``/``notch60``: ``scipy.signal.iirnotch`` at the mains frequency,
  Q = {notch_q} (-3 dB width f0 / Q);
- ``qrs_bandpass``: Butterworth band-pass {qrs_low_hz}-{qrs_high_hz} Hz, {qrs_poles} poles
  (the QRS detector's band, Pan-Tompkins);
- ``monitor_lowpass``: Butterworth low-pass, order {monitor_lowpass_order},
  {monitor_lowpass_hz} Hz (monitoring band, optional).

Sections are paired nearest-zero and L-infinity scaled (the response from
the input to every section output peaks at 0 dB); one post_shift per
cascade, the smallest that fits every rounded coefficient in Q15.

``GROUP_DELAY_SAMPLES``: group delay at ``GROUP_DELAY_REF_HZ``, in samples
(float, 0.01 sample resolution), for aligning detections with the raw signal.

Rates and mains are those of ``firmware.params`` (``SUPPORTED_RATES_HZ`` =
{sample_rates_hz!r}, ``SUPPORTED_MAINS_HZ`` = {mains_hz!r}), the one home of both.
"""

BASELINE_CORNER_HZ = {baseline_corner_hz!r}
BASELINE_ORDER = {baseline_order!r}
NOTCH_Q = {notch_q!r}
QRS_BAND_LOW_HZ = {qrs_low_hz!r}
QRS_BAND_HIGH_HZ = {qrs_high_hz!r}
QRS_ORDER = {qrs_order!r}
MONITOR_LOWPASS_HZ = {monitor_lowpass_hz!r}
MONITOR_LOWPASS_ORDER = {monitor_lowpass_order!r}
GROUP_DELAY_REF_HZ = {group_delay_ref_hz!r}

FILTER_NAMES = {filter_names}
NOISE_SHAPED = {noise_shaped}

'''

def _str_tuple(items: Sequence[str]) -> str:
    return "(" + ", ".join(f'"{item}"' for item in items) + ("," if len(items) == 1 else "") + ")"


def render_module(params: DesignParams = DESIGN) -> str:
    """The text of ``firmware/signal/filter_tables.py`` for ``params``."""
    head = _HEADER.format(
        sample_rates_hz=tuple(params.sample_rates_hz),
        mains_hz=tuple(params.mains_hz),
        baseline_corner_hz=params.baseline_corner_hz,
        baseline_order=params.baseline_order,
        notch_q=params.notch_q,
        qrs_low_hz=params.qrs_low_hz,
        qrs_high_hz=params.qrs_high_hz,
        qrs_order=params.qrs_order,
        qrs_poles=2 * params.qrs_order,
        monitor_lowpass_hz=params.monitor_lowpass_hz,
        monitor_lowpass_order=params.monitor_lowpass_order,
        group_delay_ref_hz=params.group_delay_ref_hz,
        filter_names=_str_tuple(FILTER_NAMES),
        noise_shaped=_str_tuple(NOISE_SHAPED),
    )
    names = [n for n in FILTER_NAMES if not n.startswith("notch")]
    names[1:1] = [f"notch{m}" for m in params.mains_hz]
    lines = ["# (fs_hz, name): (num_stages, coeffs, post_shift)", "TABLES = {"]
    delays = ["# (fs_hz, name): group delay in samples at GROUP_DELAY_REF_HZ",
              "GROUP_DELAY_SAMPLES = {"]
    for fs_hz in params.sample_rates_hz:
        for name in names:
            sos = design_sos(fs_hz, name, params)
            t = quantize_sos(sos)
            lines.append(f'    ({fs_hz}, "{name}"): (')
            lines.append(f"        {t.num_stages},")
            lines.append("        (")
            for s in range(t.num_stages):
                row = ", ".join(str(c) for c in t.coeffs[6 * s : 6 * s + 6])
                lines.append(f"            {row},")
            lines.append("        ),")
            lines.append(f"        {t.post_shift},")
            lines.append("    ),")
            gd = round(group_delay_samples(t.as_sos(), params.group_delay_ref_hz, fs_hz), 2)
            delays.append(f'    ({fs_hz}, "{name}"): {gd + 0.0!r},')
    lines.append("}")
    delays.append("}")
    return head + "\n".join(lines) + "\n\n" + "\n".join(delays) + "\n"


# ---------------------------------------------------------------- report


def report(params: DesignParams = DESIGN, out: Callable[[str], None] = print) -> None:
    out(f"design: {params}")
    for fs_hz in params.sample_rates_hz:
        for name in FILTER_NAMES:
            sos = design_sos(fs_hz, name, params)
            t = quantize_sos(sos)
            q = t.as_sos()
            gds = ", ".join(
                f"{f:g} Hz {group_delay_samples(q, f, fs_hz):.2f}" for f in (1, 5, 10, 15, 20)
            )
            out(f"\n{fs_hz} Hz {name}: {t.num_stages} stage(s), post_shift {t.post_shift}")
            out(f"  coeffs {t.coeffs}")
            lo, hi = passband_hz(name, fs_hz, params)
            out(
                f"  max |quantized - design| over {lo:g}..{hi:g} Hz: "
                f"{quantization_error_db(fs_hz, name, params):.4f} dB"
            )
            excl = notch_exclusion_hz(name, params)
            if excl is not None:
                f0 = float(name[5:])
                depth_q = -response_db(q, [f0], fs_hz)[0]
                out(f"  notch depth at {f0:g} Hz: quantized {depth_q:.1f} dB (design: infinite)")
            out(f"  group delay (samples): {gds}")
            for shaped in (False, True):
                nf = noise_floor(t, fs_hz, shaped)
                kind = "BiquadCascadeEfQ15" if shaped else "BiquadCascadeQ15"
                out(
                    f"  {kind}: zero-in tail {nf.zero_min}..{nf.zero_max}, "
                    f"DC err {nf.dc_min:.2f}..{nf.dc_max:.2f}, ramp |err| {nf.ramp_max:.2f}, "
                    f"noise-in err mean {nf.err_mean:.2f} rms {nf.err_rms:.2f} "
                    f"max {nf.err_max:.2f} LSB"
                )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.filterdesign",
        description="Design the ECG filters and generate firmware/signal/filter_tables.py.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"write {TABLES_PATH}")
    mode.add_argument(
        "--check", action="store_true", help="exit 1 if the committed tables are stale"
    )
    args = parser.parse_args(argv)
    if args.write:
        TABLES_PATH.write_text(render_module(), encoding="utf-8")
        print(f"wrote {TABLES_PATH}")
        return 0
    if args.check:
        current = TABLES_PATH.read_text(encoding="utf-8") if TABLES_PATH.exists() else ""
        if current != render_module():
            print(f"{TABLES_PATH} is stale: run `python -m models.filterdesign --write`")
            return 1
        print(f"{TABLES_PATH} is up to date")
        return 0
    report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
