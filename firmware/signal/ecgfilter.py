"""The device's ECG filter chain: raw ADC counts in, clean Q15 ECG out.

Per sample: input scaling to Q15, baseline-wander removal (0.5 Hz high-pass,
``firmware.signal.filters`` ``"baseline"``, with error feedback), then the mains notch
(``"notch50"`` or ``"notch60"``, plain CMSIS DF1).  The QRS band-pass for the
detector is available too (:func:`make_filter`, :meth:`EcgFilterChain.qrs_bandpass`).

Input scaling.  A raw sample ``r`` (an int from the ADC) becomes
``(r - adc_zero) << input_shift_bits``, clamped to -32768..32767; each
clamped sample is counted in ``EcgFilterChain.clamped``.  The default,
``ECG_INPUT_SHIFT_BITS = 4``, suits a 200 counts/mV front end (MIT-BIH's
11-bit records with ``adc_zero = 1024``, the simulator's signed 16-bit ADC
with ``adc_zero = 0``): 1 mV = 3200 LSB, full scale +-10.24 mV, so the
11-bit range (+-1024 counts, +-5.12 mV) fills half of Q15 and leaves 6 dB
of headroom for filter overshoot; the simulator's counts beyond +-2048 are
clamped and counted.  A 16-bit signed ADC at full scale uses shift 0.

Output: Q15 in the input's scale (the filters have 0 dB passband gain), so
``mV = out / (counts_per_mV << input_shift_bits)``.  Delay: about 0.3-0.4
samples of group delay at 10 Hz, see ``firmware.signal.filters.group_delay_samples``.

Start-up: the first sample primes the high-pass to the steady state of a
constant input equal to it (:meth:`BiquadCascadeEfQ15.prime_dc`), so a
signal that starts away from 0 (electrode offset) does not ring for seconds.
"""

from firmware.params import (
    ECG_INPUT_SHIFT_BITS,
    check_mains_hz,
    check_sample_rate_hz,
)
from firmware.signal.filters import make_filter, table


class EcgFilterChain:
    """Raw ADC counts -> Q15 ECG without baseline wander and mains hum.

    ``fs_hz`` (250 or 360) and ``mains_hz`` (50 or 60) are required: a
    missing (None) or unsupported value raises ValueError, never a silent
    default.  ``adc_zero`` and ``input_shift_bits`` (0..15) set the input
    scaling described in the module docstring.  ``kernel`` is passed to the
    filters (None: ``"split"`` on MicroPython, ``"wide"`` on CPython; the
    outputs are identical).

    Scaling and overflow: input any int; ``r - adc_zero`` is compared with
    the limits ``32767 >> shift`` / ``-32768 >> shift`` before it is shifted,
    so nothing larger than Q15 is ever formed, and out-of-range samples
    saturate to 32767 / -32768 (counted in ``clamped``).  The high-pass
    (:class:`BiquadCascadeEfQ15`) and the notch (:class:`BiquadCascadeQ15`)
    have their own notes: Q15 in and out, exact accumulation, truncation
    (with error feedback in the high-pass), saturation at each stage's
    output.  Both tables peak at 0 dB, so a sinusoid within Q15 never
    saturates; steps larger than half of full scale can (6 dB headroom at
    the default scaling).
    """

    def __init__(
        self,
        fs_hz=None,
        mains_hz=None,
        adc_zero=0,
        input_shift_bits=ECG_INPUT_SHIFT_BITS,
        kernel=None,
    ):
        if fs_hz is None:
            raise ValueError("fs_hz is required (no default sample rate)")
        if mains_hz is None:
            raise ValueError("mains_hz is required (50 or 60; no default)")
        self.fs_hz = check_sample_rate_hz(fs_hz)
        self.mains_hz = check_mains_hz(mains_hz)
        if not isinstance(adc_zero, int) or isinstance(adc_zero, bool):
            raise ValueError("adc_zero must be an int, got %r" % (adc_zero,))
        if (
            not isinstance(input_shift_bits, int)
            or isinstance(input_shift_bits, bool)
            or not 0 <= input_shift_bits <= 15
        ):
            raise ValueError(
                "input_shift_bits must be an int in 0..15, got %r" % (input_shift_bits,)
            )
        self.adc_zero = adc_zero
        self.input_shift_bits = input_shift_bits
        self.kernel = kernel
        # Converted once: the unshifted range that maps into Q15.
        self._in_hi = 32767 >> input_shift_bits
        self._in_lo = -32768 >> input_shift_bits
        self.baseline = make_filter(self.fs_hz, "baseline", kernel)
        self.notch = make_filter(self.fs_hz, "notch%d" % self.mains_hz, kernel)
        #: ``(num_stages, coeffs, post_shift)`` of the detector's QRS band-pass
        #: at this rate (meant for BiquadCascadeEfQ15, see :meth:`qrs_bandpass`).
        self.qrs_bandpass_table = table(self.fs_hz, "qrs_bandpass")
        self.clamped = 0
        self._primed = False

    def reset(self):
        """Back to the state just after construction (``clamped`` back to 0)."""
        self.baseline.reset()
        self.notch.reset()
        self.clamped = 0
        self._primed = False

    def qrs_bandpass(self):
        """A new QRS band-pass filter (5-15 Hz) for this rate and kernel, to run
        on this chain's output."""
        return make_filter(self.fs_hz, "qrs_bandpass", self.kernel)

    def process(self, samples):
        """Filter a block of raw ADC ints; return a new list of Q15 ints."""
        out = list(samples)
        self.process_inplace(out, len(out))
        return out

    def process_inplace(self, buf, count):
        """Filter raw samples ``buf[0:count]`` in place into Q15 (a list or an
        ``array('h')``/``array('i')``): no allocation."""
        zero = self.adc_zero
        shift = self.input_shift_bits
        hi = self._in_hi
        lo = self._in_lo
        clamped = 0
        for i in range(count):
            d = buf[i] - zero
            if d > hi:
                buf[i] = 32767
                clamped += 1
            elif d < lo:
                buf[i] = -32768
                clamped += 1
            else:
                buf[i] = d << shift
        self.clamped += clamped
        if count > 0 and not self._primed:
            self.baseline.prime_dc(buf[0])
            self._primed = True
        self.baseline.process_inplace(buf, count)
        self.notch.process_inplace(buf, count)
