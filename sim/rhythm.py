"""Heart rhythms for the virtual patient: a beat schedule, per-beat morphology,
and the ECG rendered from it with the ECGSYN model.

Beat schedule
-------------
:class:`RhythmGenerator` produces beats one at a time, in time order, each a
:class:`Beat`: the R-peak sample, its AAMI class (N, S, V, F; Q is never made),
the morphology it is drawn with, the rhythm it belongs to and the strength of
the mechanical contraction it causes (for the pulse wave).  The timing follows
the physiology of each rhythm:

* sinus rhythm (NSR, or BRADY / TACHY by the scenario's rate, below / above
  ``firmware.params.RHYTHM_BRADY_BPM`` / ``RHYTHM_TACHY_BPM``, 60 / 100 bpm):
  the sinus node fires every ``60 / HR(t) * (1 + cv * y(t))`` seconds, ``y`` the
  ECGSYN tachogram (bimodal Mayer-wave / RSA spectrum, ``sim.ecgsyn.Tachogram``)
  with its RSA peak at the breathing rate and ``cv = hrv_std_bpm / HR``;
* atrial fibrillation (AFIB): no P waves, fibrillatory f waves (4-9 Hz) on the
  baseline, and independent RR intervals drawn from a log-normal distribution
  with the patient's coefficient of variation (0.16-0.26), at least 0.3 s;
* premature ventricular beats (V): wide QRS without P, T opposite to the QRS,
  a fixed coupling interval per patient (0.40-0.55 s, +-15 ms; at most 75 % of
  the RR); the sinus node goes on firing, the firing that
  falls in the ventricles' refractory period is blocked, so the pause is fully
  compensatory (coupling + pause = 2 RR).  Couplets, and bigeminy episodes of
  8-30 cycles; a late-coupled PVC that meets the sinus beat is a fusion beat (F);
* premature atrial beats (S): early (60-80 % of the RR), inverted P wave, normal
  QRS; they reset the sinus node, so the pause is not compensatory;
* ventricular tachycardia runs (VT): 3 or more ventricular beats at 120-250 bpm
  with AV dissociation (the sinus node keeps its own rhythm underneath);
* pauses (PAUSE: sinus arrest, the next beat after ``pause_s``) and asystole
  (ASYSTOLE: no beat at all for a while).

RR irregularity of AF
---------------------
The statistic is the normalised RMSSD, ``nRMSSD = RMSSD(RR) / mean(RR)`` over
64 consecutive RR intervals (:func:`rr_irregularity`).  Dash et al. (2009)
separate AF from other rhythms with the threshold nRMSSD > 0.1 (S. Dash, K. H.
Chon, S. Lu, E. A. Raeder, "Automatic real time detection of atrial
fibrillation", Ann. Biomed. Eng. 37(9):1701-1709, 2009), together with the
turning-point ratio, whose expected value for independent intervals is 2/3.
Measured on the MIT-BIH Arrhythmia Database (record 201, the AF episodes,
64-beat windows of N beats only, 5th-95th percentile): nRMSSD 0.23-0.34, CV
0.18-0.26, turning-point ratio 0.55-0.75; sinus rhythm in records 101, 106 and
112: nRMSSD 0.02-0.06.  :data:`AF_NRMSSD_RANGE` (0.15-0.45) is the range the
simulated AF must fall in; i.i.d. log-normal RR with CV c give nRMSSD about
``sqrt(2) c`` = 0.23-0.37.  Sinus rhythm stays below 0.1.

Morphology and rendering (ECGSYN)
---------------------------------
ECGSYN (McSharry et al. 2003, ``sim.ecgsyn``) moves a point round a limit cycle
and drives the ECG ``z`` by ``dz/dt = -sum_i a_i dtheta_i exp(-dtheta_i^2 / 2 b_i^2)
- (z - z0)``.  Within a beat ``theta`` is linear in time (``omega = 2 pi / RR``), so
each event's forcing is the time derivative of a Gaussian
``G_i(t) = (a_i b_i^2 / omega) exp(-(t - t_i)^2 / (2 sigma_i^2))``,
``sigma_i = b_i / omega``, and the exact solution is ``z = G - e^{-t} * G``: the sum
of the events' Gaussians minus its first-order (1 s) low-pass.  That is what
:class:`EcgRenderer` computes: per-beat Gaussians placed at the beat's R sample
(templates, cached by morphology and rate), and the low-pass as one
``lfilter`` pole whose state carries across blocks.  With the paper's angles,
gains and widths and ECGSYN's heart-rate adaptation (widths x sqrt(HR/60), Q and
S angles x sqrt(HR/60), P angle x (HR/60)^(1/4), see ``sim.ecgsyn``) a beat in
time units is: offset ``theta_i / (2 pi) * (60/HR)^(1 - e_i)``, width
``b_i / (2 pi) * sqrt(60/HR)``, amplitude ``a_i b_i^2 / (2 pi)``, independent of
the rate.  :class:`Morphology` holds events in these time units with a rate
exponent for offsets and widths, so the new beat types (PVC, PAC, fusion,
AF-conducted) are written the same way.  Ventricular QRS widths do not shrink
with rate (exponent 0).  The rate of a beat's morphology is the rhythm's
underlying rate (the scenario's HR, or the VT rate), binned to 1 bpm.

The recorded R sample is where the rendered beat's extremum is: each template
is shifted so that its largest-magnitude QRS sample (found on a 0.1 ms grid)
lands exactly on the beat's sample; the slow terms (low-pass, baseline,
respiration) move the apex by well under a sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter

from firmware.params import RHYTHM_BRADY_BPM, RHYTHM_TACHY_BPM
from sim.ecgsyn import (
    _ANGLE_HR_EXPONENTS,
    DEFAULT_PQRST_ANGLES_RAD,
    DEFAULT_PQRST_GAINS_AU,
    DEFAULT_PQRST_WIDTHS_RAD,
    EcgsynParams,
    Tachogram,
)

__all__ = [
    "AAMI_CLASSES", "AF_NRMSSD_RANGE", "MORPHOLOGIES", "RHYTHMS", "Beat", "EcgRenderer",
    "Morphology", "RhythmEvent", "RhythmGenerator", "RhythmSettings", "WaveEvent",
    "ecgsyn_morphology", "rr_irregularity", "turning_point_ratio",
]

FloatArray = npt.NDArray[np.float64]

AAMI_CLASSES = ("N", "S", "V", "F", "Q")
RHYTHMS = ("NSR", "BRADY", "TACHY", "AFIB", "VT", "PAUSE", "ASYSTOLE")
#: nRMSSD range simulated AF must fall in (see the module docstring).
AF_NRMSSD_RANGE = (0.15, 0.45)
AF_NRMSSD_THRESHOLD = 0.1  # Dash et al. 2009
IRREGULARITY_WINDOW_BEATS = 64

_TWO_PI = 2.0 * math.pi
_EXTENT_SIGMAS = 5.0


# ------------------------------------------------------------------- statistics


def rr_irregularity(rr_s: npt.ArrayLike) -> float:
    """nRMSSD: root mean square of successive RR differences over the mean RR."""
    rr = np.asarray(rr_s, dtype=np.float64)
    if rr.size < 3:
        raise ValueError("need at least 3 RR intervals")
    return float(np.sqrt(np.mean(np.diff(rr) ** 2)) / rr.mean())


def turning_point_ratio(rr_s: npt.ArrayLike) -> float:
    """Turning points (local extrema) over the possible ones; 2/3 for i.i.d. RR."""
    d = np.diff(np.asarray(rr_s, dtype=np.float64))
    if d.size < 2:
        raise ValueError("need at least 3 RR intervals")
    return float(np.count_nonzero(d[:-1] * d[1:] < 0) / (d.size - 1))


# ------------------------------------------------------------------- morphology


@dataclass(frozen=True)
class WaveEvent:
    """One Gaussian of a beat, in time units at 60 bpm; offsets and widths scale
    with the rate as ``(60 / HR) ** exponent``."""

    offset_s: float  # from the R event
    width_s: float  # Gaussian sigma
    amplitude_au: float  # ECGSYN model units (G peak)
    offset_rate_exp: float = 0.0
    width_rate_exp: float = 0.5


@dataclass(frozen=True)
class Morphology:
    name: str
    events: tuple[WaveEvent, ...]
    aami: str

    def gaussians(self, rate_bpm: float) -> tuple[FloatArray, FloatArray, FloatArray]:
        k = 60.0 / float(rate_bpm)
        tau = np.array([e.offset_s * k**e.offset_rate_exp for e in self.events])
        sig = np.array([e.width_s * k**e.width_rate_exp for e in self.events])
        amp = np.array([e.amplitude_au for e in self.events])
        return tau, sig, amp

    def without(self, index: int, name: str, aami: str) -> Morphology:
        return Morphology(name, self.events[:index] + self.events[index + 1 :], aami)


def ecgsyn_morphology(angles_rad: Sequence[float] = DEFAULT_PQRST_ANGLES_RAD,
                      gains_au: Sequence[float] = DEFAULT_PQRST_GAINS_AU,
                      widths_rad: Sequence[float] = DEFAULT_PQRST_WIDTHS_RAD,
                      name: str = "normal", aami: str = "N") -> Morphology:
    """ECGSYN's P, Q, R, S, T events (angles, gains, widths at 60 bpm, with the
    ``ecgsyn.c`` rate adaptation) as time-domain events."""
    events = tuple(
        WaveEvent(offset_s=th / _TWO_PI, width_s=b / _TWO_PI, amplitude_au=a * b * b / _TWO_PI,
                  offset_rate_exp=1.0 - e, width_rate_exp=0.5)
        for th, a, b, e in zip(angles_rad, gains_au, widths_rad, _ANGLE_HR_EXPONENTS)
    )
    return Morphology(name, events, aami)


def _build_morphologies() -> dict[str, Morphology]:
    normal = ecgsyn_morphology()
    p, q, r, s, t = normal.events
    a_r = r.amplitude_au
    pac_p = WaveEvent(p.offset_s * 0.85, p.width_s * 0.8, -0.8 * p.amplitude_au,
                      p.offset_rate_exp, p.width_rate_exp)
    # PVCs: broad QRS (QRS widths do not scale with rate), T opposite to the QRS.
    pvc_up = (
        WaveEvent(-0.055, 0.018, -0.12 * a_r, 0.0, 0.0),
        WaveEvent(0.0, 0.040, 1.30 * a_r, 0.0, 0.0),
        WaveEvent(0.085, 0.032, -0.40 * a_r, 0.0, 0.0),
        WaveEvent(0.30, 0.075, -0.55 * a_r, 0.5, 0.5),
    )
    pvc_down = (
        WaveEvent(-0.060, 0.016, 0.12 * a_r, 0.0, 0.0),
        WaveEvent(0.0, 0.045, -1.25 * a_r, 0.0, 0.0),
        WaveEvent(0.095, 0.030, 0.30 * a_r, 0.0, 0.0),
        WaveEvent(0.32, 0.080, 0.55 * a_r, 0.5, 0.5),
    )
    morph = {
        "normal": normal,
        "normal_no_p": normal.without(0, "normal_no_p", "N"),
        "pac": Morphology("pac", (pac_p, q, r, s, t), "S"),
        "pvc_up": Morphology("pvc_up", pvc_up, "V"),
        "pvc_down": Morphology("pvc_down", pvc_down, "V"),
    }
    # Fusion: half the normal beat (P included) and half a PVC.
    for kind in ("pvc_up", "pvc_down"):
        half = tuple(WaveEvent(e.offset_s, e.width_s, 0.5 * e.amplitude_au, e.offset_rate_exp,
                               e.width_rate_exp) for e in normal.events + morph[kind].events)
        morph["fusion_" + kind[4:]] = Morphology("fusion_" + kind[4:], half, "F")
    return morph


MORPHOLOGIES: dict[str, Morphology] = _build_morphologies()


# ----------------------------------------------------------------------- beats


@dataclass(frozen=True)
class Beat:
    sample: int  # R-peak sample (absolute, device rate)
    aami: str  # N S V F Q
    morphology: str  # key of MORPHOLOGIES
    rhythm: str  # one of RHYTHMS
    rate_bpm: float  # the rate its morphology is drawn at
    pulse: float  # relative stroke volume (0: no pulse)
    rr_prev_s: float  # from the previous beat (0 for the first)


@dataclass(frozen=True)
class RhythmEvent:
    """A scheduled event: ``vt_run`` (beats, rate_bpm), ``pause`` (duration_s),
    ``asystole`` (duration_s), ``pvc``, ``couplet``, ``pac``."""

    time_s: float
    kind: str
    beats: int = 0
    rate_bpm: float = 0.0
    duration_s: float = 0.0


Trajectory = Callable[[float], float]


def _const(value: float) -> Trajectory:
    return lambda _t: value


@dataclass
class RhythmSettings:
    """Everything the schedule depends on; trajectories are functions of time (s)."""

    heart_rate_bpm: Trajectory
    hrv_std_bpm: float = 2.0
    resp_rate_hz: float = 0.25  # RSA peak of the tachogram
    #: (start_s, "sinus" | "af"), ascending (asystole is an event)
    segments: Sequence[tuple[float, str]] = ((0.0, "sinus"),)
    af_rr_cv: float = 0.2
    pvc_burden_percent: Trajectory = field(default_factory=lambda: _const(0.0))
    pac_burden_percent: Trajectory = field(default_factory=lambda: _const(0.0))
    pvc_couplet_percent: float = 10.0  # of PVC events
    pvc_bigeminy_percent: float = 5.0  # of PVC events that start a bigeminy episode
    pvc_fusion_percent: float = 3.0  # of PVC events that fuse with the sinus beat
    pvc_morphologies: Sequence[str] = ("pvc_up",)
    pvc_coupling_s: tuple[float, float] = (0.40, 0.55)  # the patient's is drawn from this
    vt_runs_per_hour: float = 0.0
    vt_rate_bpm: tuple[float, float] = (140.0, 190.0)
    vt_beats: tuple[int, int] = (3, 12)
    pauses_per_hour: float = 0.0
    pause_s: tuple[float, float] = (2.2, 3.5)
    events: Sequence[RhythmEvent] = ()


class RhythmGenerator:
    """Endless beat schedule (see the module docstring); :meth:`beats_until` returns
    the next beats up to a sample, in order."""

    def __init__(self, settings: RhythmSettings, fs_hz: int, rng: np.random.Generator) -> None:
        self.s = settings
        self.fs = int(fs_hz)
        seeds = rng.integers(0, 2**63 - 1, size=2)
        self._rng = np.random.default_rng(int(seeds[0]))
        self._pvc_coupling_s = float(self._rng.uniform(*settings.pvc_coupling_s))
        hf = min(0.45, max(0.15, float(settings.resp_rate_hz)))
        tacho_params = EcgsynParams(sample_rate_hz=self.fs, heart_rate_mean_bpm=60.0,
                                    heart_rate_std_bpm=1.0, hf_hz=hf,
                                    lf_hz=min(0.1, hf - 0.03))
        self._tachogram = Tachogram(tacho_params, np.random.default_rng(int(seeds[1])))
        segs = sorted((float(t), k) for t, k in settings.segments)
        if not segs or segs[0][0] != 0.0:
            segs.insert(0, (0.0, "sinus"))
        self._seg_t = [t for t, _ in segs]
        self._seg_k = [k for _, k in segs]
        self._events = sorted(settings.events, key=lambda e: e.time_s)
        self._ev = 0
        self._queue: list[tuple[float, str, str, float]] = []  # (t, morphology, rhythm, rate)
        self._t_last = -1.0  # time of the previous beat; the first beat lands near 0
        self._sample_last = -1
        self._sa_next = 0.25 * 60.0 / max(20.0, settings.heart_rate_bpm(0.0))
        self._refractory_until = 0.0
        self._bigeminy_left = 0
        self._last_aami = "N"
        self._started = False
        self._peek: Beat | None = None

    # --------------------------------------------------------------- helpers

    def segment_at(self, t: float) -> tuple[str, float]:
        """(kind, end time) of the rhythm segment in force at ``t``."""
        i = int(np.searchsorted(self._seg_t, t, side="right")) - 1
        end = self._seg_t[i + 1] if i + 1 < len(self._seg_t) else math.inf
        return self._seg_k[max(i, 0)], end

    def af_intervals(self) -> list[tuple[float, float]]:
        out = []
        for i, k in enumerate(self._seg_k):
            if k == "af":
                end = self._seg_t[i + 1] if i + 1 < len(self._seg_t) else math.inf
                out.append((self._seg_t[i], end))
        return out

    def _hr(self, t: float) -> float:
        return min(300.0, max(20.0, float(self.s.heart_rate_bpm(max(t, 0.0)))))

    def _sinus_rr(self, t: float) -> float:
        hr = self._hr(t)
        cv = float(self.s.hrv_std_bpm) / hr
        return (60.0 / hr) * max(0.5, 1.0 + cv * self._tachogram.unit_at(max(t, 0.0)))

    def _af_rr(self, t: float) -> float:
        mean = 60.0 / self._hr(t)
        cv = float(self.s.af_rr_cv)
        sigma = math.sqrt(math.log1p(cv * cv))
        rr = mean * math.exp(self._rng.normal(-0.5 * sigma * sigma, sigma))
        return max(0.3, rr)

    def _sinus_label(self, t: float) -> str:
        hr = self._hr(t)
        return ("BRADY" if hr < RHYTHM_BRADY_BPM else "TACHY" if hr > RHYTHM_TACHY_BPM
                else "NSR")

    def _advance_sa_past(self, t: float) -> None:
        """Fire (and block) the sinus node until its next firing is after ``t``."""
        while self._sa_next <= t:
            self._sa_next += self._sinus_rr(self._sa_next)

    def _pvc_morph(self) -> str:
        kinds = list(self.s.pvc_morphologies)
        return kinds[int(self._rng.integers(len(kinds)))] if len(kinds) > 1 else kinds[0]

    # --------------------------------------------------------------- schedule

    def _natural_next(self) -> tuple[float, str, str]:
        """The next supraventricular beat: (time, morphology, rhythm)."""
        t0 = self._t_last
        kind, end = self.segment_at(max(t0, 0.0))
        if kind == "af":
            t = max(t0 + self._af_rr(t0), self._refractory_until)
            if t >= end:  # AF ends: sinus resumes
                self._sa_next = end + 0.5 * 60.0 / self._hr(end)
                self._t_last = end
                return self._natural_next()
            return t, "normal_no_p", "AFIB"
        self._advance_sa_past(max(t0 + 0.2, self._refractory_until))
        t = self._sa_next
        nxt_kind, _ = self.segment_at(t)
        if nxt_kind != "sinus":
            self._t_last = end
            self._sa_next = end
            return self._natural_next()
        self._sa_next = t + self._sinus_rr(t)
        return t, "normal", self._sinus_label(t)

    def _schedule_pvcs(self, count: int, t_first: float, rate_bpm: float, rhythm: str,
                       morph: str | None = None) -> None:
        rr = 60.0 / rate_bpm
        t = t_first
        for _ in range(count):
            self._queue.append((t, morph or self._pvc_morph(), rhythm, rate_bpm))
            t += rr * (1.0 + 0.03 * float(self._rng.standard_normal()))

    def _after_ventricular(self, t_v: float) -> None:
        base = 60.0 / self._hr(t_v)
        self._refractory_until = t_v + max(0.3, 0.55 * base)

    def _next_raw(self) -> tuple[float, str, str, float]:
        if self._queue:
            return self._queue.pop(0)
        t_last = self._t_last
        base_rr = 60.0 / self._hr(max(t_last, 0.0))
        kind, _ = self.segment_at(max(t_last, 0.0))
        # Scheduled events first.
        if self._ev < len(self._events):
            ev = self._events[self._ev]
            if ev.time_s <= t_last + base_rr:
                self._ev += 1
                return self._event(ev, t_last, base_rr, kind)
        if not self._started:
            self._started = True
            t, morph, rhythm = self._natural_next()
            return t, morph, rhythm, self._hr(t)
        if kind in ("sinus", "af") and self._last_aami in ("N", "S", "F"):
            rng = self._rng
            per_beat = base_rr / 3600.0
            if rng.random() < self.s.vt_runs_per_hour * per_beat:
                lo, hi = self.s.vt_beats
                rate = float(rng.uniform(*self.s.vt_rate_bpm))
                self._schedule_pvcs(int(rng.integers(lo, hi + 1)), t_last + self._coupling(base_rr),
                                    rate, "VT")
                return self._queue.pop(0)
            if kind == "sinus" and rng.random() < self.s.pauses_per_hour * per_beat:
                return self._pause(t_last, float(rng.uniform(*self.s.pause_s)))
            if self._bigeminy_left > 0:
                self._bigeminy_left -= 1
                return self._pvc_event(t_last, base_rr, kind, couplet=False)
            b = min(0.9, max(0.0, self.s.pvc_burden_percent(t_last) / 100.0))
            if b > 0:
                m = 1.0 + self.s.pvc_couplet_percent / 100.0
                if rng.random() < b / ((1.0 - b) * m):
                    if rng.random() < self.s.pvc_bigeminy_percent / 100.0:
                        self._bigeminy_left = int(rng.integers(8, 31))
                    if rng.random() < self.s.pvc_fusion_percent / 100.0:
                        t, _m, rhythm = self._natural_next()
                        self._after_ventricular(t)
                        return t, "fusion_" + self._pvc_morph()[4:], rhythm, self._hr(t)
                    couplet = rng.random() < self.s.pvc_couplet_percent / 100.0
                    return self._pvc_event(t_last, base_rr, kind, couplet)
            if kind == "sinus":
                a = min(0.9, max(0.0, self.s.pac_burden_percent(t_last) / 100.0))
                if a > 0 and rng.random() < a / (1.0 - a):
                    t = t_last + float(rng.uniform(0.6, 0.8)) * base_rr
                    self._sa_next = t + self._sinus_rr(t)  # the PAC resets the sinus node
                    return t, "pac", self._sinus_label(t), self._hr(t)
        t, morph, rhythm = self._natural_next()
        return t, morph, rhythm, self._hr(t)

    def _pvc_event(self, t_last: float, base_rr: float, kind: str, couplet: bool
                   ) -> tuple[float, str, str, float]:
        rhythm = "AFIB" if kind == "af" else self._sinus_label(t_last)
        t1 = t_last + self._coupling(base_rr)
        self._queue.append((t1, self._pvc_morph(), rhythm, 60.0 / base_rr))
        if couplet:
            t2 = t1 + self._coupling(base_rr)
            self._queue.append((t2, self._pvc_morph(), rhythm, 60.0 / base_rr))
        return self._queue.pop(0)

    def _coupling(self, base_rr: float) -> float:
        """PVC coupling interval: the patient's fixed coupling (+-15 ms), at most 75 %
        of the RR, at least 0.3 s."""
        c = self._pvc_coupling_s + 0.015 * float(self._rng.standard_normal())
        return max(0.3, min(c, 0.75 * base_rr))

    def _pause(self, t_last: float, duration_s: float) -> tuple[float, str, str, float]:
        t = t_last + duration_s
        self._sa_next = t + self._sinus_rr(t)
        return t, "normal", "PAUSE", self._hr(t)

    def _event(self, ev: RhythmEvent, t_last: float, base_rr: float, kind: str
               ) -> tuple[float, str, str, float]:
        t_ev = max(ev.time_s, t_last + 0.3)
        if ev.kind == "vt_run":
            rate = ev.rate_bpm or float(self._rng.uniform(*self.s.vt_rate_bpm))
            self._schedule_pvcs(max(3, ev.beats), t_ev, rate, "VT")
            return self._queue.pop(0)
        if ev.kind == "pause":
            return self._pause(t_last, max(ev.duration_s, t_ev - t_last))
        if ev.kind == "asystole":
            t = t_ev + ev.duration_s
            self._sa_next = t + self._sinus_rr(t)
            return t, "normal" if kind != "af" else "normal_no_p", "ASYSTOLE", self._hr(t)
        if ev.kind in ("pvc", "couplet"):
            return self._pvc_event(t_last, base_rr, kind, ev.kind == "couplet")
        if ev.kind == "pac":
            t = t_last + 0.7 * base_rr
            self._sa_next = t + self._sinus_rr(t)
            return t, "pac", self._sinus_label(t), self._hr(t)
        raise ValueError(f"unknown rhythm event kind {ev.kind!r}")

    def next_beat(self) -> Beat:
        while True:
            t, morph, rhythm, rate = self._next_raw()
            t = max(t, 0.1)
            sample = math.floor(t * self.fs + 0.5)
            if sample > self._sample_last + 0.25 * self.fs or self._sample_last < 0:
                break
            # Too close to the previous beat (a rounding or schedule corner): skip it.
        m = MORPHOLOGIES[morph]
        if m.aami in ("V",):
            self._after_ventricular(t)
        rr_prev = (sample - self._sample_last) / self.fs if self._sample_last >= 0 else 0.0
        base_rr = 60.0 / self._hr(t)
        if rr_prev <= 0.0:
            pulse = 1.0
        else:
            # Filling time sets the stroke volume; very early beats eject nothing.
            pulse = (rr_prev / base_rr - 0.3) / 0.7
            pulse = 0.0 if pulse < 0.15 else min(1.3, pulse)
        if m.aami == "V":
            pulse *= 0.8  # dyssynchronous contraction
        self._t_last = t
        self._sample_last = sample
        self._last_aami = m.aami
        return Beat(sample, m.aami, morph, rhythm, float(round(rate)), float(pulse), rr_prev)

    def beats_until(self, sample: int) -> list[Beat]:
        """Beats whose R sample is below ``sample`` not yet returned (needs one beat of
        look-ahead, kept internally)."""
        out = []
        while True:
            if self._peek is None:
                self._peek = self.next_beat()
            if self._peek.sample >= sample:
                return out
            out.append(self._peek)
            self._peek = None


# -------------------------------------------------------------------- rendering


class EcgRenderer:
    """Renders ECGSYN beats into a continuous signal in model units (see the module
    docstring): ``z = G - lowpass_1s(G)``.  Add beats with :meth:`add_beat` (in any
    order, before the block that contains their start is taken); take finished
    samples with :meth:`take`."""

    def __init__(self, fs_hz: int, align_peaks: bool = True) -> None:
        self.fs = int(fs_hz)
        self.align = align_peaks
        self._cache: dict[tuple[str, float], tuple[FloatArray, int]] = {}
        self._acc = np.zeros(4 * self.fs)
        self._acc_start = 0  # absolute sample of _acc[0]
        dt = 1.0 / self.fs
        pole = math.exp(-dt)
        # Trapezoidal convolution with e^{-t}: y[n] = pole y[n-1] + dt/2 (G[n] + pole G[n-1]).
        self._b = np.array([0.5 * dt, 0.5 * dt * pole])
        self._a = np.array([1.0, -pole])
        self._zi = np.zeros(1)
        self.max_pre_samples = 0

    def template(self, morph: str, rate_bpm: float) -> tuple[FloatArray, int]:
        """(G samples, index of the R sample in them) for a morphology at a rate."""
        key = (morph, float(rate_bpm))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        tau, sig, amp = MORPHOLOGIES[morph].gaussians(rate_bpm)
        shift = 0.0
        if self.align:
            # Continuous apex of the QRS: largest |G| within +-60 ms of the R event.
            t = np.arange(-0.06, 0.06, 1e-4)
            g = (amp * np.exp(-0.5 * ((t[:, None] - tau) / sig) ** 2)).sum(axis=1)
            shift = float(t[int(np.argmax(np.abs(g)))])
        lo = float(np.min(tau - _EXTENT_SIGMAS * sig)) - shift
        hi = float(np.max(tau + _EXTENT_SIGMAS * sig)) - shift
        pre = math.ceil(-lo * self.fs) if lo < 0 else 0
        post = math.ceil(hi * self.fs) if hi > 0 else 0
        t = (np.arange(-pre, post + 1) / self.fs + shift)[:, None]
        g = (amp * np.exp(-0.5 * ((t - tau) / sig) ** 2)).sum(axis=1)
        self._cache[key] = (g, pre)
        self.max_pre_samples = max(self.max_pre_samples, pre)
        return g, pre

    def add_beat(self, sample: int, morph: str, rate_bpm: float, scale: float = 1.0) -> None:
        g, pre = self.template(morph, rate_bpm)
        a = sample - pre - self._acc_start
        if a < 0:
            if self._acc_start > 0 or sample < 0:
                raise ValueError(f"beat at {sample} starts before the rendered position")
            g, a = g[-a:], 0  # a beat at the very start of the record: its P wave is cut
        end = a + g.size
        if end > self._acc.size:
            grown = np.zeros(max(end, 2 * self._acc.size))
            grown[: self._acc.size] = self._acc
            self._acc = grown
        self._acc[a:end] += scale * g if scale != 1.0 else g

    @property
    def position(self) -> int:
        return self._acc_start

    def take(self, n: int) -> FloatArray:
        """The next ``n`` samples of z (model units); no beat may start in them later."""
        if n > self._acc.size:
            grown = np.zeros(n + self._acc.size)
            grown[: self._acc.size] = self._acc
            self._acc = grown
        g = self._acc[:n].copy()
        low, self._zi = lfilter(self._b, self._a, g, zi=self._zi)
        self._acc[:-n] = self._acc[n:]
        self._acc[-n:] = 0.0
        self._acc_start += n
        return g - low
