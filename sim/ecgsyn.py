"""ECGSYN: synthetic ECG from the dynamical model of McSharry et al. (2003).

Model
-----
P. E. McSharry, G. D. Clifford, L. Tarassenko and L. A. Smith, "A dynamical model
for generating synthetic electrocardiogram signals", IEEE Trans. Biomed. Eng.
50(3):289-294, 2003 (reference code ``ecgsyn.m`` / ``ecgsyn.c`` on PhysioNet).

A point moves in 3-D state space.  In the x-y plane it circles an attracting
limit cycle of unit radius, one revolution per heart beat, at the angular
velocity ``omega(t) = 2 pi / RR(t)``; the angle ``theta = atan2(y, x)`` is the
cardiac phase.  The height ``z`` is the ECG: five Gaussian events at fixed angles
``theta_i`` (P, Q, R, S, T) push it up or down as the point passes them, and it
relaxes towards a baseline ``z0(t)``::

    dx/dt = alpha x - omega y,    dy/dt = alpha y + omega x,    alpha = 1 - sqrt(x^2 + y^2)
    dz/dt = -sum_i a_i dtheta_i exp(-dtheta_i^2 / (2 b_i^2)) - (z - z0(t))
    dtheta_i = (theta - theta_i) wrapped to [-pi, pi),   z0(t) = A sin(2 pi f_resp t)

The RR intervals come from a tachogram with a bimodal power spectrum: Mayer
waves around ``lf_hz`` (0.1 Hz) and respiratory sinus arrhythmia around ``hf_hz``
(0.25 Hz), Gaussian peaks of widths ``lf_std_hz`` / ``hf_std_hz`` whose power
ratio is ``lf_hf_ratio``.  A series with that spectrum is built by an inverse FFT
of the amplitude spectrum ``sqrt(S(f))`` with uniformly random phases and then
scaled to mean ``60 / hr_mean`` and standard deviation ``60 hr_std / hr_mean^2``
seconds.  As in the reference code each beat keeps the RR value the tachogram
has at the beat's start for its whole duration, so the phase advances exactly
2 pi per beat and the R event (theta crossing 0) of beat k is at
``t_k = sum_{j<k} RR_j``: those times are the ground-truth R peaks returned with
the signal (rounded to the nearest output sample).

The morphology follows the paper's Table 1 (theta = -pi/3, -pi/12, 0, pi/12, pi/2;
a = 1.2, -5, 30, -7.5, 0.75; b = 0.25, 0.1, 0.1, 0.1, 0.4) with the heart-rate
adaptation of ``ecgsyn.c``: with ``f = sqrt(hr_mean / 60)`` all widths ``b_i`` are
multiplied by ``f``, the Q and S angles by ``f``, the P angle by ``sqrt(f)``; R and
T stay put.  (``ecgsyn.m`` uses other default angles, -70/-15/0/15/100 degrees,
and also multiplies the T angle by ``sqrt(f)``.)

Integration: fixed-step fourth-order Runge-Kutta at ``internal_rate_multiple *
sample_rate_hz`` (``ecgsyn.c``: RK4 at ``sf``, an integer multiple of ``sfecg``),
output by keeping every ``internal_rate_multiple``-th sample, as the reference.
The trajectory starts on the unit circle, where the radial term ``alpha``
vanishes, so x-y is an exact rotation and ``theta(t)`` is known in closed form
(piecewise linear, slope ``2 pi / RR_k``).  The z equation is then linear,
``dz/dt = g(t) - z``, and one RK4 step is the affine recurrence
``z[n+1] = R z[n] + c0 g(t_n) + cm g(t_n + h/2) + c1 g(t_n + h)``: the forcing is
evaluated for a whole block with numpy and the recurrence runs in
``scipy.signal.lfilter``.  This is the same RK4 the reference applies to z, with
theta taken exactly instead of from RK4 stages (they differ by O(h^5) per step);
it generates a minute of ECG in a few milliseconds.

Use in the simulator
--------------------
:class:`EcgStream` feeds the virtual bedside devices (``sim.patient.EcgsynPatient``,
``sim.fleet``): a continuous, endless ECG in millivolts, generated ahead in
blocks with bounded memory, with the exact R-peak sample numbers so tests can
score the device's beat detector against ground truth.  :func:`ecgsyn` returns a
finite record; it is the first ``duration_s`` of the stream with the same seed.

Known simplifications and deviations from the reference
-------------------------------------------------------
* Amplitude scaling: the reference maps the global min/max of the finished
  record to -0.4 / 1.2 mV, which a stream cannot know in advance.  Here the map
  is fixed per parameter set: the noise-free, wander-free periodic beat at the
  mean heart rate spans exactly ``scale_min_mv .. scale_max_mv`` (-0.4 .. 1.2).
  Baseline wander and the beat-to-beat amplitude modulation caused by HRV move
  the actual record a little (about +-0.1 mV) beyond that range.
* Baseline wander amplitude: the paper's ``A = 0.15 mV`` is the amplitude of
  ``z0``, converted to model units with that fixed map (``ecgsyn.c`` hard-codes
  0.005 model units, which the same map turns into about 0.14 mV).  The first
  order relaxation in the z equation attenuates it: the visible wander is
  ``A / sqrt(1 + (2 pi f_resp)^2)``, about 0.08 mV at 0.25 Hz.
* Tachogram: the reference draws one random-phase series per record, its length
  the next power of two.  Here it is drawn in 1024 s random-phase segments
  (evaluated on an 8 Hz grid, i.e. band-limited interpolation of the
  reference's 1 Hz series) joined by 128 s power-complementary (cos/sin)
  cross-fades, so the RR series is continuous, stationary in variance and
  endless.  The reference interpolates the 1 Hz series to the internal rate;
  here it is read at each beat start by linear interpolation on the 8 Hz grid.
* ``dtheta_i`` is the signed angular distance on the circle, wrapped to [-pi, pi).
  The reference's ``fmod(theta - theta_i, 2 pi)`` keeps atan2's cut at theta = pi,
  which truncates the wide T Gaussian there (3.5 sigma at 60 bpm) and makes dz/dt
  jump by about 0.0025 model units once per beat; the ECGs differ by ~2 uV.
* Beat boundaries are exact times instead of being rounded to the internal
  grid, and the initial z is the periodic steady state at the R event instead
  of the reference's 0.04, so there is no start-up transient.
* Additive noise is uniform in +-``noise_amplitude_mv`` as in the reference;
  mains hum, EMG, electrode motion and ectopic beats are not modelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Tuple

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter

__all__ = ["EcgStream", "EcgsynParams", "SyntheticEcg", "Tachogram", "ecgsyn"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Quintet = Tuple[float, float, float, float, float]

_PI = math.pi

#: Paper, Table 1: P, Q, R, S, T angles (rad), gains a_i and widths b_i (rad).
DEFAULT_PQRST_ANGLES_RAD: Quintet = (-_PI / 3, -_PI / 12, 0.0, _PI / 12, _PI / 2)
DEFAULT_PQRST_GAINS_AU: Quintet = (1.2, -5.0, 30.0, -7.5, 0.75)
DEFAULT_PQRST_WIDTHS_RAD: Quintet = (0.25, 0.1, 0.1, 0.1, 0.4)

#: ecgsyn.c: angle_i *= (hr_mean / 60) ** exponent_i, i.e. P by hrfact2, Q and S
#: by hrfact, R and T unchanged (hrfact = sqrt(hr/60), hrfact2 = sqrt(hrfact)).
_ANGLE_HR_EXPONENTS = (0.25, 0.5, 0.0, 0.5, 0.0)
_WIDTH_HR_EXPONENT = 0.5

_HR_RANGE_BPM = (20.0, 300.0)
_MAX_HR_STD_FRACTION = 0.2  # keeps RR > 0 by a 5 sigma margin
_SAMPLE_RATE_RANGE_HZ = (50, 10_000)
_MAX_INTERNAL_MULTIPLE = 64

_RR_GRID_HZ = 8.0  # tachogram evaluation grid
_RR_SEGMENT_S = 1024.0  # length of one random-phase tachogram segment
_RR_OVERLAP_S = 128.0  # cross-fade between consecutive segments

_DEFAULT_BLOCK_S = 30.0
_TEMPLATE_STEPS_PER_BEAT = 8192  # calibration beat: fine enough to catch the true extrema


# --------------------------------------------------------------------------- params


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _check_range(name: str, value: object, lo: float, hi: float, *,
                 lo_open: bool = False, unit: str = "") -> None:
    """Raise ValueError naming ``name`` unless ``value`` is a real number in the range."""
    ok = _is_real(value) and math.isfinite(value)  # type: ignore[arg-type]
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > lo if lo_open else v >= lo) and v <= hi
    if not ok:
        bracket = "(" if lo_open else "["
        raise ValueError(f"{name} must be a finite number in {bracket}{lo:g}, {hi:g}]"
                         f"{unit}, got {value!r}")


def _check_quintet(name: str, value: object) -> Quintet:
    if (not isinstance(value, (tuple, list)) or len(value) != 5
            or not all(_is_real(v) and math.isfinite(v) for v in value)):
        raise ValueError(f"{name} must be 5 finite numbers (P, Q, R, S, T), got {value!r}")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


@dataclass(frozen=True)
class EcgsynParams:
    """Parameters of one synthetic patient / recording.  All validated on creation."""

    sample_rate_hz: int  # output rate; required on purpose, no default
    heart_rate_mean_bpm: float = 60.0
    heart_rate_std_bpm: float = 1.0  # HRV: std of the heart rate
    lf_hf_ratio: float = 0.5  # power ratio of the Mayer-wave and RSA peaks
    lf_hz: float = 0.1  # Mayer waves
    hf_hz: float = 0.25  # respiratory sinus arrhythmia
    lf_std_hz: float = 0.01
    hf_std_hz: float = 0.01
    resp_rate_hz: float = 0.25  # baseline wander frequency (normally = hf_hz)
    baseline_wander_mv: float = 0.15  # amplitude A of z0(t) = A sin(2 pi f_resp t)
    scale_min_mv: float = -0.4  # the mean-HR beat is mapped onto this range
    scale_max_mv: float = 1.2
    noise_amplitude_mv: float = 0.0  # additive uniform noise in +-this
    internal_rate_multiple: int = 2  # RK4 rate = multiple * sample_rate_hz
    pqrst_angles_rad: Quintet = DEFAULT_PQRST_ANGLES_RAD  # at 60 bpm; R must be 0
    pqrst_gains_au: Quintet = DEFAULT_PQRST_GAINS_AU  # a_i, model units
    pqrst_widths_rad: Quintet = DEFAULT_PQRST_WIDTHS_RAD  # b_i at 60 bpm

    def __post_init__(self) -> None:
        fs = self.sample_rate_hz
        lo_fs, hi_fs = _SAMPLE_RATE_RANGE_HZ
        if not isinstance(fs, Integral) or isinstance(fs, bool) or not lo_fs <= fs <= hi_fs:
            raise ValueError(f"sample_rate_hz must be a positive integer in [{lo_fs}, {hi_fs}]"
                             f" Hz, got {fs!r}")
        m = self.internal_rate_multiple
        if (not isinstance(m, Integral) or isinstance(m, bool)
                or not 1 <= m <= _MAX_INTERNAL_MULTIPLE):
            raise ValueError("internal_rate_multiple must be an integer in "
                             f"[1, {_MAX_INTERNAL_MULTIPLE}], got {m!r}")
        _check_range("heart_rate_mean_bpm", self.heart_rate_mean_bpm, *_HR_RANGE_BPM,
                     unit=" bpm")
        hr_std_max = _MAX_HR_STD_FRACTION * float(self.heart_rate_mean_bpm)
        _check_range("heart_rate_std_bpm", self.heart_rate_std_bpm, 0.0, hr_std_max,
                     unit=" bpm (at most 20% of heart_rate_mean_bpm)")
        _check_range("lf_hf_ratio", self.lf_hf_ratio, 0.0, 1e3)
        _check_range("lf_hz", self.lf_hz, 0.0, 0.5, lo_open=True, unit=" Hz")
        _check_range("hf_hz", self.hf_hz, 0.0, 0.5, lo_open=True, unit=" Hz")
        if self.lf_hz >= self.hf_hz:
            raise ValueError(f"lf_hz ({self.lf_hz!r}) must be below hf_hz ({self.hf_hz!r})")
        _check_range("lf_std_hz", self.lf_std_hz, 0.002, 0.1, unit=" Hz")
        _check_range("hf_std_hz", self.hf_std_hz, 0.002, 0.1, unit=" Hz")
        _check_range("resp_rate_hz", self.resp_rate_hz, 0.0, 1.0, lo_open=True, unit=" Hz")
        _check_range("baseline_wander_mv", self.baseline_wander_mv, 0.0, 10.0, unit=" mV")
        _check_range("noise_amplitude_mv", self.noise_amplitude_mv, 0.0, 10.0, unit=" mV")
        _check_range("scale_min_mv", self.scale_min_mv, -10.0, 10.0, unit=" mV")
        _check_range("scale_max_mv", self.scale_max_mv, -10.0, 10.0, unit=" mV")
        if self.scale_min_mv >= self.scale_max_mv:
            raise ValueError(f"scale_min_mv ({self.scale_min_mv!r}) must be below "
                             f"scale_max_mv ({self.scale_max_mv!r})")
        angles = _check_quintet("pqrst_angles_rad", self.pqrst_angles_rad)
        _check_quintet("pqrst_gains_au", self.pqrst_gains_au)
        widths = _check_quintet("pqrst_widths_rad", self.pqrst_widths_rad)
        if angles[2] != 0.0:
            raise ValueError("pqrst_angles_rad: the R angle (third) must be 0, the beat fiducial")
        if not all(-_PI < a < b < _PI for a, b in zip(angles, angles[1:])):
            raise ValueError("pqrst_angles_rad must increase strictly within (-pi, pi), "
                             f"got {angles!r}")
        if min(widths) <= 0.0:
            raise ValueError(f"pqrst_widths_rad must be positive, got {widths!r}")


@dataclass(frozen=True)
class SyntheticEcg:
    """A finite ECGSYN record."""

    signal_mv: FloatArray  # float64, mV
    r_peaks: IntArray  # int64 sample indices of the R events (ground truth)
    rr_s: FloatArray  # rr_s[i]: RR interval (s) from R peak i to the next (maybe beyond the end)
    sample_rate_hz: int


# ----------------------------------------------------------------------- tachogram


class _Tachogram:
    """Endless RR(t) series with the bimodal HRV spectrum (seconds).

    Random-phase inverse-FFT segments (the reference construction) joined by
    power-complementary cross-fades, kept in a buffer of at most two segment hops.
    """

    def __init__(self, p: EcgsynParams, rng: np.random.Generator) -> None:
        self._rng = rng
        n = int(_RR_SEGMENT_S * _RR_GRID_HZ)
        self._n = n
        self._overlap = int(_RR_OVERLAP_S * _RR_GRID_HZ)
        self._hop = n - self._overlap
        f = np.fft.rfftfreq(n, d=1.0 / _RR_GRID_HZ)

        def peak(f0: float, sd: float) -> FloatArray:
            return np.exp(-0.5 * ((f - f0) / sd) ** 2) / (math.sqrt(2.0 * _PI) * sd)

        power = p.lf_hf_ratio * peak(p.lf_hz, p.lf_std_hz) + peak(p.hf_hz, p.hf_std_hz)
        power[0] = 0.0  # the mean is set separately
        self._amplitude = np.sqrt(power)
        hr = float(p.heart_rate_mean_bpm)
        self._rr_mean_s = 60.0 / hr
        self._rr_std_s = 60.0 * float(p.heart_rate_std_bpm) / (hr * hr)
        # cos/sin weights: w_old^2 + w_new^2 = 1 keeps the variance through the fade.
        phase = 0.5 * _PI * (np.arange(self._overlap) + 0.5) / self._overlap
        self._fade_old = np.cos(phase)
        self._fade_new = np.sin(phase)
        self._tail: FloatArray | None = None  # last `overlap` samples of the previous segment
        self._buf = np.empty(0)
        self._buf_start = 0  # grid index of self._buf[0]

    def _segment(self) -> FloatArray:
        phases = self._rng.uniform(0.0, 2.0 * _PI, size=self._amplitude.size)
        phases[0] = phases[-1] = 0.0  # DC and Nyquist bins are real, as in the reference
        x = np.fft.irfft(self._amplitude * np.exp(1j * phases), n=self._n)
        return x / x.std(ddof=1)

    def _extend(self) -> None:
        seg = self._segment()
        piece = seg[: self._hop].copy()
        if self._tail is not None:
            piece[: self._overlap] = (self._fade_old * self._tail
                                      + self._fade_new * piece[: self._overlap])
        self._tail = seg[self._hop:]
        # Keep only the previous piece: queries only move forward, by one RR at a time.
        drop = max(0, self._buf.size - self._hop)
        self._buf = np.concatenate([self._buf[drop:], piece])
        self._buf_start += drop

    def unit_at(self, t_s: float) -> float:
        """The normalised series (zero mean, unit variance) at ``t_s``; calls must not
        go back by more than one hop.  ``sim.rhythm`` scales it by a time-varying
        heart rate."""
        u = t_s * _RR_GRID_HZ
        i = math.floor(u)
        while i + 1 >= self._buf_start + self._buf.size:
            self._extend()
        k = i - self._buf_start
        y0 = float(self._buf[k])
        return y0 + (u - i) * (float(self._buf[k + 1]) - y0)

    def rr_at(self, t_s: float) -> float:
        """RR value (s) at time ``t_s``; calls must not go back by more than one hop."""
        return self._rr_mean_s + self._rr_std_s * self.unit_at(t_s)


#: Public name for other simulator modules (``sim.rhythm`` drives it with its own rate).
Tachogram = _Tachogram


# ------------------------------------------------------------------------- dynamics


def _rk4_affine_coefficients(h: float) -> tuple[float, float, float, float]:
    """(R, c0, cm, c1) of one RK4 step of dz/dt = g(t) - z, obtained by running the
    textbook RK4 formulas on the unit inputs (the step is linear in z and g)."""

    def step(z: float, g0: float, gm: float, g1: float) -> float:
        k1 = g0 - z
        k2 = gm - (z + 0.5 * h * k1)
        k3 = gm - (z + 0.5 * h * k2)
        k4 = g1 - (z + h * k3)
        return z + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

    return step(1, 0, 0, 0), step(0, 1, 0, 0), step(0, 0, 1, 0), step(0, 0, 0, 1)


def _rk4_solve(z0: float, g: FloatArray, coef: tuple[float, float, float, float]) -> FloatArray:
    """RK4 states z[1..N] from z[0] = z0 and g sampled every half step (2N + 1 values)."""
    r, c0, cm, c1 = coef
    u = c0 * g[0:-1:2] + cm * g[1::2] + c1 * g[2::2]
    z, _ = lfilter([1.0], [1.0, -r], u, zi=[r * z0])
    return z


class _Morphology:
    """PQRST events adapted to the mean heart rate; the z forcing F(theta)."""

    def __init__(self, p: EcgsynParams) -> None:
        ratio = float(p.heart_rate_mean_bpm) / 60.0
        self.angles_rad = np.array([a * ratio**e for a, e in
                                    zip(p.pqrst_angles_rad, _ANGLE_HR_EXPONENTS)])
        self.gains = np.array(p.pqrst_gains_au, dtype=np.float64)
        self.widths_rad = np.array(p.pqrst_widths_rad, dtype=np.float64) * ratio**_WIDTH_HR_EXPONENT
        self._inv_2b2 = 0.5 / self.widths_rad**2

    def forcing(self, theta: FloatArray) -> FloatArray:
        """-sum_i a_i dtheta_i exp(-dtheta_i^2 / 2 b_i^2), dtheta wrapped to [-pi, pi)."""
        d = np.remainder(theta[:, None] - self.angles_rad + _PI, 2.0 * _PI) - _PI
        return -(self.gains * d * np.exp(-self._inv_2b2 * d * d)).sum(axis=1)


def _periodic_beat(morph: _Morphology, rr_s: float) -> tuple[float, float, float]:
    """(z at the R event, z min, z max) of the periodic solution for a constant RR and
    no baseline wander, from RK4 with a fine step that divides the beat evenly, so the
    orbit closes exactly: z_N = R^N z_0 + s  =>  z_0 = s / (1 - R^N)."""
    n = _TEMPLATE_STEPS_PER_BEAT
    h = rr_s / n
    coef = _rk4_affine_coefficients(h)
    theta = 2.0 * _PI * np.arange(2 * n + 1) / (2 * n)
    g = morph.forcing(theta)
    z_free = _rk4_solve(0.0, g, coef)
    z_start = float(z_free[-1]) / (1.0 - coef[0] ** n)
    z = _rk4_solve(z_start, g, coef)
    return z_start, float(min(z.min(), z_start)), float(max(z.max(), z_start))


# --------------------------------------------------------------------------- stream


class EcgStream:
    """Endless ECGSYN signal, handed out in chunks of any size.

    The signal is generated ahead in blocks of ``block_s`` seconds; the ODE state,
    the beat schedule and the tachogram carry over from block to block, so the
    concatenated chunks are one continuous solution whatever the chunk sizes, and
    memory stays bounded however long the stream runs.  Same ``rng`` seed, same
    output.  :attr:`last_r_peaks` holds the ground-truth R peaks (absolute sample
    numbers) of the chunk most recently returned by :meth:`next_chunk`.
    """

    def __init__(self, params: EcgsynParams, rng: np.random.Generator, *,
                 block_s: float = _DEFAULT_BLOCK_S) -> None:
        if not isinstance(params, EcgsynParams):
            raise TypeError(f"params must be an EcgsynParams, got {type(params).__name__}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        _check_range("block_s", block_s, 0.0, 600.0, lo_open=True, unit=" s")
        self.params = params
        fs = int(params.sample_rate_hz)
        self._fs = fs
        self._q = int(params.internal_rate_multiple)
        self._internal_hz = fs * self._q
        self._block = max(1, round(block_s * fs))
        self._coef = _rk4_affine_coefficients(1.0 / self._internal_hz)

        # Independent generators, so that how much noise has been drawn never shifts
        # the tachogram phases (and the other way round).
        seeds = rng.integers(0, 2**63 - 1, size=2, dtype=np.int64)
        self._tachogram = _Tachogram(params, np.random.default_rng(int(seeds[0])))
        self._noise_rng = np.random.default_rng(int(seeds[1]))

        self._morph = _Morphology(params)
        rr_mean_s = 60.0 / float(params.heart_rate_mean_bpm)
        z_r, z_min, z_max = _periodic_beat(self._morph, rr_mean_s)
        self._mv_per_unit = (params.scale_max_mv - params.scale_min_mv) / (z_max - z_min)
        self._z_offset = z_min
        self._wander_au = float(params.baseline_wander_mv) / self._mv_per_unit
        self._resp_w = 2.0 * _PI * float(params.resp_rate_hz)

        # ODE state: z at internal step self._n (= q * next sample to generate).
        self._n = 0
        self._z = z_r  # t = 0 is an R event (x, y) = (1, 0), as in the reference
        # Beats that may still matter: start times and RR (s), ascending.
        self._beat_t: list[float] = [0.0]
        self._beat_rr: list[float] = [self._tachogram.rr_at(0.0)]

        # Generated but not yet handed out.
        self._pos = 0  # absolute index of the next sample to hand out
        self._sig = np.empty(0)
        self._peaks = np.empty(0, dtype=np.int64)
        self._peak_rr = np.empty(0)
        self.last_r_peaks: IntArray = np.empty(0, dtype=np.int64)
        self.last_rr_s: FloatArray = np.empty(0)

    @property
    def sample_rate_hz(self) -> int:
        return self._fs

    @property
    def position(self) -> int:
        """Absolute index of the next sample :meth:`next_chunk` will return."""
        return self._pos

    def _generate_block(self) -> tuple[FloatArray, IntArray, FloatArray]:
        m, q = self._block, self._q
        m0 = self._n // q
        steps = m * q
        # Half-step time grid, from integers so it never depends on block boundaries.
        k = np.arange(2 * self._n, 2 * (self._n + steps) + 1, dtype=np.float64)
        t = k / (2.0 * self._internal_hz)
        t_end = float(t[-1])

        while self._beat_t[-1] + self._beat_rr[-1] <= t_end:  # schedule beats to cover t
            start = self._beat_t[-1] + self._beat_rr[-1]
            self._beat_t.append(start)
            self._beat_rr.append(self._tachogram.rr_at(start))
        starts = np.array(self._beat_t)
        rrs = np.array(self._beat_rr)

        beat = np.searchsorted(starts, t, side="right") - 1
        theta = 2.0 * _PI * (t - starts[beat]) / rrs[beat]
        g = self._morph.forcing(theta)
        if self._wander_au:
            g += self._wander_au * np.sin(self._resp_w * t)
        z = _rk4_solve(self._z, g, self._coef)
        z_out = np.concatenate(([self._z], z[q - 1 : steps - 1 : q]))
        self._z = float(z[-1])
        self._n += steps

        signal = self.params.scale_min_mv + (z_out - self._z_offset) * self._mv_per_unit
        if self.params.noise_amplitude_mv:
            a = float(self.params.noise_amplitude_mv)
            signal += self._noise_rng.uniform(-a, a, size=m)

        index = np.floor(starts * self._fs + 0.5).astype(np.int64)
        mine = (index >= m0) & (index < m0 + m)
        # Forget beats that ended before the next block starts.
        t_next = 2 * self._n / (2.0 * self._internal_hz)  # as t[0] of the next block
        keep = next(i for i, (s, r) in enumerate(zip(self._beat_t, self._beat_rr))
                    if s + r > t_next)
        del self._beat_t[:keep], self._beat_rr[:keep]
        return signal, index[mine], rrs[mine]

    def _take(self, n_samples: int) -> tuple[FloatArray, IntArray, FloatArray]:
        if (not isinstance(n_samples, Integral) or isinstance(n_samples, bool)
                or n_samples < 0):
            raise ValueError(f"n_samples must be a non-negative integer, got {n_samples!r}")
        n = int(n_samples)
        if self._sig.size < n:
            parts, peaks, rrs = [self._sig], [self._peaks], [self._peak_rr]
            have = self._sig.size
            while have < n:
                s, pk, rr = self._generate_block()
                parts.append(s)
                peaks.append(pk)
                rrs.append(rr)
                have += s.size
            self._sig = np.concatenate(parts)
            self._peaks = np.concatenate(peaks)
            self._peak_rr = np.concatenate(rrs)
        out = self._sig[:n].copy()
        self._sig = self._sig[n:]
        end = self._pos + n
        cut = int(np.searchsorted(self._peaks, end))
        peaks, peak_rr = self._peaks[:cut].copy(), self._peak_rr[:cut].copy()
        self._peaks, self._peak_rr = self._peaks[cut:], self._peak_rr[cut:]
        self._pos = end
        return out, peaks, peak_rr

    def next_chunk(self, n_samples: int) -> FloatArray:
        """The next ``n_samples`` samples (mV, float64).  Their ground-truth R peaks, as
        absolute sample numbers, are then in :attr:`last_r_peaks` (RR values in
        :attr:`last_rr_s`)."""
        signal, self.last_r_peaks, self.last_rr_s = self._take(n_samples)
        return signal


def ecgsyn(duration_s: float, params: EcgsynParams, rng: np.random.Generator) -> SyntheticEcg:
    """Generate ``duration_s`` seconds of ECG (the start of :class:`EcgStream`)."""
    if not isinstance(params, EcgsynParams):
        raise TypeError(f"params must be an EcgsynParams, got {type(params).__name__}")
    _check_range("duration_s", duration_s, 0.0, 7 * 24 * 3600.0, lo_open=True, unit=" s")
    n = round(float(duration_s) * params.sample_rate_hz)
    if n < 1:
        raise ValueError(f"duration_s={duration_s!r} is shorter than one sample at "
                         f"{params.sample_rate_hz} Hz")
    signal, peaks, rr = EcgStream(params, rng)._take(n)
    return SyntheticEcg(signal_mv=signal, r_peaks=peaks, rr_s=rr,
                        sample_rate_hz=int(params.sample_rate_hz))
