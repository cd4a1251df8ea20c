"""Respiratory rate from the ECG's and the PPG's respiratory modulations, fused.

Breathing modulates every beat (Charlton et al., "Breathing rate estimation
from the electrocardiogram and photoplethysmogram: a review", IEEE Rev.
Biomed. Eng. 11:2-20, 2018):

- ECG (:class:`EcgModulations`): the QRS peak-to-peak amplitude (``MOD_ECG_AMPLITUDE``,
  chest impedance and heart axis), the RR interval (``MOD_ECG_INTERVAL``,
  respiratory sinus arrhythmia) and the QRS mid-level (``MOD_ECG_BASELINE``,
  baseline wander);
- PPG (:class:`firmware.vitals.pulseox.PulseOximeter`): the pulse amplitude
  (``MOD_PPG_AMPLITUDE``, RIAV), the light intensity (``MOD_PPG_INTENSITY``,
  RIIV) and the pulse interval (``MOD_PPG_INTERVAL``, RIFV).

Each modulation is one value per beat at the beat's time (ms).
:meth:`RespiratoryRate.estimate` works on the last ``window_ms`` (32 s):

1. per modulation, the beat values are clipped to their median +- 3 x the
   interquartile range (an ectopic beat is one outlier, not a breath), then
   linearly interpolated onto a 4 Hz grid;
2. band-limited: minus a centred 8-s moving mean (passes >= ~0.1 Hz, 6 /min),
   then ``SMOOTH_PASSES`` (5) passes of a [1 2 1]/4 smoother (gain cos(pi f /
   4 Hz)**10: 0.45 at 30 /min, 0.24 at 40 /min, 0.06 at 60 /min: the beat-rate
   ripple of the interpolation is gone);
3. breaths counted in the time domain, "count-orig" of Schäfer & Kratky
   (Ann. Biomed. Eng. 36:2074-2083, 2008), as evaluated by Charlton et al.
   (Physiol. Meas. 37:610-626, 2016): relevant peaks are local maxima above
   0.2 x the third quartile of all local maxima; a breath is the span between
   two consecutive relevant peaks with exactly one local minimum below zero
   between them; rate = 60 / mean breath duration.  A modulation whose
   breaths cover less than a third of the window gives no estimate;
4. fused: the "smart fusion" of Karlen et al. (IEEE TBME 60(7):1946-1953,
   2013) over the ECG and the PPG modulations together, anchored on the
   median: estimates more than ``FUSION_MEDIAN_TOL_X10`` (4 /min) from the
   median of all estimates are set aside; if at least
   ``FUSION_MIN_ESTIMATES`` (3) remain and their standard deviation is at
   most ``FUSION_MAX_SD_X10`` (4 /min, Karlen's limit) the rate is their
   mean; otherwise the window is withheld (``modulations_disagree`` /
   ``too_few_modulations``), never averaged.  (Karlen's rule alone, mean of
   all if SD <= 4: 88 % of BIDMC windows at MAE 1.69; anchored: 84 % at 1.48.)

Quality (``quality``, 0..100): 100 - 12 x the estimates' SD in breaths/min,
floored at 0 (0 when withheld).  The smoother's passes (1..5) and the
coverage (1/2 or 1/3) were chosen on the pooled BIDMC 01-26 windows
(``models/eval_vitals.py``), one setting for all records.  Time-domain
counting was chosen over a spectral peak: it needs no FFT on the device,
handles the irregular breathing of ICU patients without a resolution limit of 1/32 s = 1.9 /min, and
count-orig is among the best-scoring methods in Charlton 2016.

Integers only; every buffer is made at init (``estimate`` runs once per
report, over at most ``_POINTS`` beats per modulation and 240 grid points).
Times are ms since start: past 2**30 ms (12.4 days) MicroPython makes them
long ints, allocated once per beat.
"""

from array import array

from firmware.hw.compat import const
from firmware.vitals.hrv import isqrt
from firmware.vitals.rate import sort_inplace

MOD_ECG_AMPLITUDE = const(0)
MOD_ECG_INTERVAL = const(1)
MOD_PPG_AMPLITUDE = const(2)
MOD_PPG_INTENSITY = const(3)
MOD_PPG_INTERVAL = const(4)
MOD_ECG_BASELINE = const(5)
N_MODULATIONS = const(6)
MODULATION_NAMES = ("ecg_amplitude", "ecg_interval", "ppg_amplitude", "ppg_intensity",
                    "ppg_interval", "ecg_baseline")
ALL_MODULATIONS = const(0x3F)

_POINTS = const(192)  # beats kept per modulation (> 60 s at 180 bpm)
_GRID_MS = const(250)  # 4 Hz
_GRID_MAX = const(240)  # 60 s
_DETREND_HALF = const(16)  # 8 s centred moving mean: 2 x 16 + 1 points
_IV_MIN_MS = const(240)
_IV_MAX_MS = const(2400)
_EDGE_MS = const(4000)  # a modulation must have beats within 4 s of both window ends
_ECG_RING = const(2048)  # raw ECG samples kept for the QRS amplitude

SMOOTH_PASSES = const(5)
#: A modulation's breaths must cover COVER_NUM / COVER_DEN of the window.
COVER_NUM = const(1)
COVER_DEN = const(3)
FUSION_MAX_SD_X10 = const(40)
FUSION_MIN_ESTIMATES = const(3)
FUSION_MEDIAN_TOL_X10 = const(40)
RESP_MIN_X10 = const(40)  # 4 /min
RESP_MAX_X10 = const(600)  # 60 /min

REASON_TOO_FEW = "too_few_modulations"
REASON_DISAGREE = "modulations_disagree"


class RespiratoryRate:
    """Per-beat modulation series and the fused respiratory rate (module docstring).

    ``modulations``: a bit mask of the ``MOD_*`` to use (all by default).
    """

    def __init__(self, window_ms=32000, modulations=ALL_MODULATIONS):
        if not 8000 <= window_ms <= _GRID_MAX * _GRID_MS:
            raise ValueError("RespiratoryRate: window_ms must be 8000..60000")
        self.window_ms = window_ms
        self.modulations = modulations
        self.smooth_passes = SMOOTH_PASSES
        self._t = [array("l", [0] * _POINTS) for _ in range(N_MODULATIONS)]
        self._v = [array("l", [0] * _POINTS) for _ in range(N_MODULATIONS)]
        self._pos = [0] * N_MODULATIONS
        self._count = [0] * N_MODULATIONS
        self._last_t = [-1] * N_MODULATIONS
        self._grid = array("l", [0] * _GRID_MAX)
        self._work = array("l", [0] * _GRID_MAX)
        self._prefix = array("l", [0] * (_GRID_MAX + 1))
        self._sorted = array("l", [0] * _POINTS)
        self._peaks = array("l", [0] * _GRID_MAX)
        #: Per modulation: the last estimate (breaths/min x 10) or 0.
        self.estimates_x10 = [0] * N_MODULATIONS
        self._fuse = [0] * N_MODULATIONS
        #: Estimates the last fused value averaged.
        self.used = 0
        self.quality = 0
        self.reason = REASON_TOO_FEW
        self.sd_x10 = 0

    def add(self, mod, t_ms, value):
        """One beat's value of modulation ``mod`` at ``t_ms`` (non-decreasing)."""
        p = self._pos[mod]
        self._t[mod][p] = t_ms
        self._v[mod][p] = value
        self._pos[mod] = (p + 1) % _POINTS
        if self._count[mod] < _POINTS:
            self._count[mod] += 1

    def add_interval(self, mod, t_ms):
        """A beat at ``t_ms``: its interval to the previous one is the value."""
        last = self._last_t[mod]
        self._last_t[mod] = t_ms
        if last >= 0:
            iv = t_ms - last
            if _IV_MIN_MS <= iv <= _IV_MAX_MS:
                self.add(mod, t_ms, iv)

    # -- per report ----------------------------------------------------------
    def estimate(self, now_ms):
        """Fused rate over ``(now_ms - window_ms, now_ms]`` in breaths/min x 10, or
        None (``reason``).  Per-modulation results are in ``estimates_x10``."""
        vals = self._fuse
        count = 0
        for mod in range(N_MODULATIONS):
            r = 0
            if self.modulations & (1 << mod):
                r = self._one(mod, now_ms)
            self.estimates_x10[mod] = r
            if r:
                vals[count] = r
                count += 1
        self.quality = 0
        self.sd_x10 = 0
        self.used = 0
        if count < FUSION_MIN_ESTIMATES:
            self.reason = REASON_TOO_FEW
            return None
        sort_inplace(vals, count)
        h = count >> 1
        med = vals[h] if count & 1 else (vals[h - 1] + vals[h] + 1) >> 1
        total = 0
        kept = 0
        for i in range(count):
            if -FUSION_MEDIAN_TOL_X10 <= vals[i] - med <= FUSION_MEDIAN_TOL_X10:
                total += vals[i]
                kept += 1
        if kept < FUSION_MIN_ESTIMATES:
            self.reason = REASON_DISAGREE
            return None
        mean = (2 * total + kept) // (2 * kept)
        var = 0
        for i in range(count):
            if -FUSION_MEDIAN_TOL_X10 <= vals[i] - med <= FUSION_MEDIAN_TOL_X10:
                var += (vals[i] - mean) * (vals[i] - mean)
        sd = isqrt(var // kept)
        self.sd_x10 = sd
        self.used = kept
        if sd > FUSION_MAX_SD_X10:
            self.reason = REASON_DISAGREE
            return None
        self.reason = None
        q = 100 - (12 * sd) // 10
        self.quality = q if q > 0 else 0
        return mean

    def _one(self, mod, now_ms):
        """One modulation's rate (breaths/min x 10), or 0 when it has none."""
        lo = now_ms - self.window_ms
        ts = self._t[mod]
        vs = self._v[mod]
        n_all = self._count[mod]
        # Oldest index in the window.
        k = self._pos[mod]
        n = 0
        for _ in range(n_all):
            k = (k - 1) % _POINTS
            if ts[k] <= lo:
                k = (k + 1) % _POINTS
                break
            n += 1
        if n < 6:
            return 0
        first = k
        t_first = ts[first]
        t_last = ts[(first + n - 1) % _POINTS]
        if t_first - lo > _EDGE_MS or now_ms - t_last > _EDGE_MS:
            return 0
        # Clip to median +- 3 IQR.
        srt = self._sorted
        for i in range(n):
            srt[i] = vs[(first + i) % _POINTS]
        sort_inplace(srt, n)
        q1 = srt[n >> 2]
        q3 = srt[(3 * n) >> 2]
        med = srt[n >> 1]
        iqr = q3 - q1
        lo_v = med - 3 * iqr
        hi_v = med + 3 * iqr
        # Linear interpolation onto the grid (values clipped first).
        for i in range(n):
            idx = (first + i) % _POINTS
            v = vs[idx]
            srt[i] = lo_v if v < lo_v else hi_v if v > hi_v else v
        g = self._grid
        npts = self.window_ms // _GRID_MS
        i = 0
        for j in range(npts):
            tg = lo + (j + 1) * _GRID_MS
            while i < n and ts[(first + i) % _POINTS] < tg:
                i += 1
            if i == 0:
                g[j] = srt[0]
            elif i == n:
                g[j] = srt[n - 1]
            else:
                t0 = ts[(first + i - 1) % _POINTS]
                t1 = ts[(first + i) % _POINTS]
                v0 = srt[i - 1]
                g[j] = v0 + ((srt[i] - v0) * (tg - t0)) // (t1 - t0) if t1 > t0 else v0
        # Scale up for resolution in the filters (values are small ints).
        pre = self._prefix
        pre[0] = 0
        for j in range(npts):
            pre[j + 1] = pre[j] + g[j]
        w = self._work
        h = _DETREND_HALF
        for j in range(npts):
            a = j - h if j >= h else 0
            b = j + h + 1 if j + h + 1 <= npts else npts
            # x16 for sub-count resolution of the mean.
            w[j] = 16 * g[j] - (16 * (pre[b] - pre[a])) // (b - a)
        # [1 2 1] / 4 smoother, SMOOTH_PASSES times (ends replicated).
        src = w
        dst = g
        for _ in range(self.smooth_passes):
            prev = src[0]
            for j in range(npts):
                cur = src[j]
                nxt = src[j + 1] if j + 1 < npts else cur
                dst[j] = (prev + 2 * cur + nxt) >> 2
                prev = cur
            src, dst = dst, src
        return self._count_orig(src, npts)

    def _count_orig(self, x, npts):
        peaks = self._peaks
        srt = self._sorted
        npk = 0
        for j in range(1, npts - 1):
            if x[j] > x[j - 1] and x[j] >= x[j + 1]:
                peaks[npk] = j
                if npk < _POINTS:
                    srt[npk] = x[j]
                npk += 1
        if npk < 3:
            return 0
        ns = npk if npk < _POINTS else _POINTS
        sort_inplace(srt, ns)
        q3 = srt[(3 * ns) >> 2]
        thr = q3 // 5
        if thr < 0:
            thr = 0
        breaths = 0
        span = 0
        prev_peak = -1
        for p in range(npk):
            j = peaks[p]
            if x[j] <= thr:
                continue
            if prev_peak >= 0:
                # Exactly one local minimum below zero between the two peaks.
                troughs = 0
                for k in range(prev_peak + 1, j):
                    if x[k] < 0 and x[k] < x[k - 1] and x[k] <= x[k + 1]:
                        troughs += 1
                if troughs == 1:
                    breaths += 1
                    span += j - prev_peak
            prev_peak = j
        if breaths < 2 or COVER_DEN * span < COVER_NUM * npts:
            return 0
        rate = (600 * 1000 * breaths + (span * _GRID_MS) // 2) // (span * _GRID_MS)
        if rate < RESP_MIN_X10 or rate > RESP_MAX_X10:
            return 0
        return rate


class EcgModulations:
    """The ECG's respiratory modulations, beat by beat, for a :class:`RespiratoryRate`.

    Keeps the last ``_ECG_RING`` raw samples (a ring made at init; :meth:`push`
    per block, before the detector's beats of that block are handed to
    :meth:`beat`).  Per beat: QRS peak-to-peak and mid-level over +-50 ms of
    the R peak (raw counts) and the RR interval.  A beat older than the ring
    gives only its interval."""

    def __init__(self, fs_hz, resp):
        self.fs_hz = fs_hz
        self.resp = resp
        self._ring = array("h", bytes(2 * _ECG_RING))
        self._mask = _ECG_RING - 1
        self._half = (fs_hz * 50 + 500) // 1000
        self.samples = 0

    def push(self, buf, n):
        ring = self._ring
        mask = self._mask
        t = self.samples
        for i in range(n):
            ring[(t + i) & mask] = buf[i]
        self.samples = t + n

    def beat(self, at):
        t_ms = (at * 1000) // self.fs_hz
        resp = self.resp
        resp.add_interval(MOD_ECG_INTERVAL, t_ms)
        a = at - self._half
        b = at + self._half
        if a < 0 or b >= self.samples or self.samples - a > _ECG_RING:
            return
        ring = self._ring
        mask = self._mask
        hi = lo = ring[a & mask]
        for k in range(a + 1, b + 1):
            v = ring[k & mask]
            if v > hi:
                hi = v
            elif v < lo:
                lo = v
        resp.add(MOD_ECG_AMPLITUDE, t_ms, hi - lo)
        resp.add(MOD_ECG_BASELINE, t_ms, (hi + lo) >> 1)
