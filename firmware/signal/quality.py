"""ECG signal quality the device can publish: good, noisy, lead off, saturated.

Streaming and integer-only, on the raw ADC counts (before any filter: the
rails and the true flat line are only visible there).  Nothing is allocated
per sample; all state is made in ``__init__``.

The signal is cut into hops of ``HOP_MS`` (500 ms); after every hop the last
``WINDOW_HOPS`` hops (a sliding 2 s window) are assessed, in this order
(until the first full window, 2 s after the start or a :meth:`reset`, the
flag is ``good`` and ``ready`` is False):

1. ``saturated``: at least ``SATURATED_PERMILLE`` (10 %) of the window's
   samples sit on a rail (``<= adc_min`` or ``>= adc_max``): a clipped or
   railed front end (many front ends also rail when a lead comes off).
2. ``lead_off``: the window's peak-to-peak amplitude is below ``FLAT_PP_UV``
   (50 uV; 10 counts at 5 uV/count).  A QRS complex is at least ~0.3 mV even
   in a low-voltage ECG and a 2 s window holds a beat at any rate above
   30 bpm, so a connected electrode never reads this flat.  A flat line also
   looks like asystole: the host must treat ``lead_off`` as "no ECG", never
   as "no alarm".
3. ``noisy``: too many turning points of the signal per second.  A turning
   point is a reversal of direction by more than a hysteresis ``h``: one
   quarter of the previous full window's peak-to-peak amplitude (in clean
   ECG its QRS size), at least ``NOISE_HYST_MIN_UV`` (25 uV) so that ADC
   quantization never counts.  Clean ECG makes 3-4 such reversals per beat
   (R, S, T): at most 13/s at 200 bpm.  The window is ``noisy`` from
   ``NOISY_TURNS_PER_S`` (18/s) on.  Measured (2 s windows, simulator ECG of
   1.6 mV): Gaussian white noise of 0.3 mV rms (SNR 4.5 dB, QRS p-p^2/8 over
   noise power) is flagged in every window at 40-200 bpm, 0.2 mV (8 dB) in
   97-100 %, 0.1 mV (14 dB) in none at 40-120 bpm; real muscle
   artefact (MIT-BIH Noise Stress Test ``ma``, bursty and partly slow) added
   to the MIT-BIH DS1 records is flagged in about 35 % of the windows whose
   own SNR is 0 dB or worse and 12 % at 6 dB, while 0.09 % of the clean DS1
   windows are flagged.  Slow artefact (electrode motion, baseline wander)
   is not detected here: to an amplitude/frequency test it looks like ECG.
   Above ~180 bpm lighter noise is flagged too (0.1 mV rms at 200 bpm).  The
   first full window only sets ``h``: noise is judged once a whole window
   has been counted with it, 4 s after the start (or a :meth:`reset`).
4. otherwise ``good``.

Thresholds were set on simulator ECG (40-200 bpm at 250/360/500 Hz) and on
the MIT-BIH Arrhythmia Database training records (DS1) with and without the
Noise Stress Test ``ma`` noise added; ``tests/test_quality.py`` checks them.

Scaling and overflow: inputs are ADC counts with ``adc_max - adc_min <
2**24``; per-window sums are sample counts (< 2**13 at 2000 Hz); the
largest product is ``rail_count * 1000`` (< 2**23).  Everything stays a
MicroPython small int (below 2**30).
"""

from firmware.hw.compat import const

SIGNAL_GOOD = "good"
SIGNAL_NOISY = "noisy"
SIGNAL_LEAD_OFF = "lead_off"
SIGNAL_SATURATED = "saturated"
#: Flag strings indexed by flag code (``SignalQuality.flag_code``).
FLAGS = (SIGNAL_GOOD, SIGNAL_NOISY, SIGNAL_LEAD_OFF, SIGNAL_SATURATED)
CODE_GOOD = const(0)
CODE_NOISY = const(1)
CODE_LEAD_OFF = const(2)
CODE_SATURATED = const(3)

HOP_MS = const(500)  # assessment period
WINDOW_HOPS = const(4)  # window = 4 hops = 2000 ms
WINDOW_MS = const(2000)
FLAT_PP_UV = const(50)  # peak-to-peak below this: lead off (flat line)
SATURATED_PERMILLE = const(100)  # samples on a rail, per mille of the window
NOISE_HYST_MIN_UV = const(25)  # turning-point hysteresis floor
NOISE_HYST_SHIFT = const(2)  # hysteresis = previous window peak-to-peak >> 2
NOISY_TURNS_PER_S = const(18)  # turning points per second from which a window is noisy

_FS_MIN_HZ = const(50)
_FS_MAX_HZ = const(2000)
_ADC_SPAN_MAX = const(1 << 24)


class SignalQuality:
    """Sliding-window quality flag of one ECG channel.

    ``fs_hz``: sample rate (int, required: no default).  ``adc_min`` /
    ``adc_max``: the ADC's rail codes.  ``counts_per_mv``: ADC gain (int or
    float, > 0), used once here to turn the uV thresholds into counts.

    Feed raw counts with :meth:`process`; read ``flag`` (one of ``FLAGS``),
    ``flag_code`` and the counters: ``counts[code]`` = hops assessed with each
    flag, ``windows`` = hops assessed in total, ``changes`` = flag changes.
    Diagnostics of the last assessment: ``pp_counts``, ``rail_permille``,
    ``turns_per_s``.
    """

    def __init__(self, fs_hz, adc_min, adc_max, counts_per_mv):
        if not isinstance(fs_hz, int) or isinstance(fs_hz, bool):
            raise ValueError("fs_hz must be an int, got %r" % (fs_hz,))
        if not _FS_MIN_HZ <= fs_hz <= _FS_MAX_HZ:
            raise ValueError("fs_hz must be in %d..%d, got %d" % (_FS_MIN_HZ, _FS_MAX_HZ, fs_hz))
        for name, v in (("adc_min", adc_min), ("adc_max", adc_max)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError("%s must be an int, got %r" % (name, v))
        if not 0 < adc_max - adc_min < _ADC_SPAN_MAX:
            raise ValueError(
                "need adc_min < adc_max, span < 2**24, got %d..%d" % (adc_min, adc_max)
            )
        if isinstance(counts_per_mv, bool) or not isinstance(counts_per_mv, (int, float)):
            raise ValueError("counts_per_mv must be a number, got %r" % (counts_per_mv,))
        if not 0 < counts_per_mv <= 1000000:
            raise ValueError("counts_per_mv must be in (0, 1e6], got %r" % (counts_per_mv,))
        self.fs_hz = fs_hz
        self.adc_min = adc_min
        self.adc_max = adc_max
        self.counts_per_mv = counts_per_mv
        # Unit conversions, once (uV -> counts, ms -> samples).
        self.flat_pp_counts = max(1, int(FLAT_PP_UV * counts_per_mv / 1000 + 0.5))
        self.hyst_min_counts = max(1, int(NOISE_HYST_MIN_UV * counts_per_mv / 1000 + 0.5))
        self.hop_samples = (fs_hz * HOP_MS + 500) // 1000
        self.window_samples = self.hop_samples * WINDOW_HOPS
        self.noisy_turns = NOISY_TURNS_PER_S * WINDOW_MS // 1000
        # Per-hop statistics of the last WINDOW_HOPS hops (ring buffers).
        self._hmin = [0] * WINDOW_HOPS
        self._hmax = [0] * WINDOW_HOPS
        self._hrail = [0] * WINDOW_HOPS
        self._hturn = [0] * WINDOW_HOPS
        self.counts = [0] * len(FLAGS)
        self.clear_counters()
        self.reset()

    def reset(self):
        """Forget the signal (e.g. after a lead was re-attached); keep the counters."""
        for i in range(WINDOW_HOPS):
            self._hmin[i] = 0
            self._hmax[i] = 0
            self._hrail[i] = 0
            self._hturn[i] = 0
        self._pos = 0  # samples in the current hop
        self._slot = 0  # ring slot of the current hop
        self._filled = 0  # completed hops in the ring (0..WINDOW_HOPS)
        self._mn = 0
        self._mx = 0
        self._rail = 0
        self._turn = 0
        self._hyst = 0  # 0: no full window yet
        self._hyst_hops = 0  # hops counted with a window-derived hysteresis
        self._dir = 0  # turning-point tracker: +1 rising, -1 falling, 0 unknown
        self._ext = 0  # extreme value since the last turn
        self.flag_code = CODE_GOOD
        self.flag = SIGNAL_GOOD
        self.ready = False  # True once a full window has been assessed
        self.pp_counts = 0
        self.rail_permille = 0
        self.turns_per_s = 0

    def clear_counters(self):
        for i in range(len(FLAGS)):
            self.counts[i] = 0
        self.windows = 0
        self.changes = 0

    def process(self, buf, count=None):
        """Consume ``buf[0:count]`` (ints, raw counts; all of it by default).

        Returns the current flag string (updated at every hop boundary).
        """
        if count is None:
            count = len(buf)
        lo = self.adc_min
        hi = self.adc_max
        hop = self.hop_samples
        pos = self._pos
        mn = self._mn
        mx = self._mx
        rail = self._rail
        turn = self._turn
        d = self._dir
        ext = self._ext
        h = self._hyst
        if h == 0:
            h = self.hyst_min_counts
        for i in range(count):
            x = buf[i]
            if pos == 0:
                mn = x
                mx = x
                if d == 0:
                    ext = x
            elif x < mn:
                mn = x
            elif x > mx:
                mx = x
            if x <= lo or x >= hi:
                rail += 1
            if d > 0:
                if x > ext:
                    ext = x
                elif ext - x > h:
                    turn += 1
                    d = -1
                    ext = x
            elif d < 0:
                if x < ext:
                    ext = x
                elif x - ext > h:
                    turn += 1
                    d = 1
                    ext = x
            elif x - ext > h:
                d = 1
                ext = x
            elif ext - x > h:
                d = -1
                ext = x
            pos += 1
            if pos == hop:
                self._mn = mn
                self._mx = mx
                self._rail = rail
                self._turn = turn
                self._end_hop()
                pos = 0
                rail = 0
                turn = 0
                h = self._hyst
                if h == 0:
                    h = self.hyst_min_counts
        self._pos = pos
        self._mn = mn
        self._mx = mx
        self._rail = rail
        self._turn = turn
        self._dir = d
        self._ext = ext
        return self.flag

    def _end_hop(self):
        s = self._slot
        self._hmin[s] = self._mn
        self._hmax[s] = self._mx
        self._hrail[s] = self._rail
        self._hturn[s] = self._turn
        self._slot = (s + 1) % WINDOW_HOPS
        if self._filled < WINDOW_HOPS:
            self._filled += 1
        n = self._filled
        if n < WINDOW_HOPS:
            return  # no full window yet: the flag stays "good", ready False
        mn = self._hmin[s]
        mx = self._hmax[s]
        rail = 0
        turn = 0
        for j in range(WINDOW_HOPS):
            if self._hmin[j] < mn:
                mn = self._hmin[j]
            if self._hmax[j] > mx:
                mx = self._hmax[j]
            rail += self._hrail[j]
            turn += self._hturn[j]
        pp = mx - mn
        self.pp_counts = pp
        self.rail_permille = rail * 1000 // self.window_samples
        self.turns_per_s = turn * 1000 // WINDOW_MS
        # Noise is judged once every hop of the window was counted with a
        # hysteresis derived from a full window.
        if self._hyst != 0 and self._hyst_hops < WINDOW_HOPS:
            self._hyst_hops += 1
        judged = self._hyst_hops >= WINDOW_HOPS
        if self.rail_permille >= SATURATED_PERMILLE:
            code = CODE_SATURATED
        elif pp < self.flat_pp_counts:
            code = CODE_LEAD_OFF
        elif judged and turn >= self.noisy_turns:
            code = CODE_NOISY
        else:
            code = CODE_GOOD
        self.ready = True
        # Hysteresis for the next hop: a quarter of this window's amplitude.
        h = pp >> NOISE_HYST_SHIFT
        if h < self.hyst_min_counts:
            h = self.hyst_min_counts
        self._hyst = h
        if code != self.flag_code:
            self.changes += 1
        self.flag_code = code
        self.flag = FLAGS[code]
        self.counts[code] += 1
        self.windows += 1
