"""PPG pulses, pulse rate and SpO2 from the device's own red/IR samples.

:class:`PulseOximeter` takes the red and infrared light levels of a
MAX30102-class sensor (ints, any rate ``fs_hz`` from 25 Hz; larger = more
light) and, per sample, in integers and without allocation:

1. **Smoothing**: a moving sum over ``_SMOOTH_MS`` (40 ms) of each
   wavelength (``s_red``, ``s_ir``: counts x m).  The pulse waveform is the
   inverted IR, ``y = -s_ir`` (more blood, less light).
2. **Pulse onsets**: the slope sum function of Zong et al. (2003): the sum
   of the rises of ``y`` over the last 128 ms.  An onset is where it crosses
   half the running level of its recent maxima (level: a 1/4 exponential
   average, started from the largest value of the first 2 s, decayed by
   1/4 per second without a pulse), at least 250 ms after the previous one.
   W. Zong, T. Heldt, G. B. Moody, R. G. Mark, "An open-source algorithm to
   detect onset of arterial blood pressure pulses", Computers in Cardiology
   30:259-262 (2003).
3. **Per pulse**: the systolic peak is the largest ``y`` after the onset
   (search ends 120 ms after the last new maximum, or 600 ms after the
   onset); the foot is the smallest ``y`` in the 300 ms before the onset.
   AC = y(peak) - y(foot), DC = the light level at the foot, per wavelength
   at the same two instants; the baseline drift of breathing is removed from
   the AC by extending the line through the previous foot and this one to
   the peak (without it the drift, equal in relative terms at both
   wavelengths, pulls the ratio towards 1).  A pulse whose IR AC/DC (the perfusion index)
   is below ``PI_MIN_X10000`` / 4 is noise and dropped (``noise_pulses``).
4. **SpO2, beat by beat**: each pulse's ratio of ratios
   ``(AC_red/DC_red) / (AC_ir/DC_ir)`` in Q12
   (:func:`firmware.vitals.spo2.ratio_q_from_ac_dc`).  :meth:`spo2` takes the
   median ratio of the pulses of the last ``SPO2_WINDOW_MS`` (8 s) and maps
   it through the device's calibration curve
   (:func:`firmware.vitals.spo2.spo2_from_ratio_q`, 110 - 25 R).

Quality index (``spo2_quality``, 0..100) and the reasons a value is withheld
(:meth:`spo2` returns None and sets ``spo2_reason``):

- ``no_pulse`` / ``too_few_pulses``: fewer than 4 pulses in the window;
- ``saturated``: a sample of either wavelength at the ADC's rails (0 or
  ``full_scale_count``) in the window: a clipped pulse has no true AC;
- ``low_perfusion``: median perfusion index below ``PI_MIN_X10000``
  (0.2 %): the AC is too close to the noise;
- ``inconsistent``: the pulses' ratios spread (interquartile range) more
  than ``RATIO_SPREAD_MAX_PERCENT`` (12 %) of their median, or fewer than
  half of the window's pulses have a plausible shape (their AC within
  1/2..2x the median AC): a probe off the finger, noise;
- ``motion`` (:meth:`PulseOximeter.assess`, also withholds the pulse rate):
  the pulse amplitudes' IQR above 50 % of their median (clean pulses, even
  in AF: <= 40 % in the simulator) or the perfusion index jumping above
  twice its running baseline.  Motion moves both wavelengths alike, so its
  ratio of ratios is consistent (near 1, SpO2 ~85 %): the ratio spread alone
  does not catch it.

  quality = 100 - 5 x (ratio IQR as % of the median), floored at 0; 0 when
  withheld.

Pulse rate (``pulse``, an :class:`firmware.vitals.rate.EventRate` over the
onsets) is independent of the ECG; the device publishes the difference to
the ECG heart rate as its own quality signal.  Every pulse also hands three
respiratory modulations to an optional ``resp`` object
(:class:`firmware.vitals.resp.RespiratoryRate`): amplitude (AC), intensity
(the mean light level) and interval (``MOD_PPG_*``).

Scaling and overflow: a moving sum holds ``m`` samples (m = 4 at 100 Hz, 10
at 250 Hz) of up to 18 bits: < 2**22, small ints on MicroPython; the slope
sum is below 2**27.  The ratio's ``ac * dc << 12`` product is a long int on
MicroPython once per pulse, never per sample.

Limits: a generic calibration curve (see spo2.py); no ambient-light
cancellation (the MAX30102 does it); irregular rhythms (AF) lower the
shape-consistency share but not the ratio spread.
"""

from array import array

from firmware.hw.compat import const
from firmware.vitals.rate import EventRate, median_inplace, sort_inplace
from firmware.vitals.resp import MOD_PPG_AMPLITUDE, MOD_PPG_INTENSITY, MOD_PPG_INTERVAL
from firmware.vitals.spo2 import SPO2_INVALID, ratio_q_from_ac_dc, spo2_from_ratio_q

_SMOOTH_MS = const(40)
_SSF_MS = const(128)
_LEARN_MS = const(2000)
_SETTLE_MS = const(500)
_REFRACTORY_MS = const(250)
_PEAK_WAIT_MS = const(120)
_PEAK_MAX_MS = const(600)
_FOOT_MS = const(300)
_DECAY_MS = const(1000)
_PULSES = const(64)

SPO2_WINDOW_MS = const(8000)
PI_MIN_X10000 = const(20)  # 0.2 % perfusion index
RATIO_SPREAD_MAX_PERCENT = const(12)
SPO2_MIN_PULSES = const(4)
AC_SPREAD_MAX_PERCENT = const(50)
_MOTION_RELEARN = const(30)

REASON_NO_PULSE = "no_pulse"
REASON_TOO_FEW = "too_few_pulses"
REASON_SATURATED = "saturated"
REASON_LOW_PERFUSION = "low_perfusion"
REASON_INCONSISTENT = "inconsistent"
REASON_MOTION = "motion"


def _ms(fs, ms):
    n = (fs * ms + 500) // 1000
    return n if n > 0 else 1


class PulseOximeter:
    """PPG pulses, pulse rate and SpO2 (module docstring).

    ``fs_hz``: the PPG sample rate; ``full_scale_count``: the largest count
    the sensor delivers (its rail); ``max_age_ms``: how long the last pulse
    keeps the pulse rate valid; ``resp``: optional respiratory-rate object.
    """

    def __init__(self, fs_hz, full_scale_count, max_age_ms=3000, resp=None):
        if not isinstance(fs_hz, int) or fs_hz < 25:
            raise ValueError("PulseOximeter: fs_hz must be an int >= 25, got %r" % (fs_hz,))
        self.fs_hz = fs_hz
        self.full_scale_count = full_scale_count
        self.resp = resp
        m = self._m = _ms(fs_hz, _SMOOTH_MS)
        w = self._w = _ms(fs_hz, _SSF_MS)
        size = 1
        while size < (3 * fs_hz) // 2:
            size <<= 1
        self._size = size
        self._mask = size - 1
        self._ring_ir = array("l", [0] * size)  # moving sums (light x m)
        self._ring_red = array("l", [0] * size)
        self._raw_ir = array("l", [0] * m)
        self._raw_red = array("l", [0] * m)
        self._du = array("l", [0] * w)
        self._learn = _ms(fs_hz, _LEARN_MS)
        self._settle = _ms(fs_hz, _SETTLE_MS)
        self._refractory = _ms(fs_hz, _REFRACTORY_MS)
        self._peak_wait = _ms(fs_hz, _PEAK_WAIT_MS)
        self._peak_max = _ms(fs_hz, _PEAK_MAX_MS)
        self._foot = _ms(fs_hz, _FOOT_MS)
        self._decay = _ms(fs_hz, _DECAY_MS)
        self._spo2_window = _ms(fs_hz, SPO2_WINDOW_MS)
        self.pulse = EventRate(fs_hz, _ms(fs_hz, max_age_ms))
        # Per-pulse ring.
        self._p_at = [0] * _PULSES
        self._p_ratio = [0] * _PULSES
        self._p_pi = [0] * _PULSES  # perfusion index x 10000
        self._p_ac = [0] * _PULSES
        self._p_pos = 0
        self._p_count = 0
        self._scratch = [0] * _PULSES
        self._scratch2 = [0] * _PULSES
        self.samples = 0
        self.pulses = 0
        self.noise_pulses = 0
        self.saturated_samples = 0
        self._last_saturated = -(1 << 29)
        self.spo2_quality = 0
        self.spo2_reason = REASON_NO_PULSE
        self.perfusion_x10000 = None
        self.motion = False
        self.ac_spread_pct = 0
        self.pulse_reason = None
        self._pi_base = 0
        self._motion_run = 0
        self.reset()

    def reset(self):
        """Forget the waveform (not the counters): after a gap or a sensor restart."""
        self._started = False
        self._sum_ir = 0
        self._sum_red = 0
        self._raw_pos = 0
        self._du_pos = 0
        self._ssf = 0
        self._y_prev = 0
        self._level = 0
        self._learn_max = 0
        self._since_start = 0
        self._last_onset = -(1 << 29)
        self._last_event = 0
        self._in_peak = False
        self._onset = 0
        self._pk = 0
        self._pk_i = 0
        self._prev_foot_i = -(1 << 29)
        self._prev_foot_ir = 0
        self._prev_foot_red = 0

    # -- per sample ----------------------------------------------------------
    def process(self, red, ir, n):
        """Consume ``red[0:n]`` and ``ir[0:n]`` (light counts, ints)."""
        m = self._m
        w = self._w
        mask = self._mask
        rails = self.full_scale_count
        for i in range(n):
            r = red[i]
            x = ir[i]
            t = self.samples
            self.samples = t + 1
            if x <= 0 or r <= 0 or x >= rails or r >= rails:
                self.saturated_samples += 1
                self._last_saturated = t
            if not self._started:
                self._started = True
                for j in range(m):
                    self._raw_ir[j] = x
                    self._raw_red[j] = r
                self._sum_ir = x * m
                self._sum_red = r * m
                self._y_prev = -self._sum_ir
            p = self._raw_pos
            self._sum_ir += x - self._raw_ir[p]
            self._sum_red += r - self._raw_red[p]
            self._raw_ir[p] = x
            self._raw_red[p] = r
            p += 1
            self._raw_pos = 0 if p == m else p
            s_ir = self._sum_ir
            self._ring_ir[t & mask] = s_ir
            self._ring_red[t & mask] = self._sum_red
            y = -s_ir
            d = y - self._y_prev
            self._y_prev = y
            if d < 0:
                d = 0
            q = self._du_pos
            self._ssf += d - self._du[q]
            self._du[q] = d
            q += 1
            self._du_pos = 0 if q == w else q
            ssf = self._ssf
            self._since_start += 1
            if self._since_start <= self._learn:
                if self._since_start > self._settle and ssf > self._learn_max:
                    self._learn_max = ssf
                if self._since_start == self._learn:
                    self._level = self._learn_max
                    self._last_event = t
                continue
            if self._in_peak:
                if y > self._pk:
                    self._pk = y
                    self._pk_i = t
                if ssf > self._ssf_max:
                    self._ssf_max = ssf
                if t - self._pk_i >= self._peak_wait or t - self._onset >= self._peak_max:
                    self._in_peak = False
                    self._pulse_done(t)
            elif t - self._last_onset >= self._refractory and ssf > (self._level >> 1) \
                    and ssf > 0:
                self._in_peak = True
                self._onset = t
                self._last_onset = t
                self._pk = y
                self._pk_i = t
                self._ssf_max = ssf
            if t - self._last_event >= self._decay:
                self._level -= self._level >> 2
                self._last_event = t

    def _pulse_done(self, now):
        mask = self._mask
        onset = self._onset
        self._level += (self._ssf_max - self._level) >> 2
        self._last_event = now
        # Foot: the most light (smallest y) in the 300 ms before the onset.
        foot_i = onset
        best = self._ring_ir[onset & mask]
        oldest = now - self._size + 1
        start = onset - self._foot
        if start < oldest:
            start = oldest
        k = start
        while k < onset:
            v = self._ring_ir[k & mask]
            if v > best:
                best = v
                foot_i = k
            k += 1
        dc_ir = best
        dc_red = self._ring_red[foot_i & mask]
        ac_ir = dc_ir - self._ring_ir[self._pk_i & mask]
        ac_red = dc_red - self._ring_red[self._pk_i & mask]
        # Baseline drift (breathing) between the feet: the line through the
        # previous foot and this one, extended to the peak, is the baseline.
        span = foot_i - self._prev_foot_i
        if 0 < span <= self._size:
            ahead = self._pk_i - foot_i
            ac_ir += ((dc_ir - self._prev_foot_ir) * ahead) // span
            ac_red += ((dc_red - self._prev_foot_red) * ahead) // span
        self._prev_foot_i = foot_i
        self._prev_foot_ir = dc_ir
        self._prev_foot_red = dc_red
        if dc_ir <= 0 or ac_ir * 10000 < dc_ir * (PI_MIN_X10000 >> 2):
            self.noise_pulses += 1
            return
        pos = self._p_pos
        self._p_at[pos] = onset
        self._p_ratio[pos] = ratio_q_from_ac_dc(ac_red, dc_red, ac_ir, dc_ir)
        self._p_pi[pos] = (ac_ir * 10000) // dc_ir
        self._p_ac[pos] = ac_ir
        self._p_pos = (pos + 1) % _PULSES
        if self._p_count < _PULSES:
            self._p_count += 1
        self.pulses += 1
        self.pulse.add(onset)
        resp = self.resp
        if resp is not None:
            fs = self.fs_hz
            t_ms = (onset * 1000) // fs
            resp.add(MOD_PPG_AMPLITUDE, t_ms, ac_ir // self._m)
            resp.add(MOD_PPG_INTENSITY, t_ms, (dc_ir + dc_ir - ac_ir) // (2 * self._m))
            resp.add_interval(MOD_PPG_INTERVAL, t_ms)

    # -- per report ----------------------------------------------------------
    def _collect(self, lo, src_a, dst_a, src_b, dst_b):
        """Copy two per-pulse values of the pulses after sample ``lo`` (newest
        first) into ``dst_a``/``dst_b``; return how many."""
        n = 0
        k = self._p_pos
        at = self._p_at
        for _ in range(self._p_count):
            k = (k - 1) % _PULSES
            if at[k] <= lo:
                break
            dst_a[n] = src_a[k]
            dst_b[n] = src_b[k]
            n += 1
        return n

    def assess(self, window_ms):
        """Motion check over the pulses of the last ``window_ms`` (call once per
        report, before :meth:`pulse_rate_bpm` and :meth:`spo2`); sets and
        returns ``motion``.  Motion: the pulse amplitudes' interquartile range
        above ``AC_SPREAD_MAX_PERCENT`` of their median, or the median
        perfusion index above twice its baseline (a slow average of the
        windows without motion; relearnt after ``_MOTION_RELEARN`` reports of
        motion in a row, so a re-seated probe is not "motion" for ever)."""
        ac = self._scratch2
        pi = self._scratch
        n = self._collect(self.samples - _ms(self.fs_hz, window_ms), self._p_ac, ac,
                          self._p_pi, pi)
        self.motion = False
        self.ac_spread_pct = 0
        if n < SPO2_MIN_PULSES:
            return False
        sort_inplace(ac, n)
        med = ac[(n - 1) >> 1]
        if med > 0:
            self.ac_spread_pct = ((ac[(3 * (n - 1)) >> 2] - ac[(n - 1) >> 2]) * 100) // med
        pi_med = median_inplace(pi, n)
        base = self._pi_base
        self.motion = self.ac_spread_pct > AC_SPREAD_MAX_PERCENT or (
            base > 0 and pi_med > 2 * base)
        if self.motion:
            self._motion_run += 1
            if self._motion_run >= _MOTION_RELEARN:
                self._pi_base = pi_med
                self._motion_run = 0
        else:
            self._motion_run = 0
            self._pi_base = pi_med if base == 0 else base + ((pi_med - base) >> 3)
        return self.motion

    def pulse_rate_bpm(self, window_ms):
        """Mean pulse rate over the last ``window_ms``, int bpm, or None
        (reason in ``pulse_reason``: ``motion`` or :mod:`firmware.vitals.rate`'s)."""
        if self.motion:
            self.pulse_reason = REASON_MOTION
            return None
        bpm = self.pulse.bpm(self.samples, _ms(self.fs_hz, window_ms))
        self.pulse_reason = self.pulse.reason
        return bpm

    def spo2(self):
        """SpO2 in tenths of a percent over the last ``SPO2_WINDOW_MS``, or None
        (``spo2_reason``); sets ``spo2_quality`` and ``perfusion_x10000``."""
        self.spo2_quality = 0
        ratios = self._scratch
        other = self._scratch2
        lo = self.samples - self._spo2_window
        n = self._collect(lo, self._p_ratio, ratios, self._p_pi, other)
        if n == 0:
            self.perfusion_x10000 = None
            self.spo2_reason = REASON_NO_PULSE
            return None
        self.perfusion_x10000 = median_inplace(other, n)
        if n < SPO2_MIN_PULSES:
            self.spo2_reason = REASON_TOO_FEW
            return None
        if self.motion:
            self.spo2_reason = REASON_MOTION
            return None
        if self._last_saturated > lo:
            self.spo2_reason = REASON_SATURATED
            return None
        if self.perfusion_x10000 < PI_MIN_X10000:
            self.spo2_reason = REASON_LOW_PERFUSION
            return None
        # Shape consistency: AC within 1/2..2x the median AC.
        k = self._p_pos
        for i in range(n):
            k = (k - 1) % _PULSES
            other[i] = self._p_ac[k]
        med_ac = median_inplace(other, n)
        good = 0
        for i in range(n):
            if 2 * other[i] >= med_ac and other[i] <= 2 * med_ac:
                good += 1
        med = median_inplace(ratios, n)
        if med <= 0 or 2 * good < n:
            self.spo2_reason = REASON_INCONSISTENT
            return None
        spread = ratios[(3 * (n - 1)) // 4] - ratios[(n - 1) // 4]
        spread_pct = (spread * 100) // med
        if spread_pct > RATIO_SPREAD_MAX_PERCENT:
            self.spo2_reason = REASON_INCONSISTENT
            return None
        spo2 = spo2_from_ratio_q(med)
        if spo2 == SPO2_INVALID:
            self.spo2_reason = REASON_INCONSISTENT
            return None
        self.spo2_reason = None
        q = 100 - 5 * spread_pct
        self.spo2_quality = q if q > 0 else 0
        return spo2
