"""Streaming integer QRS detector (Pan-Tompkins class) for the device.

``QrsDetector(fs_hz)``; ``process(samples)`` takes the next block of raw ECG
samples (ints, ADC counts) and returns the R-peak sample indices, counted from
the first sample ever given, that it decided on during this call; a final
``flush()`` returns the rest.  Concatenated, the returned lists are the same
whatever the block sizes (1 sample, 7, 360, a whole record).

Signal path (per sample, integers only)
---------------------------------------
1. Input: a running mean of the raw samples (first-order tracker, time
   constant ``2**dc_shift`` samples: 0.36 s at 360 Hz, 0.26 s at 250 Hz) is
   subtracted, the difference scaled by ``ECG_INPUT_SHIFT_BITS`` (the filter
   chain's scaling: 1 mV = 3200 LSB for a 200 counts/mV front end) and
   saturated to Q15 (counted in ``clamped``).  So any ADC offset works (MIT-BIH
   11-bit around 1024, signed 16-bit around 0); this baseline-corrected ECG is
   kept in a ring buffer to place the R peak.
2. Band-pass 5-15 Hz: the shared ``filter_tables`` ``"qrs_bandpass"`` table
   (Butterworth, 4 poles) in ``BiquadCascadeEfQ15``: the coefficients the
   filter chain ships, no second set.  The detector needs no mains frequency.
3. Derivative ``d[n] = f[n] - f[n - K]``, K = 10 ms (Hamilton & Tompkins'
   ``deriv1``); ``|d|`` saturated to 32767.
4. Squaring, shifted: ``e = d*d >> esh``, ``2**esh > W``.
5. Moving-window integration over W = 150 ms (Pan & Tompkins): running sum
   of the last W values of ``e``.
6. Peaks of the integrated signal (Hamilton & Tompkins' ``Peak()``): the
   running maximum becomes a candidate when the signal falls below half of it
   or 95 ms after it.

Scaling and overflow: every per-sample value is a small int below 2**30
(MicroPython's small ints hold 31 bits): input and band-pass Q15 (saturating),
``|d| <= 32767``, ``d*d < 2**30``, ``e < 2**30 / W``, so the integrated signal
is below 2**30.  Nothing is allocated per sample (ring buffers and the block
buffer are made at init).  Sample times are re-based every
``_REBASE_SAMPLES`` samples, so they stay small ints on a device that runs for
months; the reported indices add the base back (a long int per beat at most).

Per candidate (a few per second)
--------------------------------
- ``h``: the integrated-signal peak; ``pf``: the largest ``|f|`` and ``sl``:
  the largest ``|d|`` in its integration window.
- R peak: the sample of largest magnitude of the baseline-corrected input
  (step 1) from 120 ms before to 40 ms after the band-pass extremum moved back
  by the band-pass group delay (``filter_tables.group_delay_samples`` at
  10 Hz, rounded to samples), not before the integration window.  The input has
  no filter delay, so the index is the R peak itself (the S or QS peak for a
  mainly negative QRS); on ECGSYN it is within 1 sample of the true R.
- Quiet test (noise gate, below): does the integrated signal drop below
  ``h / 16`` somewhere in the 400 ms before the integration window?

Decision rules (Pan & Tompkins 1985, Hamilton & Tompkins 1986; changes marked)
-----------------------------------------------------------------------------
- Pre-blanking (Hamilton-Tompkins): a candidate is held 200 ms; a larger one
  within 200 ms replaces it.  *Added*: a candidate followed 200-300 ms later
  by one with at least 3x its integrated height is dropped as a P wave (a
  second QRS that soon is rare; a P wave precedes its QRS by the PR interval,
  up to ~300 ms with first-degree AV block).
- Learning (Pan-Tompkins): the first 2 s only collect candidates; then the
  signal levels start at the largest candidate, the noise levels at half the
  mean of the integrated (and rectified band-passed) signal, and the held-back
  candidates are classified in order.
- Dual thresholds (Pan-Tompkins): a QRS needs ``h > THRESHOLD_I1`` and
  ``pf > THRESHOLD_F1``, each ``noise + (signal - noise) / 4``, with levels
  updated as ``level += (peak - level) / 8`` (1/4 for a QRS found by
  search-back), and ``pf`` of at least 60 uV.
- T-wave discrimination (Pan-Tompkins): a candidate less than 360 ms after the
  last QRS whose largest slope is under half of that QRS's is a T wave.
- *Changed*: Pan-Tompkins halve both thresholds when the rhythm is irregular;
  here, for every candidate after the 360 ms T-wave window, whatever the
  rhythm, the thresholds sit at 1/8 instead of 1/4 of the way from the noise
  to the signal level (T waves, which the full threshold keeps out, do not
  come that late; small ectopic beats do; never below the noise level).  The
  same 1/8 applies inside the T-wave window to a candidate whose largest
  slope is at least 3/4 of the last QRS's: no T wave is that steep, and fast
  ventricular tachycardia (RR under 360 ms) is a run of such candidates.
- Search-back (Pan-Tompkins, with Hamilton-Tompkins' interval): when no QRS
  has come for 150 % (Pan-Tompkins: 166 %) of RR AVERAGE2 (mean of the last 8
  RR intervals within 92-116 % of it; of the last 8 intervals if none has been
  regular for 8 beats), the largest noise candidate at least 200 ms from both
  neighbours that passes half the thresholds (and the T-wave test) is a QRS.
  *Added*, to bound the latency and to recover from a drop in QRS amplitude:
  if there is none, the candidates up to the deadline are dropped, the search
  window moves on one interval and the signal levels move half-way to the
  noise levels.
- *Added* noise gate: a QRS passes if the quiet test found a quiet moment
  (the TP segment of an ECG) or if it repeats the previous QRS (RR within 1/8,
  ``h`` and ``sl`` within 3/8: runs of fast beats such as ventricular
  tachycardia leave no quiet time); beats are reported while most of the last
  8 QRS passed.  Withheld beats still adapt the detector and are counted in
  ``suppressed``.  Effect: a minute of white or 5-15 Hz noise (0.2-5 mV)
  yields 0-8 beats instead of ~160; on MIT-BIH DS1 it withholds 11
  detections in noise bursts (108, 203), none in ventricular tachycardia, and
  the ventricular flutter waves of 207.

Decision latency: every R peak at index ``t`` is returned by the ``process``
call that delivers sample ``t + latency_bound_samples`` or earlier
(``latency_bound_ms``: 3.82 s at 360 Hz, 3.83 s at 250 Hz; that is the
search-back path at the longest RR average, 2 s).  A beat that passes the
first threshold is out after ~0.4-0.7 s; beats in the first 2 s wait for the
end of learning.

Input: ints within int16 (-32768..32767); ValueError otherwise (floats,
bools, strings, out-of-range values); numpy integers are converted.  A block
with a bad sample is rejected whole, before any of it is used.

References: J. Pan, W. J. Tompkins, "A real-time QRS detection algorithm",
IEEE TBME 32(3):230-236, 1985.  P. S. Hamilton, W. J. Tompkins, "Quantitative
investigation of QRS detection rules using the MIT/BIH arrhythmia database",
IEEE TBME 33(12):1157-1165, 1986, and Hamilton's open-source OSEA code.
"""

from firmware.hw.compat import const
from firmware.signal import filter_tables
from firmware.signal.ecgfilter import ECG_INPUT_SHIFT_BITS, make_filter

_DC_TRACK_MS = const(360)  # running-mean time constant, rounded down to 2**k samples
_DERIV_MS = const(10)  # derivative span (Hamilton-Tompkins deriv1)
_MWI_MS = const(150)  # integration window (Pan-Tompkins)
_PEAK_TIMEOUT_MS = const(95)  # Peak(): emit 95 ms after the maximum (Hamilton-Tompkins)
_REFRACTORY_MS = const(200)  # pre-blanking / refractory (Pan-Tompkins, Hamilton-Tompkins)
_PWAVE_MS = const(300)  # look-ahead for a dominant QRS after a P wave (added)
_PWAVE_DOMINANCE = const(3)  # ... at least 3x the integrated height (added)
_TWAVE_MS = const(360)  # T-wave window (Pan-Tompkins)
_GAP_SHIFT = const(2)  # THRESHOLD1 = noise + (signal - noise) / 4 (Pan-Tompkins)
_LATE_GAP_SHIFT = const(3)  # ... / 8 after the T-wave window (changed, see above)
_LEARN_MS = const(2000)  # learning phase (Pan-Tompkins)
_RR_INIT_MS = const(1000)  # RR averages before the first beats (Hamilton-Tompkins)
_RR_MIN_MS = const(200)  # RR intervals outside 200..2000 ms are not averaged
_RR_MAX_MS = const(2000)
_RR_LOW_PERCENT = const(92)  # RR LOW LIMIT (Pan-Tompkins)
_RR_HIGH_PERCENT = const(116)  # RR HIGH LIMIT (Pan-Tompkins)
_RR_MISSED_PERCENT = const(150)  # search-back after 1.5 RR (Hamilton-Tompkins; PT: 166 %)
_R_BEFORE_MS = const(120)  # R-peak search before the band-pass extremum
_R_AFTER_MS = const(40)  # ... and after it
_MIN_QRS_UV = const(60)  # smallest band-passed QRS amplitude accepted
_UV_PER_COUNT = const(5)  # the front end: 200 counts/mV
_QUIET_MS = const(400)  # noise gate: a QRS has a quiet moment in the 400 ms before it,
_QUIET_SHIFT = const(4)  # ... the integrated signal below 1/16 of the QRS's peak,
_RUN_RR_EIGHTHS = const(1)  # ... or repeats the previous QRS: RR within 1/8,
_RUN_SHAPE_EIGHTHS = const(3)  # ... height and slope within 3/8;
_GATE_BEATS = const(8)  # ... beats are reported while most of the last 8 pass
_GATE_MASK = const((1 << _GATE_BEATS) - 1)
_HISTORY = const(8)  # RR intervals averaged (Pan-Tompkins)
_MAX_CANDIDATES = const(32)  # noise candidates kept for search-back
_CHUNK = const(256)  # samples per inner block (the ring buffers hold more)
_REBASE_SAMPLES = const(1 << 28)  # keep sample times below 2**29


class QrsDetector:
    """Streaming QRS detector; see the module docstring.

    ``fs_hz`` is required (250 or 360, the rates of ``filter_tables``): a missing
    or unsupported rate raises ValueError, never a silent default.
    """

    def __init__(self, fs_hz=None):
        if fs_hz is None:
            raise ValueError("fs_hz is required (no default sample rate)")
        fs = filter_tables.check_rate_hz(fs_hz)
        self.fs_hz = fs

        def ms(v):
            return (v * fs + 500) // 1000

        self._bp = make_filter(fs, "qrs_bandpass")
        self._bp_delay = int(filter_tables.group_delay_samples(fs, "qrs_bandpass") + 0.5)
        self._k = max(1, ms(_DERIV_MS))
        self._w = max(1, ms(_MWI_MS))
        esh = 0  # bits of w (int.bit_length is not in MicroPython)
        while (1 << esh) <= self._w:
            esh += 1
        self._esh = esh
        self._t95 = ms(_PEAK_TIMEOUT_MS)
        self._pb = ms(_REFRACTORY_MS)
        self._pw = max(self._pb, ms(_PWAVE_MS))
        self._tw = ms(_TWAVE_MS)
        self._learn_len = ms(_LEARN_MS)
        self._rr_min = ms(_RR_MIN_MS)
        self._rr_max = ms(_RR_MAX_MS)
        self._r_before = ms(_R_BEFORE_MS)
        self._r_after = ms(_R_AFTER_MS)
        dc_shift = 0
        while (2 << dc_shift) <= ms(_DC_TRACK_MS):
            dc_shift += 1
        self._dc_shift = dc_shift
        self._pf_min = (_MIN_QRS_UV << ECG_INPUT_SHIFT_BITS) // _UV_PER_COUNT
        # How far back a candidate reaches from the sample that emits it.
        self._quiet = ms(_QUIET_MS)
        reach = self._t95 + self._w + self._k + self._bp_delay + self._r_before + 2
        if reach < self._t95 + self._w + self._quiet + 2:
            reach = self._t95 + self._w + self._quiet + 2
        size = 64
        while size < reach + _CHUNK + 8:  # the input stage runs a chunk ahead
            size *= 2
        self._mask = size - 1
        # From an R peak to the sample at which its candidate has certainly been
        # emitted (integrated-signal peak at most w + k + bp_delay + r_before
        # later, emitted t95 after it) and released from the hold (pw, or up to
        # t95 more while a peak that started inside the hold is tracked).
        self._pipe = (self._r_before + self._bp_delay + self._w + self._k + self._pw
                      + 2 * self._t95 + 2)
        sb_max = (self._rr_max * _RR_MISSED_PERCENT) // 100
        #: Every R peak at index t is returned by the ``process`` call that delivers
        #: sample ``t + latency_bound_samples`` (or an earlier one).
        self.latency_bound_samples = sb_max + self._pipe + 1
        self.latency_bound_ms = (self.latency_bound_samples * 1000 + fs - 1) // fs
        self._ring_x = [0] * size  # baseline-corrected input
        self._ring_f = [0] * size  # band-passed
        self._ring_e = [0] * size  # squared slope
        self._ring_s = [0] * size  # integrated
        self._buf = [0] * _CHUNK
        self._c_h = [0] * _MAX_CANDIDATES
        self._c_t = [0] * _MAX_CANDIDATES
        self._c_pf = [0] * _MAX_CANDIDATES
        self._c_sl = [0] * _MAX_CANDIDATES
        self._c_quiet = [0] * _MAX_CANDIDATES
        self._rr1 = [0] * _HISTORY
        self._rr2 = [0] * _HISTORY
        self.reset()

    def reset(self):
        """Start again: state as after construction, indices from 0."""
        self._bp.reset()
        for ring in (self._ring_x, self._ring_f, self._ring_e, self._ring_s):
            for i in range(len(ring)):
                ring[i] = 0
        self._base = 0  # sample index of internal time 0 (re-basing)
        self._n = 0  # internal time of the next sample
        self._pos = 0
        self._dc = 0
        self._started = False
        self._s = 0  # integrated signal
        self._last = 0
        self._pmax = 0  # peak being tracked (0: none)
        self._ptime = 0
        self._tsm = 0
        self._held = False
        self._h_h = self._h_m = self._h_t = self._h_pf = self._h_sl = self._h_quiet = 0
        self._learned = False
        self._nc = 0
        self._spki = self._npki = self._spkf = self._npkf = 0
        self._gate_bits = 0  # 1 per QRS that failed the noise gate, newest lowest
        self._gate_len = 0
        self._last_rr = 0
        self._last_h = 0
        self._has_last = False  # a QRS has been accepted
        self._last_t = 0
        self._last_sl = 0
        self._sb_start = 0
        rr0 = (_RR_INIT_MS * self.fs_hz) // 1000
        for i in range(_HISTORY):
            self._rr1[i] = rr0
            self._rr2[i] = rr0
        self._rr1_pos = self._rr2_pos = 0
        self._rr_avg1 = self._rr_avg2 = rr0
        self._irregular = 0
        self._sb_int = (rr0 * _RR_MISSED_PERCENT) // 100
        self._learn = self._learn_len  # internal time at which learning ends
        self._t_valid = self._w + self._k  # internal time the integrator is full
        self._next_ev = self._learn
        self._out = []
        #: Input samples saturated after scaling (baseline step beyond +-10 mV).
        self.clamped = 0
        #: Beats the noise gate withheld.
        self.suppressed = 0

    # -------------------------------------------------------------- input

    def process(self, samples):
        """Consume the next block of raw samples; return the newly decided R peaks."""
        for v in samples:
            if type(v) is not int:
                samples = _as_int16_list(samples)
                break
        else:
            if len(samples) and (min(samples) < -32768 or max(samples) > 32767):
                samples = _as_int16_list(samples)  # raises, naming the sample
        total = len(samples)
        i = 0
        while i < total:
            cnt = total - i
            if cnt > _CHUNK:
                cnt = _CHUNK
            self._run(samples, i, cnt)
            i += cnt
            if self._n >= _REBASE_SAMPLES:
                self._rebase()
        out = self._out
        self._out = []
        return out

    def flush(self):
        """End of the stream: decide what is pending and return it."""
        if self._pmax:
            self._peak(self._pmax, self._ptime, self._n - 1)
            self._pmax = 0
            self._tsm = 0
        if self._held:
            self._release()
        if not self._learned:
            self._end_learning(self._n)
        if self._has_last and self._n - self._sb_start > self._sb_int:
            self._search_back(self._n + self._pb)
        out = self._out
        self._out = []
        return out

    def _run(self, samples, i0, cnt):
        """Filter and scan ``samples[i0:i0 + cnt]`` (cnt <= _CHUNK)."""
        buf = self._buf
        ring_x = self._ring_x
        mask = self._mask
        dsh = self._dc_shift
        if not self._started:
            self._dc = samples[i0] << dsh
            self._started = True
        dc = self._dc
        p = self._pos
        clamped = 0
        for j in range(cnt):
            x = samples[i0 + j]
            dc += x - (dc >> dsh)
            u = (x - (dc >> dsh)) << ECG_INPUT_SHIFT_BITS
            if u > 32767:
                u = 32767
                clamped += 1
            elif u < -32768:
                u = -32768
                clamped += 1
            buf[j] = u
            p = (p + 1) & mask
            ring_x[p] = u
        self._dc = dc
        self.clamped += clamped
        self._bp.process_inplace(buf, cnt)

        ring_f = self._ring_f
        ring_e = self._ring_e
        ring_s = self._ring_s
        k = self._k
        w = self._w
        esh = self._esh
        t95 = self._t95
        pos = self._pos
        s = self._s
        last = self._last
        pmax = self._pmax
        ptime = self._ptime
        tsm = self._tsm
        n = self._n
        next_ev = self._next_ev
        for j in range(cnt):
            f = buf[j]
            pos = (pos + 1) & mask
            ring_f[pos] = f
            d = f - ring_f[(pos - k) & mask]
            if d < 0:
                d = -d
            if d > 32767:
                d = 32767
            e = (d * d) >> esh
            s += e - ring_e[(pos - w) & mask]
            ring_e[pos] = e
            ring_s[pos] = s
            if tsm:
                tsm += 1
            if s > last and s > pmax:
                pmax = s
                ptime = n
                tsm = 1
            elif pmax and (s < (pmax >> 1) or tsm > t95):
                self._pos = pos
                self._peak(pmax, ptime, n)
                pmax = 0
                tsm = 0
                next_ev = n
            last = s
            if n >= next_ev:
                self._pos = pos
                next_ev = self._tick(n, ptime if pmax else -1)
            n += 1
        self._pos = pos
        self._s = s
        self._last = last
        self._pmax = pmax
        self._ptime = ptime
        self._tsm = tsm
        self._n = n
        self._next_ev = next_ev

    def _rebase(self):
        """Move internal time 0 forward so that sample times stay small ints.

        Only differences of times matter to the detector; a time so old that it
        would fall below -2**29 is clamped there, which changes no decision (all
        compared intervals are far shorter)."""
        shift = self._n - self._mask - 1
        self._base += shift
        self._n -= shift
        self._ptime = _older(self._ptime, shift)
        self._next_ev = _older(self._next_ev, shift)
        self._learn = _older(self._learn, shift)
        self._t_valid = _older(self._t_valid, shift)
        self._h_m = _older(self._h_m, shift)
        self._h_t = _older(self._h_t, shift)
        self._sb_start = _older(self._sb_start, shift)
        self._last_t = _older(self._last_t, shift)
        for i in range(self._nc):
            self._c_t[i] = _older(self._c_t[i], shift)

    # --------------------------------------------------------- candidates

    def _peak(self, h, m, n):
        """Integrated-signal peak ``h`` at time ``m``, emitted at time ``n``."""
        mask = self._mask
        pos = self._pos
        ring_f = self._ring_f
        k = self._k
        lo = m - self._w + 1 - k
        if lo < 0:
            lo = 0
        pf = -1
        tf = m
        sl = 0
        t = lo
        while t <= m:
            i = (pos - (n - t)) & mask
            v = ring_f[i]
            a = v if v >= 0 else -v
            if a > pf:
                pf = a
                tf = t
            if t - k >= lo:
                d = v - ring_f[(i - k) & mask]
                if d < 0:
                    d = -d
                if d > sl:
                    sl = d
            t += 1
        # R peak: largest |baseline-corrected input| near the band-pass extremum.
        a = lo - self._bp_delay
        if a < n - mask:
            a = n - mask
        if a < 0:
            a = 0
        c = tf - self._bp_delay
        t = c - self._r_before
        if t < a:
            t = a
        b = c + self._r_after
        if b > n:
            b = n
        ring_x = self._ring_x
        best = -1
        tr = c
        while t <= b:
            v = ring_x[(pos - (n - t)) & mask]
            if v < 0:
                v = -v
            if v > best:
                best = v
                tr = t
            t += 1
        # Noise gate: is there a quiet moment (the TP segment of an ECG) in
        # the _QUIET_MS before this candidate's integration window?
        b = m - self._w
        t = b - self._quiet
        if t < self._t_valid:
            t = self._t_valid  # the integrator is still filling before this
        quiet_level = h >> _QUIET_SHIFT
        ring_s = self._ring_s
        quiet = 1 if t > b else 0
        while t <= b:
            if ring_s[(pos - (n - t)) & mask] <= quiet_level:
                quiet = 1
                break
            t += 1
        self._candidate(h, m, tr, pf, sl, quiet)

    def _candidate(self, h, m, t, pf, sl, qt):
        """Pre-blanking and the P-wave look-ahead."""
        if self._held:
            dm = m - self._h_m
            if dm < self._pb:
                if h > self._h_h:
                    self._hold(h, m, t, pf, sl, qt)
                return
            if dm < self._pw and h >= _PWAVE_DOMINANCE * self._h_h:
                self._hold(h, m, t, pf, sl, qt)
                return
            self._release()
        self._hold(h, m, t, pf, sl, qt)

    def _hold(self, h, m, t, pf, sl, qt):
        self._held = True
        self._h_h = h
        self._h_m = m
        self._h_t = t
        self._h_pf = pf
        self._h_sl = sl
        self._h_quiet = qt

    def _release(self):
        self._held = False
        self._classify(self._h_h, self._h_t, self._h_pf, self._h_sl, self._h_quiet)

    def _tick(self, n, tracking):
        """Timed events at time ``n``; returns the time of the next one.

        ``tracking``: time of the integrated-signal peak being tracked, -1 if none.
        """
        pw = self._pw
        if self._held and n >= self._h_m + pw and (tracking < 0 or tracking >= self._h_m + pw):
            self._release()
        if not self._learned and n >= self._learn:
            self._end_learning(n + 1)
        if self._learned and self._has_last:
            if n >= self._sb_start + self._sb_int + self._pipe:
                self._search_back(n)
                if n >= self._sb_start + self._sb_int + self._pipe:
                    self._sb_failed()
        nxt = n + self._rr_max
        if self._held and self._h_m + pw < nxt:
            nxt = self._h_m + pw
        if not self._learned:
            if self._learn < nxt:
                nxt = self._learn
        elif self._has_last:
            dl = self._sb_start + self._sb_int + self._pipe
            if dl < nxt:
                nxt = dl
        if nxt <= n:
            nxt = n + 1
        return nxt

    # ---------------------------------------------------------- decisions

    def _end_learning(self, seen):
        """End of learning; ``seen``: samples scanned so far (the newest at ``_pos``)."""
        self._learned = True
        nc = self._nc
        self._nc = 0
        if nc == 0:
            return
        c_h = self._c_h
        c_pf = self._c_pf
        top = 0
        for i in range(1, nc):
            if c_h[i] > c_h[top]:
                top = i
        self._spki = c_h[top]
        self._spkf = c_pf[top]
        # Noise levels (Pan-Tompkins): half the mean of the integrated and of
        # the rectified band-passed signal, over the learning samples still in
        # the ring buffers (the last ~1.4 s of the 2 s).
        cnt = self._mask + 1
        if cnt > seen:
            cnt = seen
        if cnt < 1:
            cnt = 1
        tot_s = 0
        tot_f = 0
        pos = self._pos
        for j in range(cnt):
            i = (pos - j) & self._mask
            tot_s += self._ring_s[i]
            v = self._ring_f[i]
            tot_f += v if v >= 0 else -v
        self._npki = tot_s // (2 * cnt)
        self._npkf = tot_f // (2 * cnt)
        hs = c_h[:nc]  # once per stream
        ts = self._c_t[:nc]
        pfs = c_pf[:nc]
        sls = self._c_sl[:nc]
        qts = self._c_quiet[:nc]
        for i in range(nc):
            self._classify(hs[i], ts[i], pfs[i], sls[i], qts[i])

    def _add_noise_candidate(self, h, t, pf, sl, qt):
        nc = self._nc
        if nc == _MAX_CANDIDATES:
            for i in range(nc - 1):
                self._c_h[i] = self._c_h[i + 1]
                self._c_t[i] = self._c_t[i + 1]
                self._c_pf[i] = self._c_pf[i + 1]
                self._c_sl[i] = self._c_sl[i + 1]
                self._c_quiet[i] = self._c_quiet[i + 1]
            nc -= 1
        self._c_h[nc] = h
        self._c_t[nc] = t
        self._c_pf[nc] = pf
        self._c_sl[nc] = sl
        self._c_quiet[nc] = qt
        self._nc = nc + 1

    def _thresholds(self, t, sl=0):
        """(THRESHOLD_I1, THRESHOLD_F1) for a candidate at time ``t`` with largest
        slope ``sl``."""
        sh = _GAP_SHIFT
        if (not self._has_last or t - self._last_t >= self._tw
                or 4 * sl >= 3 * self._last_sl):
            sh = _LATE_GAP_SHIFT
        return (self._npki + ((self._spki - self._npki) >> sh),
                self._npkf + ((self._spkf - self._npkf) >> sh))

    def _classify(self, h, t, pf, sl, qt):
        if not self._learned:
            self._add_noise_candidate(h, t, pf, sl, qt)
            return
        if self._has_last and t - self._sb_start > self._sb_int:
            self._search_back(t)
        thr_i, thr_f = self._thresholds(t, sl)
        qrs = h > thr_i and pf > thr_f and pf >= self._pf_min
        if qrs and self._has_last:
            rr = t - self._last_t
            if rr <= 0 or (rr < self._tw and sl < (self._last_sl >> 1)):
                qrs = False
        if qrs:
            self._accept(h, t, pf, sl, qt, False)
            return
        self._npki += (h - self._npki) >> 3
        self._npkf += (pf - self._npkf) >> 3
        if not self._has_last or t > self._last_t:
            self._add_noise_candidate(h, t, pf, sl, qt)

    def _search_back(self, limit):
        """Take missed beats among the noise candidates before ``limit``."""
        pb = self._pb
        while True:
            last = self._last_t
            best = -1
            for i in range(self._nc):
                t = self._c_t[i]
                if t - last < pb or limit - t < pb:
                    continue
                pf = self._c_pf[i]
                thr_i, thr_f = self._thresholds(t, self._c_sl[i])
                if self._c_h[i] <= (thr_i >> 1) or pf <= (thr_f >> 1) or pf < self._pf_min:
                    continue
                if t - last < self._tw and self._c_sl[i] < (self._last_sl >> 1):
                    continue
                if best < 0 or self._c_h[i] > self._c_h[best]:
                    best = i
            if best < 0:
                return
            self._accept(self._c_h[best], self._c_t[best], self._c_pf[best],
                         self._c_sl[best], self._c_quiet[best], True)
            if limit - self._sb_start <= self._sb_int:
                return

    def _sb_failed(self):
        end = self._sb_start + self._sb_int
        self._drop_candidates_until(end)
        self._sb_start = end
        self._spki = self._npki + ((self._spki - self._npki) >> 1)
        self._spkf = self._npkf + ((self._spkf - self._npkf) >> 1)

    def _drop_candidates_until(self, t_end):
        j = 0
        for i in range(self._nc):
            if self._c_t[i] > t_end:
                self._c_h[j] = self._c_h[i]
                self._c_t[j] = self._c_t[i]
                self._c_pf[j] = self._c_pf[i]
                self._c_sl[j] = self._c_sl[i]
                self._c_quiet[j] = self._c_quiet[i]
                j += 1
        self._nc = j

    def _accept(self, h, t, pf, sl, qt, from_search_back):
        sh = 2 if from_search_back else 3
        self._spki += (h - self._spki) >> sh
        self._spkf += (pf - self._spkf) >> sh
        report = self._gate(h, t, sl, qt)
        if self._has_last:
            rr = t - self._last_t
            if self._rr_min <= rr <= self._rr_max:
                self._add_rr(rr)
        self._has_last = True
        self._last_t = t
        self._last_sl = sl
        self._sb_start = t
        self._drop_candidates_until(t)
        if report:
            self._out.append(t + self._base)
        else:
            self.suppressed += 1

    def _gate(self, h, t, sl, quiet):
        """Noise gate: record whether this QRS looks like one; True to report it."""
        ok = quiet
        if not ok and self._has_last:
            # No quiet moment before it, but a repeat of the previous QRS (same
            # RR, height and slope: a run of fast beats such as ventricular
            # tachycardia, which leaves no quiet time between its complexes).
            rr = t - self._last_t
            ok = (_close(rr, self._last_rr, _RUN_RR_EIGHTHS)
                  and _close(h, self._last_h, _RUN_SHAPE_EIGHTHS)
                  and _close(sl, self._last_sl, _RUN_SHAPE_EIGHTHS))
        if self._has_last:
            self._last_rr = t - self._last_t
        self._last_h = h
        self._gate_bits = ((self._gate_bits << 1) | (0 if ok else 1)) & _GATE_MASK
        if self._gate_len < _GATE_BEATS:
            self._gate_len += 1
        failed = 0
        v = self._gate_bits
        while v:
            failed += v & 1
            v >>= 1
        return 2 * failed < self._gate_len

    def _add_rr(self, rr):
        """RR AVERAGE1 (last 8) and RR AVERAGE2 (last 8 regular) as Pan-Tompkins."""
        self._rr1[self._rr1_pos] = rr
        self._rr1_pos = (self._rr1_pos + 1) % _HISTORY
        self._rr_avg1 = sum(self._rr1) // _HISTORY
        lo = (self._rr_avg2 * _RR_LOW_PERCENT) // 100
        hi = (self._rr_avg2 * _RR_HIGH_PERCENT) // 100
        if lo <= rr <= hi:
            self._rr2[self._rr2_pos] = rr
            self._rr2_pos = (self._rr2_pos + 1) % _HISTORY
            self._rr_avg2 = sum(self._rr2) // _HISTORY
            self._irregular = 0
        else:
            self._irregular += 1
            if self._irregular >= _HISTORY:
                # No regular interval for 8 beats: the rhythm has changed.
                for i in range(_HISTORY):
                    self._rr2[i] = self._rr1[i]
                self._rr_avg2 = self._rr_avg1
                self._irregular = 0
        self._sb_int = (self._rr_avg2 * _RR_MISSED_PERCENT) // 100


def _close(a, b, eighths):
    """|a - b| <= eighths/8 of b, for 0 <= a, b < 2**30 (no long ints)."""
    d = a - b
    if d < 0:
        d = -d
    return d <= (b >> 3) * eighths


def _older(t, shift):
    t -= shift
    return t if t > -(1 << 29) else -(1 << 29)


def _as_int16_list(samples):
    """``samples`` as a list of ints, or ValueError naming the first bad one."""
    out = []
    for v in samples:
        if type(v) is not int:
            if isinstance(v, bool) or not hasattr(v, "__index__"):
                raise ValueError("samples must be ints (ADC counts), got %r" % (v,))
            v = v.__index__()
        if v < -32768 or v > 32767:
            raise ValueError("sample %d is outside int16 (-32768..32767)" % (v,))
        out.append(v)
    return out
