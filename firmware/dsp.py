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
"""

from firmware.compat import IS_MICROPYTHON, const

Q15_MAX = const(32767)
Q15_MIN = const(-32768)


def float_to_q15(x):
    """Round ``x`` (a fraction, nominally -1 .. 1) to Q15, then saturate."""
    v = int(x * 32768.0 + (0.5 if x >= 0 else -0.5))
    if v > Q15_MAX:
        return Q15_MAX
    if v < Q15_MIN:
        return Q15_MIN
    return v


def q15_to_float(v):
    return v / 32768.0


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
