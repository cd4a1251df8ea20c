"""Atrial fibrillation from RR irregularity, on intervals the beat classes vouch for,
and from the atrial activity before the QRS (P waves absent or inconsistent).

Method: Dash et al. (2009), three statistics of a window of RR intervals, all
three of which must say "random" (S. Dash, K. H. Chon, S. Lu, E. A. Raeder,
"Automatic real time detection of atrial fibrillation", Ann. Biomed. Eng.
37(9):1701-1709, 2009):

1. normalised RMSSD, ``sqrt(mean(dRR^2)) / mean(RR) > 0.1`` (``_NRMSSD_PERMILLE``);
2. Shannon entropy of the RR histogram (16 bins between the window's minimum
   and maximum), normalised by ``log 16``, above 0.7 (``_SHE_PERMILLE``);
3. turning-point ratio inside the 95 % band of an i.i.d. series: the count
   of local extrema within ``(2N - 4) / 3 +- 1.96 sqrt((16N - 29) / 90)``.

Dash removes ectopic beats with a percentile trim (the 8 longest and 8
shortest of 128 intervals; here 4 and 4 of 64), which this keeps.  On top of
it the device lets the beat classifier choose the intervals
(:mod:`firmware.rhythm.monitor`): only NN intervals, between two consecutive
beats it calls N, enter the window, so the alternation of bigeminy (N V N V:
no NN interval at all) and the short/long pairs of frequent PVCs and PACs
never look random.  The plain peer gives this detector every interval.

Window: ``_WINDOW`` = 64 intervals (Dash used 128; 64 halves the latency;
the statistics' thresholds are Dash's).

Onset and offset with hysteresis on a short window.  The 64-interval window
lags: after AF it holds a minute of AF intervals, and unlabelled ectopic beats
in the sinus that follows keep resetting a "regular intervals in a row" count,
so AF ran on long after it ended.  So a second, short window decides entry
and exit: over the last ``_RECENT`` = 16 intervals, count the *steps*, the
intervals that differ from the one before by more than 1/``_STEP_DIV`` = 1/16
(6.25 %) of it, and separately the lag-2 steps (against the interval two
before: the alternation test; a regular-alternating rhythm, bigeminy the
classes missed or flutter with 2:1/4:1 conduction, steps at every interval
but not at lag 2).  The smaller count is the short window's irregularity.
AF starts when the long window passes Dash's three tests *and* at least
``_ENTER_IRREGULAR`` = 10 of 16 intervals step (more than half: the median
step is above 1/16); it ends as soon as at most ``_EXIT_IRREGULAR`` = 6 of 16
step (the median well below), whatever the long window says, or, as before,
when ``_EXIT_WINDOWS`` windows fail after ``_GAP`` regular intervals.  After
an end the long window starts afresh (a new episode needs 64 intervals of
its own).  Where the two step levels and counts come from: the step
distributions of DS1's 16-interval windows (AF: >= 10 steps in 98 % of
windows; other rhythms of the other 20 records: <= 6 in 95 %) and the
simulator's AF (CV 0.2 before the classes thin it, <= 6 steps sometimes): so
these four numbers were looked at on the data the report scores.
Organised rhythms: flutter whose RR histogram has one or two narrow modes
already fails Dash's entropy test (two modes fill 2 of 16 bins: 0.25 < 0.7)
and, alternating, the lag-2 test; 203's flutter has RR as broad as its AF
(variable block with ectopy) and is called AF: its flutter waves are not
locked to the QRS in the P region either (coherence as low as AF's), so
telling it apart needs the flutter waves' regularity over a longer stretch
of the TQ segment than the classifier's window holds (not done).

Atrial activity (the third method tried for AF, session 6): AF is irregular
RR *and* no repeating P waves, so the decision also reads the P-wave
coherence of :mod:`firmware.rhythm.atrial` (after Babaeizadeh et al. 2009,
J. Electrocardiol. 42(6):522-526: their P-wave morphology similarity, as an
ensemble coherence of the last 16 on-time N beats' P regions, taken from
channel 0 of the classifier input; not their RR Markov score).  AF starts
only while the coherence is below ``_COH_ENTER`` = 350 per mille (AF windows
of DS1: 98 % below; other rhythms: 2.5 %); it ends as soon as the coherence
is above ``_COH_EXIT`` = 500 (P waves back: 93 % of other rhythms' windows,
0.6 % of AF's), whatever the intervals say, dated at the newest beat of the
window whose P region does not match the window's sum
(:meth:`firmware.rhythm.atrial.AtrialActivity.last_incoherent`).  The onset
is dated when the intervals first say AF (the atrial evidence may come
later) and not before the first beat of the window in which the coherence
last fell from above ``_COH_EXIT`` to below ``_COH_ENTER``.  The two levels were chosen
looking at DS1's coherence distributions (resubstitution; a scan of
250-400 / 400-600 on DS1 moved AF +P by < 1 point).  Without vectors
(``coherence`` -1, and always in the plain peer) the decision is the RR one
alone.

Dating, from the intervals themselves, not the decision time: the onset is
the earliest step reached walking back from the newest interval without
crossing ``_ONSET_GAP`` = 6 non-steps in a row; the offset, when the short
window ends AF, the newest interval at which it still counted at least
``_ENTER_IRREGULAR`` steps; on the old exit, the last interval irregular by
1/8 of the window's mean before ``_GAP`` regular ones.

Known limits: a sinus rhythm whose PACs (or aberrant PACs) the classifier
calls N, in runs that break the alternation, looks irregular, but its on-time
beats keep their P waves (the atrial gate); multifocal atrial tachycardia
(P waves of changing shape) looks like AF to both tests; so does flutter with
variable block; an irregular junctional rhythm has no P waves either (only
its regularity keeps a junctional rhythm from AF); a trace whose noise
swamps the P waves for a minute lowers the coherence too.

Scaling and overflow: RR intervals are sample counts (< 2**11 at 360 Hz
within the 3 s accepted); the sum of squares of 63 differences stays below
2**27; nRMSSD is ``isqrt(sumsq * m**2 * 10**6 / (m - 1)) / sum`` in per mille,
whose product exceeds a MicroPython small int (a long int, once per beat,
never per sample).  The entropy uses a table of integer ``-c log2(c / m)``
values (1/1024 bit) made at init from an integer log2; no floats.
"""

from array import array

from firmware.hw.compat import const
from firmware.params import check_sample_rate_hz
from firmware.vitals.hrv import isqrt

_WINDOW = const(64)  # RR intervals per window
_BINS = const(16)  # histogram bins of the entropy (Dash)
_NRMSSD_PERMILLE = const(100)  # Dash: nRMSSD > 0.1
_SHE_PERMILLE = const(700)  # Dash: normalised Shannon entropy > 0.7
_EXIT_WINDOWS = const(4)  # consecutive failing windows that end AF
_GAP = const(12)  # regular intervals in a row that bound an AF episode
_ENTROPY_Q = const(1024)  # fixed-point scale of the entropy table
_RECENT = const(16)  # intervals of the short window (entry and exit thresholds)
_RECENT_MASK = const(0xFFFF)
_STEP_DIV = const(16)  # a step: |dRR| > RR / 16 (the interval before)
_ENTER_IRREGULAR = const(10)  # steps among the last _RECENT to start AF
_EXIT_IRREGULAR = const(6)  # at most this many of the last _RECENT end AF
_ONSET_GAP = const(6)  # steady intervals in a row that bound the onset walk back
_KEEP_WINDOW = const(0)  # 1: keep the long window after an offset, 0: start afresh
_COH_ENTER = const(350)  # P-wave coherence (per mille) below which AF may start
_COH_EXIT = const(500)  # above it P waves are back: AF ends


def _log2_q10(x):
    """log2(x) in 1/1024 for an int x >= 1 (integer part from the bit length,
    ten fraction bits by repeated squaring of the Q16 mantissa)."""
    e = 0
    while (x >> e) > 1:
        e += 1
    # mantissa in [1, 2) as Q16
    y = (x << 16) >> e if e <= 16 else x >> (e - 16)
    frac = 0
    for _ in range(10):
        y = (y * y) >> 16
        frac <<= 1
        if y >= 1 << 17:
            y >>= 1
            frac |= 1
    return (e << 10) | frac


class AfDetector:
    """Streaming AF detector over RR intervals (module docstring).

    Call :meth:`interval` with each interval (samples) and the sample of the
    beat that ends it; it returns 1 when AF has just started (onset in
    :attr:`onset`), -1 when it has just ended (offset in :attr:`offset`), else 0.
    :meth:`reset_chain` after a gap in the signal keeps the window but does
    not compare across the gap.  ``trim`` (Dash's percentile trim, on by default) drops 1/16 of the
    window at each end before the statistics.
    """

    def __init__(self, fs_hz, trim=True):
        fs_hz = check_sample_rate_hz(fs_hz)
        self.fs_hz = fs_hz
        self.trim = trim
        n = _WINDOW
        self._rr = array("i", [0] * n)
        self._end = array("i", [0] * n)  # sample of the beat ending the interval
        self._sorted = array("i", [0] * n)
        self._hist = array("i", [0] * _BINS)
        self._rr_min = (fs_hz * 250) // 1000
        self._rr_max = fs_hz * 3
        m = n - 2 * (n // 16) if trim else n
        self._m = m  # intervals the statistics use
        # -c log2(c / m) in 1/_ENTROPY_Q bits, c = 0..m (integers only, so
        # both platforms make the same table).
        tab = array("i", [0] * (m + 1))
        log_m = _log2_q10(m)
        for c in range(1, m + 1):
            tab[c] = c * (log_m - _log2_q10(c))
        self._ent = tab
        # Entropy threshold: sum tab > 0.7 * m * log2(16) * Q.
        self._ent_min = (_SHE_PERMILLE * m * 4 * _ENTROPY_Q) // 1000
        # Turning points among m intervals: mean (2m - 4) / 3, sd sqrt((16m - 29) / 90);
        # the band mean +- 1.96 sd, in thousandths.
        mu = (2 * m - 4) * 1000 // 3
        half = isqrt(3841600 * (16 * m - 29) // 90)
        self._tp_lo = (mu - half + 999) // 1000
        self._tp_hi = (mu + half) // 1000
        self.reset()

    def reset(self):
        self._pos = 0  # next slot
        self._count = 0
        self._chain = False
        self.active = False
        self._fails = 0
        self._dense_end = -1
        self.onset = -1
        self.offset = -1
        #: Statistics of the last full window (evidence): nRMSSD and entropy in
        #: per mille, turning points, intervals.
        self.nrmssd_permille = 0
        self.entropy_permille = 0
        self.turning_points = 0
        self.windows = 0
        self._sum = 0  # sum of the window's intervals
        self._last_irr = -1  # end sample of the newest irregular interval
        self._offset_cand = -1  # the last irregular one before a gap of _GAP
        self._regular_run = 0
        self._irr_bits = 0  # irregular flags of the last _RECENT intervals (bit 0 newest)
        self._irr_n = 0  # how many of them are set
        self._flagged = 0  # intervals flagged so far (saturates at _RECENT)
        self._irr2_bits = 0  # the same for lag-2 steps (|RR - RR two before|)
        self._irr2_n = 0
        self._flagged2 = 0
        self._linked = False  # the previous interval was chained to its predecessor
        #: P-wave coherence last given (per mille, -1: none; evidence).
        self.coherence = -1
        self._atrial_end = -1  # end of the newest interval with incoherent P regions
        self._atrial_from = -1  # first beat of the current incoherent stretch
        self._p_present = True  # the coherence has not been low since it was last high
        self._rr_onset = -1  # onset dated when the intervals first said AF (-1: not yet)

    def reset_chain(self):
        """A gap in the beat stream: the next interval is not compared with the last."""
        self._chain = False

    def interval(self, rr, end, coherence=-1, atrial_start=-1, atrial=None):
        """Add one interval of ``rr`` samples ending at sample ``end``; see class
        doc.  ``coherence``: the P-wave coherence of the beats up to ``end`` in
        per mille (:mod:`firmware.rhythm.atrial`), -1 for none (RR only);
        ``atrial_start`` the first beat it covers, ``atrial`` the
        :class:`firmware.rhythm.atrial.AtrialActivity` (dates the offset)."""
        if coherence >= 0:
            if coherence < _COH_ENTER:
                if self._p_present:
                    # The P regions just became incoherent: AF, if it is
                    # one, began within the beats the statistic covers.
                    self._atrial_from = atrial_start
                    self._p_present = False
                self._atrial_end = end
            elif coherence > _COH_EXIT:
                self._p_present = True
                self._rr_onset = -1
            self.coherence = coherence
        if rr < self._rr_min or rr > self._rr_max:
            self._chain = False
            return 0
        i = self._pos
        if self._count == _WINDOW:
            self._sum -= self._rr[i]
        # Irregular: differs from the previous interval by > 1/8 of the mean.
        if self._chain and self._count:
            d = rr - self._rr[(i - 1) % _WINDOW]
            if d < 0:
                d = -d
            irr = 1 if 8 * d * self._count > self._sum else 0
            if irr:
                self._last_irr = end
                self._regular_run = 0
            else:
                self._regular_run += 1
                if self._regular_run == _GAP:
                    self._offset_cand = self._last_irr
            step = 1 if _STEP_DIV * d > self._rr[(i - 1) % _WINDOW] else 0
            out = (self._irr_bits >> (_RECENT - 1)) & 1
            self._irr_bits = ((self._irr_bits << 1) | step) & _RECENT_MASK
            self._irr_n += step - out
            if self._flagged < _RECENT:
                self._flagged += 1
            # Lag 2 (the alternation test): a regular-alternating rhythm
            # (bigeminy the classes missed, flutter with 2:1/4:1 conduction)
            # steps at every interval but not against the one before last.
            if self._linked and self._count > 1:
                p2 = self._rr[(i - 2) % _WINDOW]
                d2 = rr - p2
                if d2 < 0:
                    d2 = -d2
                step = 1 if _STEP_DIV * d2 > p2 else 0
                out = (self._irr2_bits >> (_RECENT - 1)) & 1
                self._irr2_bits = ((self._irr2_bits << 1) | step) & _RECENT_MASK
                self._irr2_n += step - out
                if self._flagged2 < _RECENT:
                    self._flagged2 += 1
            self._linked = True
        else:
            self._linked = False
        self._chain = True
        self._sum += rr
        self._rr[i] = rr
        self._end[i] = end
        self._pos = (i + 1) % _WINDOW
        if self._count < _WINDOW:
            self._count += 1
        if self._count < _WINDOW:
            return 0
        self.windows += 1
        ok = self._judge()
        recent = self._flagged == _RECENT and self._flagged2 == _RECENT
        steps = self._irr_n if self._irr_n < self._irr2_n else self._irr2_n
        if steps >= _ENTER_IRREGULAR:
            self._dense_end = end  # the newest interval of a still irregular stretch
        if not self.active:
            rr_af = ok and recent and steps >= _ENTER_IRREGULAR
            if rr_af and self._rr_onset < 0:
                # The intervals say AF from here; the atrial evidence may
                # say so only later: the onset is dated now.
                self._rr_onset = self._date_onset()
            elif recent and steps <= _EXIT_IRREGULAR:
                self._rr_onset = -1
            if rr_af and coherence < _COH_ENTER:
                self.active = True
                self._fails = 0
                onset = self._rr_onset
                self._rr_onset = -1
                if onset < self._atrial_from:
                    onset = self._atrial_from
                # Never before the previous episode's end.
                self.onset = onset if onset > self.offset else self.offset + 1
                return 1
            return 0
        if coherence > _COH_EXIT:
            # P waves are back (the same shape before every QRS): not AF,
            # whatever the intervals say; it ended at the last incoherent beat.
            self.active = False
            last = atrial.last_incoherent() if atrial is not None else -1
            if last < 0 or last > self._atrial_end:
                last = self._atrial_end
            self.offset = last if last > self.onset else end
            self._fails = 0
            self._count = 0
            self._sum = 0
            return -1
        if recent and steps <= _EXIT_IRREGULAR:
            # Regularity is back in the short window: AF ended at its last
            # irregular interval, whatever the long window still says.
            self.active = False
            self.offset = self._dense_end if self._dense_end > self.onset else self._last_irr
            self._fails = 0
            if not _KEEP_WINDOW:
                self._count = 0
                self._sum = 0
            return -1
        if ok:
            self._fails = 0
            return 0
        self._fails += 1
        if self._fails >= _EXIT_WINDOWS and self._regular_run >= _GAP:
            self.active = False
            self.offset = self._date_offset()
            # A new episode needs a window of intervals after this one: the
            # old window is mostly the AF that just ended.
            self._count = 0
            self._sum = 0
            return -1
        return 0

    def end(self):
        """End of the stream: the last irregular interval if AF is on, else -1."""
        if not self.active:
            return -1
        self.active = False
        self.offset = self._date_offset()
        return self.offset

    # ----------------------------------------------------------- internals
    def _judge(self):
        n = _WINDOW
        src = self._rr
        start = self._pos  # oldest
        srt = self._sorted
        for k in range(n):
            srt[k] = src[(start + k) % n]
        if self.trim:
            lo, hi = self._trim_bounds(srt)
        else:
            lo, hi = -1, 1 << 30
        # Successive differences, mean, turning points over the kept intervals.
        m = 0
        total = 0
        sumsq = 0
        turns = 0
        prev = -1
        prev_d = 0
        vmin = 1 << 30
        vmax = 0
        for k in range(n):
            v = src[(start + k) % n]
            if self.trim and (v < lo or v > hi):
                continue
            m += 1
            total += v
            if v < vmin:
                vmin = v
            if v > vmax:
                vmax = v
            if prev >= 0:
                d = v - prev
                sumsq += d * d
                if (d > 0 and prev_d < 0) or (d < 0 and prev_d > 0):
                    turns += 1
                if d:
                    prev_d = d
            prev = v
        if m < 3 or total <= 0:
            return False
        # nRMSSD = sqrt(sumsq / (m - 1)) / (total / m), in per mille.
        self.nrmssd_permille = (isqrt((sumsq * m * m * 1000000) // (m - 1))) // total
        # Entropy of the histogram of the kept intervals (16 bins over [min, max]).
        hist = self._hist
        for b in range(_BINS):
            hist[b] = 0
        span = vmax - vmin + 1
        for k in range(n):
            v = src[(start + k) % n]
            if self.trim and (v < lo or v > hi):
                continue
            hist[((v - vmin) * _BINS) // span] += 1
        ent = 0
        tab = self._ent
        top = len(tab) - 1
        for b in range(_BINS):
            c = hist[b]
            ent += tab[c if c <= top else top]
        mm = m if m < len(tab) else len(tab) - 1
        self.entropy_permille = (ent * 1000) // (mm * 4 * _ENTROPY_Q) if mm else 0
        self.turning_points = turns
        # Turning points scaled to the band's interval count.
        tp_ok = self._tp_lo <= (turns * self._m) // m <= self._tp_hi if m else False
        return (self.nrmssd_permille > _NRMSSD_PERMILLE
                and ent > self._ent_min and tp_ok)

    def _trim_bounds(self, srt):
        """(lo, hi) values of the kept intervals after sorting ``srt`` in place."""
        n = _WINDOW
        # Insertion sort of 64 ints: per beat, peer mode only.
        for i in range(1, n):
            v = srt[i]
            j = i - 1
            while j >= 0 and srt[j] > v:
                srt[j + 1] = srt[j]
                j -= 1
            srt[j + 1] = v
        t = n // 16
        return srt[t], srt[n - 1 - t]

    def _flags(self):
        """Step flag (|dRR| > RR / _STEP_DIV, the interval before) of every
        interval of the window, oldest first (per onset, not per beat)."""
        n = _WINDOW
        out = bytearray(n)
        rr = self._rr
        pos = self._pos
        for k in range(1, n):
            p = rr[(pos + k - 1) % n]
            d = rr[(pos + k) % n] - p
            if d < 0:
                d = -d
            out[k] = 1 if _STEP_DIV * d > p else 0
        return out

    def _date_onset(self):
        n = _WINDOW
        flags = self._flags()
        first = -1
        run = 0
        for k in range(n - 1, 0, -1):
            if flags[k]:
                first = k
                run = 0
            else:
                run += 1
                if run >= _ONSET_GAP:
                    break
        if first < 0:
            first = 1
        # The interval starts at the beat before its end.
        k = first
        return self._end[(self._pos + k) % n] - self._rr[(self._pos + k) % n]

    def _date_offset(self):
        if self._regular_run >= _GAP or self._offset_cand < 0:
            return self._offset_cand if self._offset_cand >= 0 else self._last_irr
        return self._last_irr
