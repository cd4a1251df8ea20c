"""Fixed-point signal processing for the device (Q15), bit-exact with CMSIS-DSP.

Everything here is integer arithmetic that runs unchanged on CPython and
MicroPython.  Formats are named in the CMSIS-DSP way: Q15 is a signed 16-bit
fraction (-1 .. 1 - 2**-15), Q31 a signed 32-bit one.

MicroPython small ints hold 31 bits; a product of two Q15 values already needs
31 bits, so a straightforward 64-bit accumulator would allocate a long int on
the heap for every sample.  :class:`BiquadCascadeQ15` therefore has two
kernels with identical results: ``wide`` (one accumulator, CPython's native
big ints, fastest there) and ``split`` (coefficients split into a signed high
byte and an unsigned low byte, two accumulators that stay below 2**30, no
allocation; the default on MicroPython).  The tests check both against the
CMSIS-DSP reference bit for bit.

What is here:

- conversions: :func:`float_to_q15`, :func:`q15_to_float` and their block
  forms :func:`floats_to_q15`, :func:`q15_to_floats`;
- :class:`BiquadCascadeQ15`: CMSIS-DSP ``arm_biquad_cascade_df1_q15``;
- :class:`BiquadCascadeEfQ15`: the same cascade with error feedback (noise
  shaping) for poles close to z = 1 (the baseline high-pass, the QRS
  band-pass), where plain truncation leaves a DC offset (a dead band) of
  about a hundred LSB;
- :class:`FirQ15`: CMSIS-DSP ``arm_fir_q15``;
- the Pan-Tompkins front-end stages :class:`Derivative5Q15`,
  :class:`SquareQ15` and :class:`MovingWindowIntegrator`, each with a
  stated output bound that keeps every per-sample value below 2**30.

Every filter keeps its state between calls and has ``process(samples) ->
list`` and ``process_inplace(buf, count)`` (no allocation; ``buf`` a list or
an ``array`` wide enough for the output range) and ``reset()``.
"""

from firmware.hw.compat import IS_MICROPYTHON, const

Q15_MAX = const(32767)
Q15_MIN = const(-32768)
#: Largest MicroPython small int (31-bit signed): per-sample values stay below it.
SMALL_INT_MAX = const(1073741823)
#: Longest FIR :class:`FirQ15` accepts (the split kernel's partial sums stay < 2**30).
FIR_MAX_TAPS = const(128)
#: Bound of :class:`Derivative5Q15`'s output magnitude (6 * 32768 / 8).
DERIVATIVE5_MAX = const(24576)


def float_to_q15(x):
    """Round ``x`` (a fraction, nominally -1 .. 1) to Q15, then saturate.

    Rounds half away from zero (``0.5 / 32768 -> 1``, ``-0.5 / 32768 -> -1``);
    anything at or beyond +-1.0, infinities included, saturates to 32767 /
    -32768.  NaN raises ValueError.
    """
    if x != x:
        raise ValueError("cannot convert NaN to Q15")
    if x >= 1.0:
        return Q15_MAX
    if x <= -1.0:
        return Q15_MIN
    v = int(x * 32768.0 + (0.5 if x >= 0 else -0.5))
    if v > Q15_MAX:
        return Q15_MAX
    if v < Q15_MIN:
        return Q15_MIN
    return v


def q15_to_float(v):
    return v / 32768.0


def floats_to_q15(values):
    """Block form of :func:`float_to_q15`: a new list of Q15 ints."""
    return [float_to_q15(x) for x in values]


def q15_to_floats(values):
    """Block form of :func:`q15_to_float`: a new list of floats."""
    return [v / 32768.0 for v in values]


def _check_q15_ints(values, what):
    for c in values:
        if not isinstance(c, int) or isinstance(c, bool) or not Q15_MIN <= c <= Q15_MAX:
            raise ValueError("%s %r is not a Q15 int" % (what, c))


def _check_kernel(kernel):
    if kernel is None:
        return "split" if IS_MICROPYTHON else "wide"
    if kernel not in ("wide", "split"):
        raise ValueError("kernel must be 'wide' or 'split', got %r" % (kernel,))
    return kernel


class BiquadCascadeQ15:
    """Direct-form I biquad cascade, Q15, as CMSIS-DSP ``arm_biquad_cascade_df1_q15``.

    ``coeffs``: ``6 * num_stages`` ints, per stage ``{b0, 0, b1, b2, a1, a2}``
    in Q15 scaled down by ``2**post_shift`` (so coefficients up to
    ``2**post_shift`` in magnitude fit), with ``a1``/``a2`` of the opposite
    sign to scipy's (``y[n] = b0 x[n] + b1 x[n-1] + b2 x[n-2] + a1 y[n-1] +
    a2 y[n-2]``).  State (``x[n-1], x[n-2], y[n-1], y[n-2]`` per stage) is kept
    between calls to :meth:`process`.

    Scaling and overflow: input Q15; products Q30 (2.30 with the post-shift);
    accumulator 64-bit (``wide``) or two exact partial sums (``split``), no
    intermediate saturation, as CMSIS-DSP; the sum is shifted right by
    ``15 - post_shift`` (truncation toward minus infinity, no rounding) and
    saturated to Q15.  Each stage's saturated Q15 output feeds the next stage.
    """

    def __init__(self, num_stages, coeffs, post_shift, kernel=None):
        if not isinstance(num_stages, int) or num_stages < 1:
            raise ValueError("num_stages must be a positive int, got %r" % (num_stages,))
        if not isinstance(post_shift, int) or not 0 <= post_shift <= 7:
            raise ValueError("post_shift must be an int in 0..7, got %r" % (post_shift,))
        if len(coeffs) != 6 * num_stages:
            raise ValueError(
                "coeffs must hold 6 * num_stages = %d ints, got %d" % (6 * num_stages, len(coeffs))
            )
        for c in coeffs:
            if not isinstance(c, int) or isinstance(c, bool) or not Q15_MIN <= c <= Q15_MAX:
                raise ValueError("coefficient %r is not a Q15 int" % (c,))
        if kernel is None:
            kernel = "split" if IS_MICROPYTHON else "wide"
        if kernel not in ("wide", "split"):
            raise ValueError("kernel must be 'wide' or 'split'")
        self.num_stages = num_stages
        self.post_shift = post_shift
        self.kernel = kernel
        self._shift = 15 - post_shift
        self._coeffs = [int(c) for c in coeffs]
        # Per stage: b0, b1, b2, a1, a2 (the CMSIS padding zero dropped).
        self._c = []
        # Split form: c = hi * 256 + lo, hi in -128..127, lo in 0..255.
        self._hi = []
        self._lo = []
        for s in range(num_stages):
            for k in (0, 2, 3, 4, 5):
                c = self._coeffs[6 * s + k]
                self._c.append(c)
                self._hi.append(c >> 8)
                self._lo.append(c & 0xFF)
        self._state = [0] * (4 * num_stages)

    def reset(self):
        for i in range(len(self._state)):
            self._state[i] = 0

    def process(self, samples):
        """Filter a block of Q15 ints; return a new list of Q15 ints."""
        out = list(samples)
        self.process_inplace(out, len(out))
        return out

    def process_inplace(self, buf, count):
        """Filter ``buf[0:count]`` in place (a list or ``array('h')``): no allocation."""
        if self.kernel == "wide":
            self._wide(buf, count)
        else:
            self._split(buf, count)

    def _wide(self, buf, count):
        shift = self._shift
        c = self._c
        st = self._state
        for s in range(self.num_stages):
            b0 = c[5 * s]
            b1 = c[5 * s + 1]
            b2 = c[5 * s + 2]
            a1 = c[5 * s + 3]
            a2 = c[5 * s + 4]
            x1 = st[4 * s]
            x2 = st[4 * s + 1]
            y1 = st[4 * s + 2]
            y2 = st[4 * s + 3]
            for n in range(count):
                x = buf[n]
                y = (b0 * x + b1 * x1 + b2 * x2 + a1 * y1 + a2 * y2) >> shift
                if y > 32767:
                    y = 32767
                elif y < -32768:
                    y = -32768
                buf[n] = y
                x2 = x1
                x1 = x
                y2 = y1
                y1 = y
            st[4 * s] = x1
            st[4 * s + 1] = x2
            st[4 * s + 2] = y1
            st[4 * s + 3] = y2

    def _split(self, buf, count):
        # (256 * H + L) >> s == (H + (L >> 8)) >> (s - 8) for s >= 8 (floor
        # division on both sides), and |H|, |L| < 2**26: no long ints.
        shift = self._shift - 8
        hi = self._hi
        lo = self._lo
        st = self._state
        for s in range(self.num_stages):
            h0 = hi[5 * s]
            h1 = hi[5 * s + 1]
            h2 = hi[5 * s + 2]
            h3 = hi[5 * s + 3]
            h4 = hi[5 * s + 4]
            l0 = lo[5 * s]
            l1 = lo[5 * s + 1]
            l2 = lo[5 * s + 2]
            l3 = lo[5 * s + 3]
            l4 = lo[5 * s + 4]
            x1 = st[4 * s]
            x2 = st[4 * s + 1]
            y1 = st[4 * s + 2]
            y2 = st[4 * s + 3]
            for n in range(count):
                x = buf[n]
                acc_h = h0 * x + h1 * x1 + h2 * x2 + h3 * y1 + h4 * y2
                acc_l = l0 * x + l1 * x1 + l2 * x2 + l3 * y1 + l4 * y2
                y = (acc_h + (acc_l >> 8)) >> shift
                if y > 32767:
                    y = 32767
                elif y < -32768:
                    y = -32768
                buf[n] = y
                x2 = x1
                x1 = x
                y2 = y1
                y1 = y
            st[4 * s] = x1
            st[4 * s + 1] = x2
            st[4 * s + 2] = y1
            st[4 * s + 3] = y2


class BiquadCascadeEfQ15(BiquadCascadeQ15):
    """:class:`BiquadCascadeQ15` plus error feedback (noise shaping).

    Same coefficients, formats, post-shift and API as :class:`BiquadCascadeQ15`
    (so the same tables drive both); only the rounding of each stage differs:
    the bits that the ``>> (15 - post_shift)`` drops (the remainder ``e``,
    ``0 <= e < 2**(15 - post_shift)``) are kept and added to the following
    accumulators: ``2 * e[n-1] - e[n-2]`` in a second-order section, ``e[n-1]``
    in a first-order one (``a2 == 0``).  The stage's output error is then
    the truncation error times ``(1 - z**-1)**2`` (or ``(1 - z**-1)``) before
    it meets the recursive part ``1 / A(z)``: its zeros at z = 1 cancel the
    poles next to z = 1 that plain truncation excites.

    Why: with poles near z = 1 (the 0.5 Hz baseline high-pass, the QRS
    band-pass) plain truncation is amplified by ``1 / A(1)``, which is 100 ..
    10000: the CMSIS DF1 form sits on a DC offset with zero input (a dead
    band: tens to thousands of LSB, depending on the section) and follows a
    float reference with the same coefficients only within as much.  With the
    feedback, zero and constant inputs settle to exactly 0 (high-pass) and the
    output stays within ~2 LSB (rms ~0.4 LSB) of that float filter
    (``python -m models.filterdesign`` prints the figures).  Cost: two or three
    additions, a multiply and a mask per stage and sample.  There is no
    CMSIS-DSP counterpart; the tests check it against a float reference and
    that both kernels agree bit for bit.

    Scaling and overflow: input Q15; products Q30 (2.30 with the
    post-shift) plus the feedback term (``|.| < 2**(16 - post_shift)``),
    summed exactly (64-bit ``wide`` accumulator or the two < 2**30 partial
    sums of ``split``); shifted right by ``15 - post_shift`` (truncation
    toward minus infinity, the remainder fed back as above), then saturated
    to Q15.  A saturated sample feeds back no error (its remainder is set to
    0).  Each stage's Q15 output feeds the next stage.
    """

    def __init__(self, num_stages, coeffs, post_shift, kernel=None):
        super().__init__(num_stages, coeffs, post_shift, kernel)
        # Per stage: e[n-1], e[n-2].
        self._err = [0] * (2 * num_stages)
        # Per stage: 1 for second-order feedback (2 e1 - e2), 0 for first-order (e1).
        self._order2 = [0 if self._c[5 * s + 4] == 0 else 1 for s in range(num_stages)]

    def reset(self):
        super().reset()
        for i in range(len(self._err)):
            self._err[i] = 0

    def prime_dc(self, x):
        """Set the state to the steady state of a constant Q15 input ``x``.

        Each stage's input history becomes its constant input and its output
        history ``floor(B(1) * x / (2**shift - a1 - a2))`` (saturated): exact
        for the high-pass tables (``B(1) == 0``, output 0), within about an
        LSB otherwise.  Removes the start-up transient of a signal that does
        not start at 0.  Runs once, not per sample.
        """
        shift = self._shift
        c = self._c
        st = self._state
        for s in range(self.num_stages):
            b_sum = c[5 * s] + c[5 * s + 1] + c[5 * s + 2]
            den = (1 << shift) - c[5 * s + 3] - c[5 * s + 4]
            y = (b_sum * x) // den if den > 0 else 0
            if y > 32767:
                y = 32767
            elif y < -32768:
                y = -32768
            st[4 * s] = x
            st[4 * s + 1] = x
            st[4 * s + 2] = y
            st[4 * s + 3] = y
            self._err[2 * s] = 0
            self._err[2 * s + 1] = 0
            x = y

    def _wide(self, buf, count):
        shift = self._shift
        mask = (1 << shift) - 1
        c = self._c
        st = self._state
        err = self._err
        for s in range(self.num_stages):
            b0 = c[5 * s]
            b1 = c[5 * s + 1]
            b2 = c[5 * s + 2]
            a1 = c[5 * s + 3]
            a2 = c[5 * s + 4]
            x1 = st[4 * s]
            x2 = st[4 * s + 1]
            y1 = st[4 * s + 2]
            y2 = st[4 * s + 3]
            e1 = err[2 * s]
            e2 = err[2 * s + 1]
            k = self._order2[s]
            for n in range(count):
                x = buf[n]
                acc = b0 * x + b1 * x1 + b2 * x2 + a1 * y1 + a2 * y2 + e1 + k * (e1 - e2)
                y = acc >> shift
                e2 = e1
                e1 = acc & mask
                if y > 32767:
                    y = 32767
                    e1 = 0
                elif y < -32768:
                    y = -32768
                    e1 = 0
                buf[n] = y
                x2 = x1
                x1 = x
                y2 = y1
                y1 = y
            st[4 * s] = x1
            st[4 * s + 1] = x2
            st[4 * s + 2] = y1
            st[4 * s + 3] = y2
            err[2 * s] = e1
            err[2 * s + 1] = e2

    def _split(self, buf, count):
        # As BiquadCascadeQ15._split; the remainder of the full sum
        # 256 * t + (acc_l & 255), t = acc_h + (acc_l >> 8), below 2**shift is
        # ((t & mask) << 8) | (acc_l & 255): the same value as the wide kernel's.
        shift = self._shift - 8
        mask = (1 << shift) - 1
        hi = self._hi
        lo = self._lo
        st = self._state
        err = self._err
        for s in range(self.num_stages):
            h0 = hi[5 * s]
            h1 = hi[5 * s + 1]
            h2 = hi[5 * s + 2]
            h3 = hi[5 * s + 3]
            h4 = hi[5 * s + 4]
            l0 = lo[5 * s]
            l1 = lo[5 * s + 1]
            l2 = lo[5 * s + 2]
            l3 = lo[5 * s + 3]
            l4 = lo[5 * s + 4]
            x1 = st[4 * s]
            x2 = st[4 * s + 1]
            y1 = st[4 * s + 2]
            y2 = st[4 * s + 3]
            e1 = err[2 * s]
            e2 = err[2 * s + 1]
            k = self._order2[s]
            for n in range(count):
                x = buf[n]
                acc_h = h0 * x + h1 * x1 + h2 * x2 + h3 * y1 + h4 * y2
                acc_l = l0 * x + l1 * x1 + l2 * x2 + l3 * y1 + l4 * y2 + e1 + k * (e1 - e2)
                t = acc_h + (acc_l >> 8)
                y = t >> shift
                e2 = e1
                e1 = ((t & mask) << 8) | (acc_l & 0xFF)
                if y > 32767:
                    y = 32767
                    e1 = 0
                elif y < -32768:
                    y = -32768
                    e1 = 0
                buf[n] = y
                x2 = x1
                x1 = x
                y2 = y1
                y1 = y
            st[4 * s] = x1
            st[4 * s + 1] = x2
            st[4 * s + 2] = y1
            st[4 * s + 3] = y2
            err[2 * s] = e1
            err[2 * s + 1] = e2


class FirQ15:
    """FIR filter, Q15, as CMSIS-DSP ``arm_fir_q15``: ``y[n] = sum b[k] x[n-k]``.

    ``coeffs``: 1 .. ``FIR_MAX_TAPS`` Q15 ints in natural (scipy ``lfilter``)
    order ``b[0], b[1], ..., b[N-1]``, ``b[0]`` weighting the newest sample.
    CMSIS-DSP stores the same filter time-reversed (``pCoeffs = {b[N-1], ...,
    b[0]}``) and wants an even ``numTaps >= 4``: pad with zeros at the front of
    ``pCoeffs`` (``b[N] = 0``, no extra delay); the results are identical.
    The last ``N - 1`` inputs are kept between calls in a ring buffer made at
    init (two copies, so each output reads one contiguous window).

    Scaling and overflow: input and coefficients Q15; products Q30 (2.30),
    accumulated exactly with no intermediate saturation (CMSIS: a 64-bit
    34.30 accumulator; here CPython's ints for ``wide``, or for ``split`` the
    coefficients split as in :class:`BiquadCascadeQ15` into two partial sums
    below 2**30 for up to 128 taps); the sum is truncated to 34.15 by ``>> 15``
    (toward minus infinity, no rounding) and saturated to Q15.
    """

    def __init__(self, coeffs, kernel=None):
        n = len(coeffs)
        if not 1 <= n <= FIR_MAX_TAPS:
            raise ValueError("an FIR needs 1..%d coefficients, got %d" % (FIR_MAX_TAPS, n))
        _check_q15_ints(coeffs, "coefficient")
        self.kernel = _check_kernel(kernel)
        self.num_taps = n
        self._c = [int(c) for c in coeffs]
        self._hi = [c >> 8 for c in self._c]
        self._lo = [c & 0xFF for c in self._c]
        self._hist = [0] * (2 * n)
        self._pos = 0

    def reset(self):
        for i in range(len(self._hist)):
            self._hist[i] = 0
        self._pos = 0

    def process(self, samples):
        """Filter a block of Q15 ints; return a new list of Q15 ints."""
        out = list(samples)
        self.process_inplace(out, len(out))
        return out

    def process_inplace(self, buf, count):
        """Filter ``buf[0:count]`` in place (a list or ``array('h')``): no allocation."""
        if self.kernel == "wide":
            self._wide(buf, count)
        else:
            self._split(buf, count)

    def _wide(self, buf, count):
        c = self._c
        h = self._hist
        n = self.num_taps
        p = self._pos
        for i in range(count):
            x = buf[i]
            h[p] = x
            h[p + n] = x
            acc = 0
            j = p
            for k in range(n):
                acc += c[k] * h[j]
                j += 1
            y = acc >> 15
            if y > 32767:
                y = 32767
            elif y < -32768:
                y = -32768
            buf[i] = y
            p -= 1
            if p < 0:
                p = n - 1
        self._pos = p

    def _split(self, buf, count):
        # 128 taps: |sum hi*x| <= 128 * 128 * 32768 = 2**29 and
        # |sum lo*x| <= 128 * 255 * 32768 < 2**30: both small ints.
        hi = self._hi
        lo = self._lo
        h = self._hist
        n = self.num_taps
        p = self._pos
        for i in range(count):
            x = buf[i]
            h[p] = x
            h[p + n] = x
            acc_h = 0
            acc_l = 0
            j = p
            for k in range(n):
                v = h[j]
                acc_h += hi[k] * v
                acc_l += lo[k] * v
                j += 1
            y = (acc_h + (acc_l >> 8)) >> 7
            if y > 32767:
                y = 32767
            elif y < -32768:
                y = -32768
            buf[i] = y
            p -= 1
            if p < 0:
                p = n - 1
        self._pos = p


class Derivative5Q15:
    """Pan-Tompkins five-point derivative: ``y[n] = (2x[n] + x[n-1] - x[n-3] - 2x[n-4]) / 8``.

    The causal form of Pan & Tompkins' (1985) derivative.  Group delay 2 samples
    at every frequency (antisymmetric FIR).  Gain ``(2 sin 2w + sin w) / 4``:
    1.25 w (a differentiator) at low frequencies, peaking at 0.68 near
    0.14 fs (50 Hz at 360 Hz, 34 Hz at 250 Hz).
    Bit-identical to ``FirQ15((8192, 4096, 0, -4096, -8192))``: the
    Q15 coefficients are the taps times 2**12, and ``(4096 * s) >> 15 == s >> 3``.

    Scaling and overflow: input Q15 (ints in -32768..32767); the sum of the
    four taps is exact (``|sum| <= 6 * 32768``); ``>> 3`` truncates toward
    minus infinity; the output is Q15 with ``|y| <= DERIVATIVE5_MAX = 24576``,
    so it never saturates, and ``y * y < 2**30`` (a small int).
    """

    def __init__(self):
        self._st = [0, 0, 0, 0]  # x[n-1], x[n-2], x[n-3], x[n-4]

    def reset(self):
        for i in range(4):
            self._st[i] = 0

    def process(self, samples):
        out = list(samples)
        self.process_inplace(out, len(out))
        return out

    def process_inplace(self, buf, count):
        st = self._st
        x1 = st[0]
        x2 = st[1]
        x3 = st[2]
        x4 = st[3]
        for i in range(count):
            x = buf[i]
            buf[i] = (x + x + x1 - x3 - x4 - x4) >> 3
            x4 = x3
            x3 = x2
            x2 = x1
            x1 = x
        st[0] = x1
        st[1] = x2
        st[2] = x3
        st[3] = x4


def square_shift_bits(input_max, window_samples):
    """Smallest right shift for :class:`SquareQ15` so that a
    :class:`MovingWindowIntegrator` of ``window_samples`` over the squares of
    inputs up to ``input_max`` in magnitude stays below 2**30.

    E.g. after :class:`Derivative5Q15` (``input_max = DERIVATIVE5_MAX``): 5 for
    windows up to 56 samples (150 ms at 360 Hz is 54), 4 up to 28.
    """
    if not isinstance(input_max, int) or not 1 <= input_max <= Q15_MAX:
        raise ValueError("input_max must be an int in 1..32767, got %r" % (input_max,))
    if not isinstance(window_samples, int) or window_samples < 1:
        raise ValueError("window_samples must be a positive int, got %r" % (window_samples,))
    sq = input_max * input_max
    w = window_samples if window_samples > 1 else 2
    s = 0
    while w * (sq >> s) > SMALL_INT_MAX:
        s += 1
    return s


class SquareQ15:
    """Pan-Tompkins squaring: ``y[n] = x[n]**2 >> shift_bits``.

    Scaling and overflow: input Q15, clamped to -32767..32767 first (so
    ``x * x <= 32767**2 < 2**30``; -32768 would make 2**30, a long int on
    MicroPython; the clamp changes that one input by 1 LSB); the square is
    Q30 (exact), truncated by ``>> shift_bits`` (toward zero: it is
    non-negative) to Q(30 - shift_bits), ``0 <= y < 2**(30 - shift_bits)``.
    No saturation.  The output outgrows ``array('h')`` for ``shift_bits <
    15``: process lists or ``array('i')``.  Choose ``shift_bits`` with
    :func:`square_shift_bits` to keep a following moving-window sum small.
    """

    def __init__(self, shift_bits):
        if not isinstance(shift_bits, int) or isinstance(shift_bits, bool) or not (
            0 <= shift_bits <= 30
        ):
            raise ValueError("shift_bits must be an int in 0..30, got %r" % (shift_bits,))
        self.shift_bits = shift_bits

    def reset(self):
        pass

    def process(self, samples):
        out = list(samples)
        self.process_inplace(out, len(out))
        return out

    def process_inplace(self, buf, count):
        s = self.shift_bits
        for i in range(count):
            x = buf[i]
            if x < -32767:
                x = -32767
            elif x > 32767:
                x = 32767
            buf[i] = (x * x) >> s


class MovingWindowIntegrator:
    """Pan-Tompkins moving-window integration: the sum of the last ``window_samples`` inputs.

    A running sum over a ring buffer made at init (``window_samples`` ints):
    each sample costs one add and one subtract, whatever the window.  The
    first ``window_samples - 1`` outputs sum over the zeros the window starts
    with.  Group delay ``(window_samples - 1) / 2`` samples.

    Scaling and overflow: input any integer format (e.g. Q(30 - s) from
    :class:`SquareQ15`) clamped to ``-input_max .. input_max``; the sum is
    exact, in the input's format times ``window_samples`` (no division: scale
    thresholds instead), and ``|y| <= window_samples * input_max``.  The
    constructor raises ValueError unless ``max(window_samples, 2) *
    input_max < 2**30``, so every value stays a MicroPython small int.  No
    rounding, no saturation.
    """

    def __init__(self, window_samples, input_max):
        if (
            not isinstance(window_samples, int)
            or isinstance(window_samples, bool)
            or window_samples < 1
        ):
            raise ValueError("window_samples must be a positive int, got %r" % (window_samples,))
        if not isinstance(input_max, int) or isinstance(input_max, bool) or input_max < 1:
            raise ValueError("input_max must be a positive int, got %r" % (input_max,))
        w = window_samples if window_samples > 1 else 2
        if input_max > SMALL_INT_MAX // w:
            raise ValueError(
                "window_samples * input_max must stay below 2**30: %d * %d is too large"
                % (window_samples, input_max)
            )
        self.window_samples = window_samples
        self.input_max = input_max
        self._ring = [0] * window_samples
        self._pos = 0
        self._sum = 0

    def reset(self):
        for i in range(self.window_samples):
            self._ring[i] = 0
        self._pos = 0
        self._sum = 0

    def process(self, samples):
        out = list(samples)
        self.process_inplace(out, len(out))
        return out

    def process_inplace(self, buf, count):
        ring = self._ring
        w = self.window_samples
        lim = self.input_max
        neg = -lim
        p = self._pos
        acc = self._sum
        for i in range(count):
            x = buf[i]
            if x > lim:
                x = lim
            elif x < neg:
                x = neg
            acc += x - ring[p]
            ring[p] = x
            p += 1
            if p == w:
                p = 0
            buf[i] = acc
        self._pos = p
        self._sum = acc
