"""Rhythm events from the beat stream: the device's rhythm monitor.

:class:`RhythmMonitor` takes every classified beat (:meth:`RhythmMonitor.beat`:
R sample and AAMI class code, ``firmware.ml.infer.AAMI_LABELS`` order, -1 when
no model ran) and, once per block, the signal quality and the newest R peak
the detector has seen (:meth:`RhythmMonitor.tick`).  It queues
:class:`RhythmEvent` objects in :attr:`RhythmMonitor.events` (the caller takes
them with :meth:`RhythmMonitor.take_events`):

==============  ==============================================================
kind            rule (thresholds: ``firmware.params`` ``RHYTHM_*``)
==============  ==============================================================
``AFIB``        :mod:`firmware.rhythm.af` (Dash et al. 2009 on NN intervals,
                and no repeating P waves: :mod:`firmware.rhythm.atrial`
                on the classifier input of on-time N beats)
``VT``          >= 3 consecutive V beats faster than 100 bpm; ``sustained`` 1
                in the evidence from 30 s on
``PAUSE``       an RR interval > 2.0 s (up to the asystole limit)
``ASYSTOLE``    no beat for 4 s: raised by :meth:`tick` before the next beat
``BRADY``       mean rate of the last 8 RR intervals < 60 bpm, held 10 s
``TACHY``       the same > 100 bpm, held 10 s (ends after 10 s back in range)
``BIGEMINY``    >= 4 cycles of V every 2nd beat
``TRIGEMINY``   >= 4 cycles of V every 3rd beat
``BURDEN``      once per hour of beats (and at :meth:`flush`): beats, PVCs,
                PACs, per mille (phase ``report``)
``SIGNAL``      the signal was not good (evidence ``reason``: noisy,
                lead_off, saturated; one episode per stretch of one flag);
                no rhythm is judged across it (pauses and asystole are
                still timed across ``noisy``)
==============  ==============================================================

Each episode gives an ``onset`` event when it is recognised (its ``start``
is the episode's first beat, dated back, ``end`` -1) and an ``end`` event
when it is over (``start`` and ``end``); a PAUSE has only the ``end``
event.  ``start``/``end`` are sample indices counted like the R peaks.

Signal quality: beats that arrive while the signal is not good, and every RR
interval that spans a stretch of bad signal, are not used for the rhythm
statistics; a flat line is ``lead_off``, never asystole
(``firmware.signal.quality``).  Asystole in a noisy trace is flagged
``noisy`` by the quality check (no QRS sets its hysteresis), so pauses and
asystole are timed across ``noisy`` stretches, never across ``lead_off`` or
``saturated`` ones.  Rhythm-aware
classes: while AF is on, an S beat is reported as N (:meth:`beat` returns
the class it counts the beat as).  For the AF window an S beat also counts
as N when at least a third of the last 16 beats were called S: then S is the
rhythm itself (an AF whose beats the classifier calls S, or a rhythm of
mostly atrial ectopics), and leaving those beats out would starve the window.

Everything is integer sample arithmetic; per beat the work is a few dozen
operations (plus one 64-interval AF window evaluation).  Events allocate
(once per episode, not per beat or sample).
"""

from array import array

from firmware.hw.compat import const
from firmware.params import (
    RHYTHM_ASYSTOLE_MS,
    RHYTHM_BRADY_BPM,
    RHYTHM_BURDEN_PERIOD_MS,
    RHYTHM_GEMINY_MIN_CYCLES,
    RHYTHM_PAUSE_MS,
    RHYTHM_RATE_HOLD_MS,
    RHYTHM_TACHY_BPM,
    RHYTHM_VT_MIN_BEATS,
    RHYTHM_VT_MIN_BPM,
    RHYTHM_VT_SUSTAINED_MS,
    check_sample_rate_hz,
)
from firmware.rhythm.af import AfDetector
from firmware.rhythm.atrial import AtrialActivity
from firmware.signal.quality import CODE_GOOD, CODE_NOISY, FLAGS, WINDOW_MS

AFIB = "AFIB"
VT = "VT"
PAUSE = "PAUSE"
ASYSTOLE = "ASYSTOLE"
BRADY = "BRADY"
TACHY = "TACHY"
BIGEMINY = "BIGEMINY"
TRIGEMINY = "TRIGEMINY"
BURDEN = "BURDEN"
SIGNAL = "SIGNAL"
#: Every event kind, in a fixed order (the event schema's enum).
KINDS = (AFIB, VT, PAUSE, ASYSTOLE, BRADY, TACHY, BIGEMINY, TRIGEMINY, BURDEN, SIGNAL)

ONSET = "onset"
END = "end"
REPORT = "report"
PHASES = (ONSET, END, REPORT)

_N = const(0)  # AAMI class codes (firmware.ml.infer.AAMI_LABELS order)
_S = const(1)
_V = const(2)
_RATE_RR = const(8)  # RR intervals in the brady/tachy rate
_DETECT_LAG_MS = const(1000)
_S_RECENT = const(16)  # beats over which "S is the majority" is judged
_S_MASK = const(0xFFFF)  # allowance for the detector's decision delay


class RhythmEvent:
    """One event: ``kind`` (:data:`KINDS`), ``phase`` (:data:`PHASES`),
    ``start`` and ``end`` samples (-1: not yet), ``evidence`` (dict of ints,
    and ``reason`` for SIGNAL)."""

    def __init__(self, kind, phase, start, end, evidence):
        self.kind = kind
        self.phase = phase
        self.start = start
        self.end = end
        self.evidence = evidence

    def as_tuple(self):
        ev = self.evidence
        return (self.kind, self.phase, self.start, self.end,
                tuple((k, ev[k]) for k in sorted(ev)))


class _Held:
    """A rate condition that must hold ``hold`` samples to start an episode and
    fail as long to end it."""

    def __init__(self, hold):
        self.hold = hold
        self.reset()

    def reset(self):
        self.active = False
        self.cand = -1  # first beat of the current run of the opposite state
        self.start = -1

    def step(self, cond, r):
        """Feed one beat; 1: the episode starts (at ``start``), -1: it ends
        (at ``cand``), 0: nothing."""
        if cond != self.active:
            if self.cand < 0:
                self.cand = r
            if r - self.cand >= self.hold:
                self.active = cond
                if cond:
                    self.start = self.cand
                    self.cand = -1
                    return 1
                return -1
        else:
            self.cand = -1
        return 0


class _Geminy:
    """Every ``k``-th beat ventricular, at least ``RHYTHM_GEMINY_MIN_CYCLES`` times."""

    def __init__(self, k, kind):
        self.k = k
        self.kind = kind
        self.reset()

    def reset(self):
        self.gap = -1  # non-V beats since the last V (-1: no V yet)
        self.cycles = 0
        self.start = -1
        self.last_v = -1
        self.open = False

    def step(self, is_v, r, prev_r, mon):
        if is_v:
            if self.gap == self.k - 1 and self.cycles:
                self.cycles += 1
            else:
                self.close(mon)
                self.cycles = 1
                self.start = prev_r if prev_r >= 0 else r
            self.last_v = r
            self.gap = 0
            if not self.open and self.cycles >= RHYTHM_GEMINY_MIN_CYCLES:
                self.open = True
                mon._emit(self.kind, ONSET, self.start, -1, {"cycles": self.cycles})
        elif self.gap >= 0:
            self.gap += 1
            if self.gap > self.k - 1:
                self.close(mon)
                self.cycles = 0

    def close(self, mon):
        if self.open:
            mon._emit(self.kind, END, self.start, self.last_v, {"cycles": self.cycles})
        self.open = False


class RhythmMonitor:
    """The device's rhythm-event code (module docstring).  ``use_classes``
    False turns it into the plain RR-irregularity peer (every beat counts as
    N: Dash et al. as published)."""

    def __init__(self, fs_hz=None, use_classes=True):
        if fs_hz is None:
            raise ValueError("fs_hz is required (no default sample rate)")
        fs = check_sample_rate_hz(fs_hz)
        self.fs_hz = fs
        self.use_classes = use_classes
        # Unit conversions, once.
        self._pause = (RHYTHM_PAUSE_MS * fs) // 1000
        self._asystole = (RHYTHM_ASYSTOLE_MS * fs) // 1000
        # The alarm waits for the detector's decision delay too: a beat it has
        # not decided on yet must not raise it.
        self._asystole_alarm = ((RHYTHM_ASYSTOLE_MS + _DETECT_LAG_MS) * fs) // 1000
        self._vt_sustained = (RHYTHM_VT_SUSTAINED_MS * fs) // 1000
        self._burden_period = (RHYTHM_BURDEN_PERIOD_MS // 1000) * fs
        self._quality_lag = (WINDOW_MS * fs) // 1000
        hold = (RHYTHM_RATE_HOLD_MS * fs) // 1000
        # bpm < B  <=>  60 * fs * n < B * sum(RR)
        self._rate_k = 60 * fs * _RATE_RR
        self.af = AfDetector(fs)
        self.atrial = AtrialActivity()
        self._rr = array("i", [0] * _RATE_RR)
        self._brady = _Held(hold)
        self._tachy = _Held(hold)
        self._bigeminy = _Geminy(2, BIGEMINY)
        self._trigeminy = _Geminy(3, TRIGEMINY)
        self.events = []
        self.reset()

    def reset(self):
        self.events = []
        self.af.reset()
        self.atrial.reset()
        self._brady.reset()
        self._tachy.reset()
        self._bigeminy.reset()
        self._trigeminy.reset()
        self._last_r = -1  # last beat used (-1: chain broken)
        self._gap_r = -1  # last beat for pause/asystole timing (-1: none)
        self._last_cls = -1
        self._s_bits = 0
        self._s_count = 0
        self._gap_bad = False  # bad signal since the last beat
        self._rr_n = 0
        self._rr_pos = 0
        self._rr_sum = 0
        self._vt_n = 0
        self._vt_start = -1
        self._vt_last = -1
        self._vt_open = False
        self._asys_open = False
        self._asys_start = -1
        self._bad = False
        self._bad_start = -1
        self._bad_code = CODE_GOOD
        self._burden_start = -1
        self._beats = 0
        self._pvc = 0
        self._pac = 0
        #: Beats seen, and beats not used because the signal was not good.
        self.beats = 0
        self.beats_unreliable = 0

    # ------------------------------------------------------------- input
    def beat(self, r, cls, vec=None):
        """One classified beat at sample ``r``; returns the class it counts as
        (S in AF is N; -1 stays -1).  ``vec``: the classifier's input vector
        of the beat (``firmware.signal.beats``), for the atrial activity of
        the AF decision (None: AF from the RR intervals only)."""
        self.beats += 1
        if self._bad and self._bad_code != CODE_NOISY:
            self.beats_unreliable += 1
            return cls
        # Gaps (pause, asystole) are timed across noise too: noise hides
        # beats from the classes, not from the clock, and an asystole in a
        # noisy trace must still sound.
        gap_r = self._gap_r
        if gap_r >= 0 and r > gap_r:
            self._gaps(gap_r, r, r - gap_r)
        if r > gap_r:
            self._gap_r = r
        if self._bad:
            self.beats_unreliable += 1
            return cls
        use = self.use_classes
        eff = cls
        if eff == _S and self.af.active:
            eff = _N
        # The last _S_RECENT beats called S, as a bit mask and a count.
        out_bit = (self._s_bits >> (_S_RECENT - 1)) & 1
        in_bit = 1 if cls == _S else 0
        self._s_bits = ((self._s_bits << 1) | in_bit) & _S_MASK
        self._s_count += in_bit - out_bit
        c = eff if use else _N
        if c < 0:
            c = _N
        elif c == _S and 3 * self._s_count >= _S_RECENT:
            c = _N  # S is the rhythm itself here, not an ectopic beat
        self._burden(r, eff)
        prev_r = self._last_r
        prev_c = self._last_cls
        coh = -1
        chain = prev_r >= 0 and not self._gap_bad
        if use and vec is not None:
            # The P region of a premature beat holds the T wave before it
            # (and an ectopic P): only beats on time show the atrial rhythm.
            if c == _N and chain and self._on_time(r - prev_r):
                self.atrial.beat(r, vec)
            coh = self.atrial.coherence
        if chain:
            rr = r - prev_r
            self._rate(r, rr)
            if rr > self._pause:
                self.af.reset_chain()  # a pause is not an AF interval
            elif (c == _N and prev_c == _N) or not use:
                self._af(self.af.interval(rr, r, coh, self.atrial.start, self.atrial))
        else:
            self.af.reset_chain()
        if use:
            self._vt(c == _V, r, chain)
            self._bigeminy.step(c == _V, r, prev_r if chain else -1, self)
            self._trigeminy.step(c == _V, r, prev_r if chain else -1, self)
        self._last_r = r
        self._last_cls = c
        self._gap_bad = False
        return eff

    def tick(self, now, quality_code, last_peak=-1):
        """Once per block: ``now`` the samples consumed so far, the signal
        quality code (``firmware.signal.quality``), the newest R peak the
        detector decided on (-1: none), for the asystole alarm.

        ``lead_off`` and ``saturated`` mean no ECG: nothing is judged, no
        gap is timed across them.  ``noisy`` stops the rhythm statistics
        (AF, VT, rate, geminy) but not the pause and asystole timing."""
        if quality_code != CODE_GOOD:
            switched = self._bad and quality_code != self._bad_code
            if switched:
                self._signal_end(now)
            if not self._bad:
                self._bad = True
                self._bad_code = quality_code
                # The quality window looks back: the stretch began up to a
                # window ago (a switch between two bad flags: now).
                start = now if switched else now - self._quality_lag
                self._bad_start = start if start > 0 else 0
                self._break(self._bad_start, quality_code != CODE_NOISY)
            if quality_code != CODE_NOISY:
                return
        elif self._bad:
            self._signal_end(now)
            return
        last = last_peak if last_peak > self._gap_r else self._gap_r
        if last >= 0 and not self._asys_open and now - last > self._asystole_alarm:
            self._asys_open = True
            self._asys_start = last
            self._emit(ASYSTOLE, ONSET, last, -1, {"gap_ms": self._ms(now - last)})

    def _signal_end(self, now):
        self._bad = False
        self._emit(SIGNAL, END, self._bad_start, now, {"reason": FLAGS[self._bad_code]})
        self._gap_bad = True
        self._bad_start = now

    def flush(self, now):
        """End of the stream: close every open episode, report the burden."""
        if self._bad:
            self._signal_end(now)
        if self._asys_open:  # still no beat when the signal ends
            self._asys_open = False
            self._emit(ASYSTOLE, END, self._asys_start, now,
                       {"gap_ms": self._ms(now - self._asys_start), "open_at_end": 1})
        last = self._last_r
        self._break(last if last >= 0 else now)
        off = self.af.end()
        if off >= 0:
            self._af_end(off)
        if self._brady.active:
            self._brady.active = False
            self._emit(BRADY, END, self._brady.start, last, {})
        if self._tachy.active:
            self._tachy.active = False
            self._emit(TACHY, END, self._tachy.start, last, {})
        if self._burden_start >= 0 and self._beats:
            self._burden_report(last)

    def take_events(self):
        """The queued events, oldest first (the queue is emptied)."""
        out = self.events
        self.events = []
        return out

    # --------------------------------------------------------- internals
    def _ms(self, samples):
        return (samples * 1000) // self.fs_hz

    def _emit(self, kind, phase, start, end, evidence):
        self.events.append(RhythmEvent(kind, phase, start, end, evidence))

    def _break(self, at, no_ecg=True):
        """The beat chain breaks at sample ``at`` (bad signal, end of stream);
        with ``no_ecg`` the gap timing stops too."""
        self._close_vt()
        self._vt_n = 0
        self._bigeminy.close(self)
        self._bigeminy.reset()
        self._trigeminy.close(self)
        self._trigeminy.reset()
        if no_ecg:
            if self._asys_open:
                self._asys_open = False
                self._emit(ASYSTOLE, END, self._asys_start, at,
                           {"gap_ms": self._ms(at - self._asys_start), "ended_by_signal": 1})
            self._gap_r = -1
        self._last_r = -1
        self._last_cls = -1
        self.af.reset_chain()

    def _gaps(self, prev_r, r, rr):
        # The alarm may be raised before the beat that opened the gap arrives
        # here (beats wait for their post-RR); that beat does not end it.
        if self._asys_open and r <= self._asys_start:
            return
        if self._asys_open or rr > self._asystole:
            start = self._asys_start if self._asys_open else prev_r
            self._asys_open = False
            self._emit(ASYSTOLE, END, start, r, {"gap_ms": self._ms(r - start)})
        elif rr > self._pause:
            self._emit(PAUSE, END, prev_r, r, {"rr_ms": self._ms(rr)})

    def _on_time(self, rr):
        """``rr`` is at least 7/8 of the mean of the rate's last intervals."""
        return self._rr_n == _RATE_RR and 8 * _RATE_RR * rr >= 7 * self._rr_sum

    def _rate(self, r, rr):
        if rr > self._pause:
            return  # a pause is not a rate
        i = self._rr_pos
        if self._rr_n == _RATE_RR:
            self._rr_sum -= self._rr[i]
        else:
            self._rr_n += 1
        self._rr[i] = rr
        self._rr_sum += rr
        self._rr_pos = (i + 1) % _RATE_RR
        if self._rr_n < _RATE_RR:
            return
        s = self._rr_sum
        k = self._rate_k
        bpm = k // s
        for held, kind, cond in ((self._brady, BRADY, k < RHYTHM_BRADY_BPM * s),
                                 (self._tachy, TACHY, k > RHYTHM_TACHY_BPM * s)):
            step = held.step(cond, r)
            if step > 0:
                self._emit(kind, ONSET, held.start, -1, {"rate_bpm": bpm})
            elif step < 0:
                self._emit(kind, END, held.start, held.cand, {"rate_bpm": bpm})
                held.cand = -1

    def _af(self, step):
        af = self.af
        if step > 0:
            self._emit(AFIB, ONSET, af.onset, -1, self._af_evidence())
        elif step < 0:
            self._af_end(af.offset)

    def _af_end(self, offset):
        af = self.af
        self._emit(AFIB, END, af.onset, offset if offset > af.onset else af.onset,
                   self._af_evidence())

    def _af_evidence(self):
        af = self.af
        return {"nrmssd_permille": af.nrmssd_permille,
                "entropy_permille": af.entropy_permille,
                "turning_points": af.turning_points,
                "p_coherence_permille": af.coherence}

    def _vt(self, is_v, r, chain):
        if is_v and chain and self._vt_n and self._vt_last >= 0:
            self._vt_n += 1
        elif is_v:
            self._close_vt()
            self._vt_n = 1
            self._vt_start = r
        else:
            self._close_vt()
            self._vt_n = 0
            return
        self._vt_last = r
        if not self._vt_open and self._vt_qualifies():
            self._vt_open = True
            self._emit(VT, ONSET, self._vt_start, -1, self._vt_evidence())

    def _vt_qualifies(self):
        n = self._vt_n
        span = self._vt_last - self._vt_start
        # rate = 60 fs (n - 1) / span > VT_MIN_BPM
        return n >= RHYTHM_VT_MIN_BEATS and 60 * self.fs_hz * (n - 1) > RHYTHM_VT_MIN_BPM * span

    def _vt_evidence(self):
        n = self._vt_n
        span = self._vt_last - self._vt_start
        bpm = (60 * self.fs_hz * (n - 1)) // span if span > 0 else 0
        return {"beats": n, "rate_bpm": bpm, "duration_ms": self._ms(span),
                "sustained": 1 if span >= self._vt_sustained else 0}

    def _close_vt(self):
        if self._vt_open or (self._vt_n and self._vt_qualifies()):
            if not self._vt_open:
                self._emit(VT, ONSET, self._vt_start, -1, self._vt_evidence())
            self._emit(VT, END, self._vt_start, self._vt_last, self._vt_evidence())
        self._vt_open = False

    def _burden(self, r, eff):
        if self._burden_start < 0:
            self._burden_start = r
        elif r - self._burden_start >= self._burden_period:
            self._burden_report(r)
            self._burden_start = r
        self._beats += 1
        if eff == _V:
            self._pvc += 1
        elif eff == _S:
            self._pac += 1

    def _burden_report(self, end):
        b = self._beats
        self._emit(BURDEN, REPORT, self._burden_start, end, {
            "beats": b, "pvc": self._pvc, "pac": self._pac,
            "pvc_permille": (1000 * self._pvc) // b, "pac_permille": (1000 * self._pac) // b,
            "period_ms": self._ms(end - self._burden_start)})
        self._beats = 0
        self._pvc = 0
        self._pac = 0
