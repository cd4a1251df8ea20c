"""Streaming integer QRS detector (Pan-Tompkins class) for the device.

``QrsDetector(fs_hz)``; ``process(samples)`` takes the next block of raw ECG
samples (ints, ADC counts) and returns the R-peak sample indices, counted from
the first sample ever given, that it decided on during this call; a final
``flush()`` returns the rest.  Concatenated, the returned lists are the same
whatever the block sizes (1 sample, 7, 360, a whole record).

The method (its stages, the thresholds and rules, the worst-case decision
latency) and the names of the detector's state are in :class:`QrsDetector`'s
docstring.

Input: ints within int16 (-32768..32767); ValueError otherwise (floats,
bools, strings, out-of-range values); numpy integers are converted.  A block
with a bad sample is rejected whole, before any of it is used.

References: J. Pan, W. J. Tompkins, "A real-time QRS detection algorithm",
IEEE TBME 32(3):230-236, 1985.  P. S. Hamilton, W. J. Tompkins, "Quantitative
investigation of QRS detection rules using the MIT/BIH arrhythmia database",
IEEE TBME 33(12):1157-1165, 1986, and Hamilton's open-source OSEA code.
"""

from firmware.hw.compat import const
from firmware.params import ECG_INPUT_SHIFT_BITS, ECG_UV_PER_COUNT, check_sample_rate_hz
from firmware.signal.filters import group_delay_samples, make_filter

_DC_TRACK_MS = const(360)  # running-mean time constant, rounded down to 2**k samples
_DERIV_MS = const(10)  # derivative span (Hamilton-Tompkins deriv1)
_MWI_MS = const(150)  # integration window (Pan-Tompkins)
_PEAK_TIMEOUT_MS = const(95)  # Peak(): emit 95 ms after the maximum (Hamilton-Tompkins)
_REFRACTORY_MS = const(200)  # pre-blanking / refractory (Pan-Tompkins, Hamilton-Tompkins)
_PWAVE_MS = const(300)  # look-ahead for a dominant QRS after a P wave (added)
_PWAVE_DOMINANCE = const(3)  # ... at least 3x the integrated height (added)
_TWAVE_MS = const(360)  # T-wave window (Pan-Tompkins)
_GAP_SHIFT = const(2)  # THRESHOLD1 = noise + (signal - noise) / 4 (Pan-Tompkins)
_LATE_GAP_SHIFT = const(3)  # ... / 8 late or steep candidates (changed, see QrsDetector)
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
    """Streaming QRS detector: ``process(samples)`` -> R-peak indices, ``flush()``.

    ``fs_hz`` is required (250 or 360: ``firmware.params.SUPPORTED_RATES_HZ``): a missing
    or unsupported rate raises ValueError, never a silent default.  Every
    duration is converted to samples once, here (``ms * fs_hz / 1000``, rounded);
    sample counts below are at 360 Hz, with 250 Hz in brackets.

    Public attributes: ``fs_hz``; ``latency_bound_samples`` and
    ``latency_bound_ms`` (see Decision latency); ``clamped``, input samples
    saturated after scaling (a baseline step beyond +-10 mV); ``suppressed``,
    beats the noise gate withheld.

    Stages (per sample, integers only)
    ----------------------------------
    1. Input: a running mean of the raw samples (first-order tracker, time
       constant ``2**_dc_shift_bits`` samples: 128 = 0.36 s [64 = 0.26 s]) is
       subtracted, the difference scaled by ``ECG_INPUT_SHIFT_BITS`` (the filter
       chain's scaling: 1 mV = 3200 LSB for a 200 counts/mV front end) and
       saturated to Q15 (counted in ``clamped``).  So any ADC offset works
       (MIT-BIH 11-bit around 1024, signed 16-bit around 0); this
       baseline-corrected ECG is kept in ``_ring_x`` to place the R peak.
    2. Band-pass 5-15 Hz: the shared ``filter_tables`` ``"qrs_bandpass"`` table
       (Butterworth, 4 poles) in ``BiquadCascadeEfQ15`` (``_bp``): the
       coefficients the filter chain ships, no second set.  The detector needs
       no mains frequency.  Output ``f`` in ``_ring_f``.
    3. Derivative ``d[n] = f[n] - f[n - K]``, K = 10 ms = 4 [3] samples
       (``_deriv_span_samples``; Hamilton & Tompkins' ``deriv1``); ``|d|``
       saturated to 32767.
    4. Squaring, shifted: ``e = d*d >> _square_shift_bits`` (6 bits: the least
       with ``2**bits > W``); ``e`` in ``_ring_e``.
    5. Moving-window integration over W = 150 ms = 54 [38] samples (``_w``;
       Pan & Tompkins): the running sum ``_mwi_sum`` of the last W values of
       ``e``, in ``_ring_s``.
    6. Peaks of the integrated signal (Hamilton & Tompkins' ``Peak()``): the
       running maximum ``_peak_i_max`` becomes a candidate when the signal
       falls below half of it or 95 ms = 34 [24] samples after it
       (``_peak_timeout_samples``).

    Scaling and overflow: every per-sample value is a small int below 2**30
    (MicroPython's small ints hold 31 bits): input and band-pass Q15
    (saturating), ``|d| <= 32767``, ``d*d < 2**30``, ``e < 2**30 / W``, so the
    integrated signal is below 2**30.  Nothing is allocated per sample (ring
    buffers and the chunk buffer are made at init).  Sample times are re-based
    every ``_REBASE_SAMPLES`` samples, so they stay small ints on a device that
    runs for months; the reported indices add ``_time_base`` back (a long int
    per beat at most).

    Per candidate (a few per second), in ``_measure_candidate``:

    - ``peak_i``: the integrated-signal peak; ``peak_f_q15``: the largest
      ``|f|`` and ``slope_q15``: the largest ``|d|`` in its integration window.
    - R peak: the sample of largest magnitude of the baseline-corrected input
      (stage 1) from 120 ms before to 40 ms after (``_r_before_samples``,
      ``_r_after_samples``) the band-pass extremum moved back by the band-pass
      group delay (``firmware.signal.filters.group_delay_samples`` at 10 Hz, rounded:
      ``_bp_delay_samples`` = 15 [10]), not before the integration window.  The
      input has no filter delay, so the index is the R peak itself (the S or QS
      peak for a mainly negative QRS); on ECGSYN it is within 1 sample of the
      true R.
    - Quiet test (noise gate, below): does the integrated signal drop below
      ``peak_i / 16`` somewhere in the 400 ms (``_quiet_samples``) before the
      integration window?

    Thresholds and decision rules (Pan-Tompkins 1985, Hamilton-Tompkins 1986; changes marked)
    -----------------------------------------------------------------------------------------
    - Pre-blanking (Hamilton-Tompkins), ``_preblank``: a candidate is held
      200 ms (``_refractory_samples``); a larger one within 200 ms replaces it.
      *Added*: a candidate followed 200-300 ms later (``_pwave_lookahead_samples``)
      by one with at least 3x its ``peak_i`` is dropped as a P wave (a second
      QRS that soon is rare; a P wave precedes its QRS by the PR interval, up
      to ~300 ms with first-degree AV block).
    - Learning (Pan-Tompkins): the first 2 s only collect candidates; then the
      signal levels start at the largest candidate, the noise levels at half
      the mean of the integrated (and rectified band-passed) signal over the
      learning samples still in the rings (the last 512: 1.4 s [all 2 s]), and
      the held-back candidates are classified in order.
    - Levels: ``_spki`` / ``_npki``, the signal and noise peak levels of the
      integrated signal, and ``_spkf`` / ``_npkf``, the same for the
      band-passed signal (Q15): Pan-Tompkins' SPKI, NPKI, SPKF, NPKF.  Updated
      as ``level += (peak - level) / 8``: the signal levels by a QRS (1/4 for a
      QRS found by search-back), the noise levels by a noise candidate.
    - Dual thresholds (Pan-Tompkins), ``_thresholds``: a QRS needs
      ``peak_i > THRESHOLD_I1`` and ``peak_f_q15 > THRESHOLD_F1``, each
      ``noise + (signal - noise) / 4`` of its pair of levels, and ``peak_f_q15``
      of at least 60 uV (``_min_peak_f_q15`` = 192 LSB).
    - T-wave discrimination (Pan-Tompkins): a candidate less than 360 ms
      (``_twave_window_samples`` = 130 [90]) after the last QRS whose
      ``slope_q15`` is under half of that QRS's (``_last_qrs_slope_q15``) is a
      T wave, so noise.
    - *Changed*, late candidates: Pan-Tompkins halve both thresholds when the
      rhythm is irregular; here, for every candidate from the end of the
      360 ms T-wave window on (and before the first QRS), whatever the rhythm,
      the thresholds sit at 1/8 instead of 1/4 of the way from the noise to
      the signal level (T waves, which the full threshold keeps out, do not
      come that late; small ectopic beats do; never below the noise level).
    - *Changed*, steep candidates: the same 1/8 applies inside the T-wave
      window to a candidate whose ``slope_q15`` is at least 3/4 of the last
      QRS's: no T wave is that steep, and fast ventricular tachycardia (RR
      under 360 ms) is a run of such candidates.
    - Search-back (Pan-Tompkins, with Hamilton-Tompkins' interval),
      ``_search_back``: when no QRS has come for 150 % (Pan-Tompkins: 166 %) of
      RR AVERAGE2 (``_searchback_after_samples``, counted from
      ``_searchback_start_time``: the last QRS, or where the last failed
      search-back ended), the largest noise candidate at least 200 ms from
      both neighbours that passes half the thresholds (and the 60 uV floor and
      the T-wave test) is a QRS.  RR AVERAGE2
      (``_rr_average2_samples``) is the mean of the last 8 RR intervals within
      92-116 % of it (``_rr_regular_samples``); of the last 8 intervals
      (``_rr_recent_samples``, RR AVERAGE1) once none has been regular for 8
      beats (``_irregular_beats``).  Intervals outside 200-2000 ms are not
      averaged; both averages start at 1 s.  *Added*, to bound the latency and
      to recover from a drop in QRS amplitude (``_search_back_failed``): if
      there is none, the candidates up to the deadline are dropped, the search
      window moves on one interval and the signal levels move half-way to the
      noise levels.
    - *Added* noise gate, ``_gate``: a QRS passes if the quiet test found a
      quiet moment (the TP segment of an ECG) or if it repeats the previous
      QRS (RR within 1/8, ``peak_i`` and ``slope_q15`` within 3/8: runs of fast
      beats such as ventricular tachycardia leave no quiet time); beats are
      reported while most of the last 8 QRS passed (``_gate_failed_bits``).
      Withheld beats still adapt the detector and are counted in
      ``suppressed``.  Effect: a minute of white or 5-15 Hz noise (0.2-5 mV)
      yields 0-8 beats instead of ~160; on MIT-BIH DS1 it withholds 11
      detections in noise bursts (108, 203), none in ventricular tachycardia,
      and the ventricular flutter waves of 207.

    Decision latency
    ----------------
    Every R peak at index ``t`` is returned by the ``process`` call that
    delivers sample ``t + latency_bound_samples`` or earlier:
    ``latency_bound_samples`` = 1375 (``latency_bound_ms`` 3.82 s) at 360 Hz,
    957 (3.83 s) at 250 Hz.  It is the sum of two windows of the code:

    - ``_pipeline_samples`` = 294 [206] (0.82 s), from an R peak to the sample
      at which its candidate has certainly been classified: its
      integrated-signal peak comes at most ``_r_before_samples +
      _bp_delay_samples + _w + _deriv_span_samples`` = 43 + 15 + 54 + 4
      [30 + 10 + 38 + 3] samples after the R peak (the R peak lies at most
      120 ms before the band-pass extremum moved back by the group delay, and
      the extremum at most W + K before the integrated peak); the peak is
      emitted at most 95 ms after it (``_peak_timeout_samples``, 34 [24]) and
      released from the pre-blanking hold 300 ms after it
      (``_pwave_lookahead_samples``, 108 [75]), or up to 95 ms more while a
      peak that started inside the hold is still tracked; plus 2 samples.
    - the search-back interval at its longest: 150 % of RR AVERAGE2, which is
      at most 2 s (``_rr_max_samples``: longer intervals are not averaged), so
      3 s = 1080 [750] samples.  A beat the thresholds missed lies after the
      search-back start; the search-back runs once the interval and then
      ``_pipeline_samples`` more have passed (``_timed_events``), when every
      candidate up to its deadline has been classified.

    So the bound is 1080 + 294 + 1 = 1375 samples (750 + 206 + 1 = 957), with
    one sample of margin.  Only the search-back path at the slowest rhythm the
    averages allow (RR AVERAGE2 of 2 s, 30 bpm) comes near it.  A beat that
    passes the first threshold is out after ~0.4-0.7 s (at most
    ``_pipeline_samples``); beats in the first 2 s wait for the end of
    learning.

    State (besides durations in samples, ``*_samples``, and shifts, ``*_bits``)
    ---------------------------------------------------------------------------
    Times ``*_time`` are internal sample times: samples since ``_time_base``
    (re-based, see above); ``_next_time`` is the time of the next sample.

    - rings of ``_ring_mask + 1`` = 512 values, the newest at ``_ring_pos``:
      ``_ring_x`` (input, Q15), ``_ring_f`` (band-passed, Q15), ``_ring_e``
      (squared slope), ``_ring_s`` (integrated); ``_chunk_q15``: one chunk of
      input, band-passed in place;
    - stage state: ``_dc_sum`` (running mean times ``2**_dc_shift_bits``),
      ``_started``, ``_mwi_sum`` and ``_mwi_prev`` (the integrated signal now
      and one sample before), ``_peak_i_max`` / ``_peak_i_time`` (the peak
      being tracked, 0: none) and ``_since_peak_samples``;
    - the held candidate: ``_held``, ``_held_peak_i``, ``_held_peak_i_time``
      (its integrated peak), ``_held_r_time`` (its R peak),
      ``_held_peak_f_q15``, ``_held_slope_q15``, ``_held_quiet``;
    - noise candidates kept for search-back (at most 32, oldest first, by R
      time): ``_cand_count`` and ``_cand_peak_i``, ``_cand_r_time``,
      ``_cand_peak_f_q15``, ``_cand_slope_q15``, ``_cand_quiet``;
    - the last QRS: ``_has_last_qrs``, ``_last_qrs_time``,
      ``_last_qrs_slope_q15``, ``_last_qrs_peak_i`` and
      ``_last_qrs_rr_samples`` (for the noise gate);
    - events: ``_learned`` / ``_learn_end_time``, ``_mwi_full_time`` (the
      integrator has filled), ``_next_event_time``;
    - ``_decided``: R-peak indices decided since the last return;
    - the levels, RR averages, search-back and noise gate state: named with
      their rules above.

    ``_bp``, ``_w``, the rings and ``_spki`` / ``_npki`` keep their short names:
    tests/test_qrs.py reads them.
    """

    def __init__(self, fs_hz=None):
        if fs_hz is None:
            raise ValueError("fs_hz is required (no default sample rate)")
        fs = check_sample_rate_hz(fs_hz)
        self.fs_hz = fs

        def ms(v):
            return (v * fs + 500) // 1000

        self._bp = make_filter(fs, "qrs_bandpass")
        bp_delay = int(group_delay_samples(fs, "qrs_bandpass") + 0.5)
        self._bp_delay_samples = bp_delay
        deriv_span = self._deriv_span_samples = max(1, ms(_DERIV_MS))
        w = self._w = max(1, ms(_MWI_MS))  # integration window, samples
        bits = 0  # bits of w (int.bit_length is not in MicroPython)
        while (1 << bits) <= w:
            bits += 1
        self._square_shift_bits = bits
        peak_timeout = self._peak_timeout_samples = ms(_PEAK_TIMEOUT_MS)
        self._refractory_samples = ms(_REFRACTORY_MS)
        pwave = self._pwave_lookahead_samples = max(self._refractory_samples, ms(_PWAVE_MS))
        self._twave_window_samples = ms(_TWAVE_MS)
        self._learn_samples = ms(_LEARN_MS)
        self._rr_min_samples = ms(_RR_MIN_MS)
        self._rr_max_samples = ms(_RR_MAX_MS)
        r_before = self._r_before_samples = ms(_R_BEFORE_MS)
        self._r_after_samples = ms(_R_AFTER_MS)
        dc_shift = 0
        while (2 << dc_shift) <= ms(_DC_TRACK_MS):
            dc_shift += 1
        self._dc_shift_bits = dc_shift
        self._min_peak_f_q15 = (_MIN_QRS_UV << ECG_INPUT_SHIFT_BITS) // ECG_UV_PER_COUNT
        # How far back a candidate reaches from the sample that emits it.
        quiet = self._quiet_samples = ms(_QUIET_MS)
        reach = peak_timeout + w + deriv_span + bp_delay + r_before + 2
        if reach < peak_timeout + w + quiet + 2:
            reach = peak_timeout + w + quiet + 2
        size = 64
        while size < reach + _CHUNK + 8:  # the input stage runs a chunk ahead
            size *= 2
        self._ring_mask = size - 1
        # From an R peak to the sample at which its candidate has certainly been
        # emitted (integrated-signal peak at most w + deriv_span + bp_delay +
        # r_before later, emitted peak_timeout after it) and released from the
        # hold (pwave, or up to peak_timeout more while a peak that started
        # inside the hold is tracked).
        self._pipeline_samples = (r_before + bp_delay + w + deriv_span + pwave
                                  + 2 * peak_timeout + 2)
        searchback_max = (self._rr_max_samples * _RR_MISSED_PERCENT) // 100
        #: Every R peak at index t is returned by the ``process`` call that delivers
        #: sample ``t + latency_bound_samples`` (or an earlier one).
        self.latency_bound_samples = searchback_max + self._pipeline_samples + 1
        self.latency_bound_ms = (self.latency_bound_samples * 1000 + fs - 1) // fs
        self._ring_x = [0] * size  # baseline-corrected input, Q15
        self._ring_f = [0] * size  # band-passed, Q15
        self._ring_e = [0] * size  # squared slope
        self._ring_s = [0] * size  # integrated
        self._chunk_q15 = [0] * _CHUNK
        self._cand_peak_i = [0] * _MAX_CANDIDATES
        self._cand_r_time = [0] * _MAX_CANDIDATES
        self._cand_peak_f_q15 = [0] * _MAX_CANDIDATES
        self._cand_slope_q15 = [0] * _MAX_CANDIDATES
        self._cand_quiet = [0] * _MAX_CANDIDATES
        self._rr_recent_samples = [0] * _HISTORY  # RR AVERAGE1's intervals (a ring)
        self._rr_regular_samples = [0] * _HISTORY  # RR AVERAGE2's intervals (a ring)
        self.reset()

    def reset(self):
        """Start again: state as after construction, indices from 0."""
        self._bp.reset()
        for ring in (self._ring_x, self._ring_f, self._ring_e, self._ring_s):
            for i in range(len(ring)):
                ring[i] = 0
        self._time_base = 0  # sample index of internal time 0 (re-basing)
        self._next_time = 0  # internal time of the next sample
        self._ring_pos = 0
        self._dc_sum = 0
        self._started = False
        self._mwi_sum = 0
        self._mwi_prev = 0
        self._peak_i_max = 0  # peak being tracked (0: none)
        self._peak_i_time = 0
        self._since_peak_samples = 0
        self._held = False
        self._held_peak_i = self._held_peak_i_time = self._held_r_time = 0
        self._held_peak_f_q15 = self._held_slope_q15 = self._held_quiet = 0
        self._learned = False
        self._cand_count = 0
        self._spki = self._npki = self._spkf = self._npkf = 0
        self._gate_failed_bits = 0  # 1 per QRS that failed the noise gate, newest lowest
        self._gate_beats = 0  # QRS in _gate_failed_bits (up to _GATE_BEATS)
        self._last_qrs_rr_samples = 0
        self._last_qrs_peak_i = 0
        self._has_last_qrs = False  # a QRS has been accepted
        self._last_qrs_time = 0
        self._last_qrs_slope_q15 = 0
        self._searchback_start_time = 0
        rr0 = (_RR_INIT_MS * self.fs_hz) // 1000
        for i in range(_HISTORY):
            self._rr_recent_samples[i] = rr0
            self._rr_regular_samples[i] = rr0
        self._rr_recent_pos = self._rr_regular_pos = 0
        self._rr_average1_samples = self._rr_average2_samples = rr0
        self._irregular_beats = 0  # averaged intervals since the last regular one
        self._searchback_after_samples = (rr0 * _RR_MISSED_PERCENT) // 100
        self._learn_end_time = self._learn_samples
        self._mwi_full_time = self._w + self._deriv_span_samples
        self._next_event_time = self._learn_end_time
        self._decided = []
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
            if self._next_time >= _REBASE_SAMPLES:
                self._rebase()
        out = self._decided
        self._decided = []
        return out

    def flush(self):
        """End of the stream: decide what is pending and return it."""
        now = self._next_time
        if self._peak_i_max:
            self._measure_candidate(self._peak_i_max, self._peak_i_time, now - 1)
            self._peak_i_max = 0
            self._since_peak_samples = 0
        if self._held:
            self._release()
        if not self._learned:
            self._end_learning(now)
        if (self._has_last_qrs
                and now - self._searchback_start_time > self._searchback_after_samples):
            self._search_back(now + self._refractory_samples)
        out = self._decided
        self._decided = []
        return out

    def _run(self, samples, i0, cnt):
        """Filter and scan ``samples[i0:i0 + cnt]`` (cnt <= _CHUNK): stages 1-6."""
        chunk = self._chunk_q15
        ring_x = self._ring_x
        mask = self._ring_mask
        dc_shift = self._dc_shift_bits
        if not self._started:
            self._dc_sum = samples[i0] << dc_shift
            self._started = True
        dc_sum = self._dc_sum
        p = self._ring_pos
        clamped = 0
        for j in range(cnt):
            x = samples[i0 + j]
            dc_sum += x - (dc_sum >> dc_shift)
            u = (x - (dc_sum >> dc_shift)) << ECG_INPUT_SHIFT_BITS
            if u > 32767:
                u = 32767
                clamped += 1
            elif u < -32768:
                u = -32768
                clamped += 1
            chunk[j] = u
            p = (p + 1) & mask
            ring_x[p] = u
        self._dc_sum = dc_sum
        self.clamped += clamped
        self._bp.process_inplace(chunk, cnt)

        ring_f = self._ring_f
        ring_e = self._ring_e
        ring_s = self._ring_s
        deriv_span = self._deriv_span_samples
        w = self._w
        square_shift = self._square_shift_bits
        peak_timeout = self._peak_timeout_samples
        pos = self._ring_pos
        mwi = self._mwi_sum
        mwi_prev = self._mwi_prev
        peak_max = self._peak_i_max
        peak_time = self._peak_i_time
        since_peak = self._since_peak_samples
        now = self._next_time
        next_event = self._next_event_time
        for j in range(cnt):
            f = chunk[j]  # band-passed, Q15
            pos = (pos + 1) & mask
            ring_f[pos] = f
            d = f - ring_f[(pos - deriv_span) & mask]  # derivative
            if d < 0:
                d = -d
            if d > 32767:
                d = 32767
            e = (d * d) >> square_shift  # squared
            mwi += e - ring_e[(pos - w) & mask]  # integrated
            ring_e[pos] = e
            ring_s[pos] = mwi
            if since_peak:
                since_peak += 1
            if mwi > mwi_prev and mwi > peak_max:
                peak_max = mwi
                peak_time = now
                since_peak = 1
            elif peak_max and (mwi < (peak_max >> 1) or since_peak > peak_timeout):
                self._ring_pos = pos
                self._measure_candidate(peak_max, peak_time, now)
                peak_max = 0
                since_peak = 0
                next_event = now
            mwi_prev = mwi
            if now >= next_event:
                self._ring_pos = pos
                next_event = self._timed_events(now, peak_time if peak_max else -1)
            now += 1
        self._ring_pos = pos
        self._mwi_sum = mwi
        self._mwi_prev = mwi_prev
        self._peak_i_max = peak_max
        self._peak_i_time = peak_time
        self._since_peak_samples = since_peak
        self._next_time = now
        self._next_event_time = next_event

    def _rebase(self):
        """Move internal time 0 forward so that sample times stay small ints.

        Only differences of times matter to the detector; a time so old that it
        would fall below -2**29 is clamped there, which changes no decision (all
        compared intervals are far shorter)."""
        shift = self._next_time - self._ring_mask - 1
        self._time_base += shift
        self._next_time -= shift
        self._peak_i_time = _older(self._peak_i_time, shift)
        self._next_event_time = _older(self._next_event_time, shift)
        self._learn_end_time = _older(self._learn_end_time, shift)
        self._mwi_full_time = _older(self._mwi_full_time, shift)
        self._held_peak_i_time = _older(self._held_peak_i_time, shift)
        self._held_r_time = _older(self._held_r_time, shift)
        self._searchback_start_time = _older(self._searchback_start_time, shift)
        self._last_qrs_time = _older(self._last_qrs_time, shift)
        for i in range(self._cand_count):
            self._cand_r_time[i] = _older(self._cand_r_time[i], shift)

    # --------------------------------------------------------- candidates

    def _measure_candidate(self, peak_i, peak_time, now):
        """Integrated-signal peak ``peak_i`` at time ``peak_time``, emitted at time
        ``now`` (the newest sample, at ``_ring_pos``): its band-pass peak, slope,
        R peak and quiet test, then pre-blanking."""
        mask = self._ring_mask
        pos = self._ring_pos
        ring_f = self._ring_f
        deriv_span = self._deriv_span_samples
        window_start = peak_time - self._w + 1 - deriv_span
        if window_start < 0:
            window_start = 0
        peak_f = -1
        peak_f_time = peak_time
        slope = 0
        t = window_start
        while t <= peak_time:
            i = (pos - (now - t)) & mask
            v = ring_f[i]
            a = v if v >= 0 else -v
            if a > peak_f:
                peak_f = a
                peak_f_time = t
            if t - deriv_span >= window_start:
                d = v - ring_f[(i - deriv_span) & mask]
                if d < 0:
                    d = -d
                if d > slope:
                    slope = d
            t += 1
        # R peak: largest |baseline-corrected input| near the band-pass extremum.
        first = window_start - self._bp_delay_samples
        if first < now - mask:
            first = now - mask
        if first < 0:
            first = 0
        centre = peak_f_time - self._bp_delay_samples
        t = centre - self._r_before_samples
        if t < first:
            t = first
        last = centre + self._r_after_samples
        if last > now:
            last = now
        ring_x = self._ring_x
        best = -1
        r_time = centre
        while t <= last:
            v = ring_x[(pos - (now - t)) & mask]
            if v < 0:
                v = -v
            if v > best:
                best = v
                r_time = t
            t += 1
        # Noise gate: is there a quiet moment (the TP segment of an ECG) in
        # the _QUIET_MS before this candidate's integration window?
        last = peak_time - self._w
        t = last - self._quiet_samples
        if t < self._mwi_full_time:
            t = self._mwi_full_time  # the integrator is still filling before this
        quiet_level = peak_i >> _QUIET_SHIFT
        ring_s = self._ring_s
        quiet = 1 if t > last else 0
        while t <= last:
            if ring_s[(pos - (now - t)) & mask] <= quiet_level:
                quiet = 1
                break
            t += 1
        self._preblank(peak_i, peak_time, r_time, peak_f, slope, quiet)

    def _preblank(self, peak_i, peak_time, r_time, peak_f, slope, quiet):
        """Pre-blanking and the P-wave look-ahead."""
        if self._held:
            since_held = peak_time - self._held_peak_i_time
            if since_held < self._refractory_samples:
                if peak_i > self._held_peak_i:
                    self._hold(peak_i, peak_time, r_time, peak_f, slope, quiet)
                return
            if (since_held < self._pwave_lookahead_samples
                    and peak_i >= _PWAVE_DOMINANCE * self._held_peak_i):
                self._hold(peak_i, peak_time, r_time, peak_f, slope, quiet)
                return
            self._release()
        self._hold(peak_i, peak_time, r_time, peak_f, slope, quiet)

    def _hold(self, peak_i, peak_time, r_time, peak_f, slope, quiet):
        self._held = True
        self._held_peak_i = peak_i
        self._held_peak_i_time = peak_time
        self._held_r_time = r_time
        self._held_peak_f_q15 = peak_f
        self._held_slope_q15 = slope
        self._held_quiet = quiet

    def _release(self):
        self._held = False
        self._classify(self._held_peak_i, self._held_r_time, self._held_peak_f_q15,
                       self._held_slope_q15, self._held_quiet)

    def _searchback_deadline(self):
        """Time at which the search-back runs if no QRS comes first: the search-back
        interval after its start, plus the pipeline delay (every candidate up to the
        end of the interval has been classified by then)."""
        return (self._searchback_start_time + self._searchback_after_samples
                + self._pipeline_samples)

    def _timed_events(self, now, tracking):
        """Timed events at time ``now``; returns the time of the next one.

        ``tracking``: time of the integrated-signal peak being tracked, -1 if none.
        """
        pwave = self._pwave_lookahead_samples
        if (self._held and now >= self._held_peak_i_time + pwave
                and (tracking < 0 or tracking >= self._held_peak_i_time + pwave)):
            self._release()
        if not self._learned and now >= self._learn_end_time:
            self._end_learning(now + 1)
        if self._learned and self._has_last_qrs:
            if now >= self._searchback_deadline():
                self._search_back(now)
                if now >= self._searchback_deadline():
                    self._search_back_failed()
        nxt = now + self._rr_max_samples
        if self._held and self._held_peak_i_time + pwave < nxt:
            nxt = self._held_peak_i_time + pwave
        if not self._learned:
            if self._learn_end_time < nxt:
                nxt = self._learn_end_time
        elif self._has_last_qrs:
            deadline = self._searchback_deadline()
            if deadline < nxt:
                nxt = deadline
        if nxt <= now:
            nxt = now + 1
        return nxt

    # ---------------------------------------------------------- decisions

    def _end_learning(self, seen):
        """End of learning; ``seen``: samples scanned so far (the newest at ``_ring_pos``)."""
        self._learned = True
        count = self._cand_count
        self._cand_count = 0
        if count == 0:
            return
        cand_peak_i = self._cand_peak_i
        cand_peak_f = self._cand_peak_f_q15
        top = 0
        for i in range(1, count):
            if cand_peak_i[i] > cand_peak_i[top]:
                top = i
        self._spki = cand_peak_i[top]
        self._spkf = cand_peak_f[top]
        # Noise levels (Pan-Tompkins): half the mean of the integrated and of
        # the rectified band-passed signal, over the learning samples still in
        # the ring buffers (the last 512: ~1.4 s of the 2 s at 360 Hz).
        cnt = self._ring_mask + 1
        if cnt > seen:
            cnt = seen
        if cnt < 1:
            cnt = 1
        total_i = 0
        total_f = 0
        pos = self._ring_pos
        for j in range(cnt):
            i = (pos - j) & self._ring_mask
            total_i += self._ring_s[i]
            v = self._ring_f[i]
            total_f += v if v >= 0 else -v
        self._npki = total_i // (2 * cnt)
        self._npkf = total_f // (2 * cnt)
        peaks_i = cand_peak_i[:count]  # once per stream
        r_times = self._cand_r_time[:count]
        peaks_f = cand_peak_f[:count]
        slopes = self._cand_slope_q15[:count]
        quiets = self._cand_quiet[:count]
        for i in range(count):
            self._classify(peaks_i[i], r_times[i], peaks_f[i], slopes[i], quiets[i])

    def _add_noise_candidate(self, peak_i, r_time, peak_f, slope, quiet):
        count = self._cand_count
        if count == _MAX_CANDIDATES:
            for i in range(count - 1):
                self._cand_peak_i[i] = self._cand_peak_i[i + 1]
                self._cand_r_time[i] = self._cand_r_time[i + 1]
                self._cand_peak_f_q15[i] = self._cand_peak_f_q15[i + 1]
                self._cand_slope_q15[i] = self._cand_slope_q15[i + 1]
                self._cand_quiet[i] = self._cand_quiet[i + 1]
            count -= 1
        self._cand_peak_i[count] = peak_i
        self._cand_r_time[count] = r_time
        self._cand_peak_f_q15[count] = peak_f
        self._cand_slope_q15[count] = slope
        self._cand_quiet[count] = quiet
        self._cand_count = count + 1

    def _thresholds(self, r_time, slope=0):
        """(THRESHOLD_I1, THRESHOLD_F1) for a candidate at time ``r_time`` with
        largest slope ``slope`` (Q15): 1/4 of the way from the noise to the signal
        level, 1/8 for a late or steep candidate (class docstring)."""
        gap_shift = _GAP_SHIFT
        if (not self._has_last_qrs
                or r_time - self._last_qrs_time >= self._twave_window_samples
                or 4 * slope >= 3 * self._last_qrs_slope_q15):
            gap_shift = _LATE_GAP_SHIFT
        return (self._npki + ((self._spki - self._npki) >> gap_shift),
                self._npkf + ((self._spkf - self._npkf) >> gap_shift))

    def _is_twave(self, r_time, slope):
        """Within the T-wave window of the last QRS and under half its slope."""
        return (r_time - self._last_qrs_time < self._twave_window_samples
                and slope < (self._last_qrs_slope_q15 >> 1))

    def _classify(self, peak_i, r_time, peak_f, slope, quiet):
        """A released candidate: QRS (accepted) or noise (kept for search-back)."""
        if not self._learned:
            self._add_noise_candidate(peak_i, r_time, peak_f, slope, quiet)
            return
        if (self._has_last_qrs
                and r_time - self._searchback_start_time > self._searchback_after_samples):
            self._search_back(r_time)
        thr_i, thr_f = self._thresholds(r_time, slope)
        qrs = peak_i > thr_i and peak_f > thr_f and peak_f >= self._min_peak_f_q15
        if qrs and self._has_last_qrs:
            if r_time - self._last_qrs_time <= 0 or self._is_twave(r_time, slope):
                qrs = False
        if qrs:
            self._accept(peak_i, r_time, peak_f, slope, quiet, False)
            return
        self._npki += (peak_i - self._npki) >> 3
        self._npkf += (peak_f - self._npkf) >> 3
        if not self._has_last_qrs or r_time > self._last_qrs_time:
            self._add_noise_candidate(peak_i, r_time, peak_f, slope, quiet)

    def _search_back(self, limit):
        """Take missed beats among the noise candidates before ``limit``."""
        refractory = self._refractory_samples
        while True:
            last = self._last_qrs_time
            best = -1
            for i in range(self._cand_count):
                r_time = self._cand_r_time[i]
                if r_time - last < refractory or limit - r_time < refractory:
                    continue
                peak_f = self._cand_peak_f_q15[i]
                slope = self._cand_slope_q15[i]
                thr_i, thr_f = self._thresholds(r_time, slope)
                if (self._cand_peak_i[i] <= (thr_i >> 1) or peak_f <= (thr_f >> 1)
                        or peak_f < self._min_peak_f_q15):
                    continue
                if self._is_twave(r_time, slope):
                    continue
                if best < 0 or self._cand_peak_i[i] > self._cand_peak_i[best]:
                    best = i
            if best < 0:
                return
            self._accept(self._cand_peak_i[best], self._cand_r_time[best],
                         self._cand_peak_f_q15[best], self._cand_slope_q15[best],
                         self._cand_quiet[best], True)
            if limit - self._searchback_start_time <= self._searchback_after_samples:
                return

    def _search_back_failed(self):
        """No missed beat in the interval: drop its candidates, move the window on
        one interval and the signal levels half-way to the noise levels."""
        end = self._searchback_start_time + self._searchback_after_samples
        self._drop_candidates_until(end)
        self._searchback_start_time = end
        self._spki = self._npki + ((self._spki - self._npki) >> 1)
        self._spkf = self._npkf + ((self._spkf - self._npkf) >> 1)

    def _drop_candidates_until(self, t_end):
        j = 0
        for i in range(self._cand_count):
            if self._cand_r_time[i] > t_end:
                self._cand_peak_i[j] = self._cand_peak_i[i]
                self._cand_r_time[j] = self._cand_r_time[i]
                self._cand_peak_f_q15[j] = self._cand_peak_f_q15[i]
                self._cand_slope_q15[j] = self._cand_slope_q15[i]
                self._cand_quiet[j] = self._cand_quiet[i]
                j += 1
        self._cand_count = j

    def _accept(self, peak_i, r_time, peak_f, slope, quiet, from_search_back):
        level_shift = 2 if from_search_back else 3
        self._spki += (peak_i - self._spki) >> level_shift
        self._spkf += (peak_f - self._spkf) >> level_shift
        report = self._gate(peak_i, r_time, slope, quiet)
        if self._has_last_qrs:
            rr = r_time - self._last_qrs_time
            if self._rr_min_samples <= rr <= self._rr_max_samples:
                self._add_rr(rr)
        self._has_last_qrs = True
        self._last_qrs_time = r_time
        self._last_qrs_slope_q15 = slope
        self._searchback_start_time = r_time
        self._drop_candidates_until(r_time)
        if report:
            self._decided.append(r_time + self._time_base)
        else:
            self.suppressed += 1

    def _gate(self, peak_i, r_time, slope, quiet):
        """Noise gate: record whether this QRS looks like one; True to report it."""
        ok = quiet
        if not ok and self._has_last_qrs:
            # No quiet moment before it, but a repeat of the previous QRS (same
            # RR, height and slope: a run of fast beats such as ventricular
            # tachycardia, which leaves no quiet time between its complexes).
            rr = r_time - self._last_qrs_time
            ok = (_close(rr, self._last_qrs_rr_samples, _RUN_RR_EIGHTHS)
                  and _close(peak_i, self._last_qrs_peak_i, _RUN_SHAPE_EIGHTHS)
                  and _close(slope, self._last_qrs_slope_q15, _RUN_SHAPE_EIGHTHS))
        if self._has_last_qrs:
            self._last_qrs_rr_samples = r_time - self._last_qrs_time
        self._last_qrs_peak_i = peak_i
        self._gate_failed_bits = ((self._gate_failed_bits << 1) | (0 if ok else 1)) & _GATE_MASK
        if self._gate_beats < _GATE_BEATS:
            self._gate_beats += 1
        failed = 0
        v = self._gate_failed_bits
        while v:
            failed += v & 1
            v >>= 1
        return 2 * failed < self._gate_beats

    def _add_rr(self, rr):
        """RR AVERAGE1 (last 8) and RR AVERAGE2 (last 8 regular) as Pan-Tompkins."""
        self._rr_recent_samples[self._rr_recent_pos] = rr
        self._rr_recent_pos = (self._rr_recent_pos + 1) % _HISTORY
        self._rr_average1_samples = sum(self._rr_recent_samples) // _HISTORY
        lo = (self._rr_average2_samples * _RR_LOW_PERCENT) // 100
        hi = (self._rr_average2_samples * _RR_HIGH_PERCENT) // 100
        if lo <= rr <= hi:
            self._rr_regular_samples[self._rr_regular_pos] = rr
            self._rr_regular_pos = (self._rr_regular_pos + 1) % _HISTORY
            self._rr_average2_samples = sum(self._rr_regular_samples) // _HISTORY
            self._irregular_beats = 0
        else:
            self._irregular_beats += 1
            if self._irregular_beats >= _HISTORY:
                # No regular interval for 8 beats: the rhythm has changed.
                for i in range(_HISTORY):
                    self._rr_regular_samples[i] = self._rr_recent_samples[i]
                self._rr_average2_samples = self._rr_average1_samples
                self._irregular_beats = 0
        self._searchback_after_samples = (
            (self._rr_average2_samples * _RR_MISSED_PERCENT) // 100)


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
