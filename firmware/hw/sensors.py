"""Sample sources built on the sensor drivers (``firmware/hw/drivers``).

Each source has the ``read_samples(buf, max_count) -> int`` surface the
device loop (:mod:`firmware.device`) reads from, so the loop runs on an ECG
front end exactly as on :class:`firmware.hw.sources.ArraySource`:

- :class:`Ads1292EcgSource`: one channel of an ADS1292(R) AFE.
- :class:`Ads1115EcgSource`: an ADS1115 behind an analog ECG front end
  (e.g. an AD8232, gain 100, output referred to its REFOUT on the other
  input of a differential pair).
- :class:`Max30102PpgSource`: the red or IR channel of a MAX30102.
- :class:`Max30102DualSource`: red and IR together (``read_ppg``), for the
  device's vital signs (:mod:`firmware.vitals.monitor`);
  :class:`ArrayPpgSource` plays recorded or simulated red/IR the same way.

The ECG sources deliver the device's raw counts: ``ECG_COUNTS_PER_MV``
(200) counts per millivolt at the electrodes, int16, saturated.  The code ->
count conversion is a :class:`RatioScaler` worked out once at init.

Pacing: a front end without a FIFO (ADS1292, ADS1115) overwrites a result
nobody read before the next conversion.  With ``use_irq=True`` the source
registers a handler on the data-ready pin (``Pin.irq``, falling edge) that
moves every new result into a ring buffer made at init; ``read_samples``
drains the ring.  Without it, ``read_samples`` polls the ready pin and reads
at most the one result that is there (call it at least at the data rate).
``dropped`` counts results lost because the ring was full.
"""

from array import array

from firmware.hw.compat import const
from firmware.hw.sources import SamplePacer, ring_read
from firmware.params import ECG_ADC_MAX_COUNT, ECG_ADC_MIN_COUNT, ECG_COUNTS_PER_MV

_RING = const(256)
_LIMIT = const(32767)  # numerator and denominator bound (15 bits)


def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


class RatioScaler:
    """``y = round(x * num / den)`` for ``|x| < 2**24`` with small ints only.

    Scaling and overflow: ``num/den`` is reduced and, if either term exceeds
    15 bits, replaced at init by the closest continued-fraction convergent
    with both terms <= 32767 (relative error < 1 / den**2, far below one
    output count for 24-bit inputs).  ``|x|`` is split into a high part
    (``x >> 12``, < 2**12) and a low part (< 2**12); every product and
    remainder stays below 2**29, so nothing leaves MicroPython's 31-bit
    small ints and nothing is allocated per sample.  Rounds half away from
    zero; does not saturate (the caller does).  ``num / den`` must be < 32.
    """

    def __init__(self, num, den):
        if num <= 0 or den <= 0:
            raise ValueError("RatioScaler: num and den must be positive")
        g = _gcd(num, den)
        num //= g
        den //= g
        if num > _LIMIT or den > _LIMIT:
            num, den = self._convergent(num, den)
        if num >= 32 * den:
            raise ValueError("RatioScaler: num / den must be below 32")
        self.num = num
        self.den = den

    @staticmethod
    def _convergent(num, den):
        p0, q0, p1, q1 = 0, 1, 1, 0
        a, b = num, den
        while b:
            k = a // b
            p2, q2 = k * p1 + p0, k * q1 + q0
            if p2 > _LIMIT or q2 > _LIMIT:
                break
            p0, q0, p1, q1 = p1, q1, p2, q2
            a, b = b, a - k * b
        if p1 == 0:
            raise ValueError("RatioScaler: ratio too small for 15-bit terms")
        return p1, q1

    def apply(self, x):
        neg = x < 0
        if neg:
            x = -x
        num = self.num
        den = self.den
        p = (x >> 12) * num
        q1 = p // den
        t = ((p - q1 * den) << 12) + (x & 0xFFF) * num
        y = (q1 << 12) + (2 * t + den) // (2 * den)
        return -y if neg else y


def _saturate(v):
    if v > ECG_ADC_MAX_COUNT:
        return ECG_ADC_MAX_COUNT
    if v < ECG_ADC_MIN_COUNT:
        return ECG_ADC_MIN_COUNT
    return v


class _RingSource:
    """A ring buffer of device counts filled by a data-ready handler."""

    def __init__(self, ready_pin, use_irq):
        self._ready = ready_pin
        self._ring = array("h", bytes(2 * _RING))
        self._head = 0
        self._count = 0
        self.dropped = 0
        self.samples = 0
        if use_irq:
            if ready_pin is None:
                raise ValueError("use_irq needs the data-ready pin")
            ready_pin.irq(self._on_ready, trigger=ready_pin.IRQ_FALLING)

    def _push(self, v):
        if self._count == _RING:
            self.dropped += 1
            return
        self._ring[(self._head + self._count) % _RING] = v
        self._count += 1

    def _on_ready(self, pin):
        v = self._sample()
        if v is not None:
            self._push(v)

    def _poll(self):
        return

    def read_samples(self, buf, max_count):
        self._poll()
        n = self._count if self._count < max_count else max_count
        self._head = ring_read(self._ring, self._head, _RING, buf, n)
        self._count -= n
        self.samples += n
        return n


class Ads1292EcgSource(_RingSource):
    """ECG counts from channel ``channel`` (1 or 2) of a started ADS1292 driver."""

    def __init__(self, afe, channel=2, use_irq=False):
        if channel not in (1, 2):
            raise ValueError("channel must be 1 or 2")
        if afe.drdy is None:
            raise ValueError("the ADS1292 driver needs its DRDY pin to tell new frames")
        self.afe = afe
        self._channel = channel
        gain = afe.gain[channel - 1]
        # counts = code * (vref_uv / gain / 2**23) uV * (counts_per_mv / 1000 uV)
        self.scaler = RatioScaler(afe.vref_uv * ECG_COUNTS_PER_MV, gain * 8388608 * 1000)
        self.lead_off = 0
        self._use_irq = use_irq
        _RingSource.__init__(self, afe.drdy, use_irq)

    def _sample(self):
        afe = self.afe
        if not afe.read_frame():
            return None
        self.lead_off = afe.lead_off
        code = afe.ch2 if self._channel == 2 else afe.ch1
        return _saturate(self.scaler.apply(code))

    def _poll(self):
        if not self._use_irq:
            v = self._sample()
            if v is not None:
                self._push(v)


class Ads1115EcgSource(_RingSource):
    """ECG counts from an ADS1115 in continuous mode behind an analog front end
    of voltage gain ``frontend_gain`` (an int, e.g. 100 for an AD8232).

    With ``use_irq`` the ADS1115's ALERT/RDY pin (``ready_pin``, driver made
    with ``ready_pin=True``) triggers each read; otherwise ``clock`` (with
    ``ticks_ms``) paces the reads at the data rate: a
    :class:`firmware.hw.sources.SamplePacer` counts the conversions that came
    due on bounded tick spans, so polling keeps working past the 2**29 ms
    (6.2-day) limit of ``ticks_diff``."""

    def __init__(self, adc, frontend_gain, ready_pin=None, use_irq=False, clock=None):
        if not isinstance(frontend_gain, int) or frontend_gain < 1:
            raise ValueError("frontend_gain must be an int >= 1")
        if not adc.continuous:
            raise ValueError("the ADS1115 must be in continuous mode")
        if not use_irq and clock is None:
            raise ValueError("without use_irq a clock paces the reads")
        self.adc = adc
        self.scaler = RatioScaler(adc.full_scale_uv * ECG_COUNTS_PER_MV,
                                  32768 * frontend_gain * 1000)
        self._pacer = None if use_irq else SamplePacer(clock, adc.data_rate_sps)
        _RingSource.__init__(self, ready_pin, use_irq)

    def _sample(self):
        return _saturate(self.scaler.apply(self.adc.read_conversion()))

    def _poll(self):
        pacer = self._pacer
        if pacer is None:
            return
        due = pacer.due()
        if due:
            # Only the latest conversion is there: one read per poll, the rest are lost.
            self.dropped += due - 1
            self._push(self._sample())


class Max30102PpgSource:
    """Red or IR counts of a MAX30102 (``led`` "red" or "ir"), right-shifted by
    ``shift_bits`` so they fit the caller's buffer (3 for an ``array("h")``: 18 -> 15 bits)."""

    def __init__(self, ox, led="ir", shift_bits=0):
        if led not in ("red", "ir"):
            raise ValueError("led must be 'red' or 'ir'")
        if led == "ir" and ox.leds < 2:
            raise ValueError("the MAX30102 is in heart-rate mode: no IR channel")
        self.ox = ox
        self._ir = led == "ir"
        self._shift = shift_bits
        self._red = array("l", [0] * 32)
        self._irb = array("l", [0] * 32)

    @property
    def overflows(self):
        return self.ox.overflows

    def read_samples(self, buf, max_count):
        n = self.ox.read_fifo(self._red, self._irb if self.ox.leds == 2 else None,
                              max_count if max_count < 32 else 32)
        src = self._irb if self._ir else self._red
        s = self._shift
        for i in range(n):
            buf[i] = src[i] >> s
        return n


class Max30102DualSource:
    """Red and IR together from a MAX30102 in SpO2 mode, for
    :class:`firmware.vitals.monitor.VitalSigns`: ``read_ppg(red, ir, max_count)``
    moves up to ``max_count`` (<= 32) FIFO samples (18-bit counts) into
    ``red``/``ir`` (``array("l")`` of 32, made by the caller once).
    ``sample_rate_hz`` is the FIFO entry rate; ``full_scale_count`` the
    ADC's rail; ``overflows`` the samples the part dropped (FIFO full).
    An I2C fault (OSError) reads as no samples and is counted in ``errors``."""

    def __init__(self, ox):
        if ox.leds < 2:
            raise ValueError("the MAX30102 is in heart-rate mode: no IR channel")
        self.ox = ox
        self.sample_rate_hz = ox.sample_rate_sps
        self.full_scale_count = (1 << 18) - 1
        self.errors = 0

    @property
    def overflows(self):
        return self.ox.overflows

    def read_ppg(self, red, ir, max_count):
        try:
            return self.ox.read_fifo(red, ir, max_count if max_count < 32 else 32)
        except OSError:
            self.errors += 1
            return 0


class ArrayPpgSource:
    """Red and IR light counts played from two sequences at ``sample_rate_hz``,
    paced by ``clock`` (``ticks_ms``) as a live sensor (a recorded or simulated
    PPG; the :meth:`Max30102DualSource.read_ppg` surface)."""

    def __init__(self, red, ir, sample_rate_hz, clock, full_scale_count=(1 << 18) - 1):
        if len(red) != len(ir):
            raise ValueError("red and ir must have the same length")
        self._red = red
        self._ir = ir
        self._pos = 0
        self._owed = 0
        self._pacer = SamplePacer(clock, sample_rate_hz)
        self.sample_rate_hz = sample_rate_hz
        self.full_scale_count = full_scale_count
        self.overflows = 0

    def read_ppg(self, red, ir, max_count):
        pos = self._pos
        left = len(self._ir) - pos
        self._owed += self._pacer.due()
        if self._owed > left:
            self._owed = left
        n = self._owed if self._owed < max_count else max_count
        src_r = self._red
        src_i = self._ir
        for i in range(n):
            red[i] = src_r[pos + i]
            ir[i] = src_i[pos + i]
        self._pos = pos + n
        self._owed -= n
        return n
