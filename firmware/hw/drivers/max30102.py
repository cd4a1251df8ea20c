"""Maxim MAX30102 pulse oximeter / heart-rate sensor (I2C, address 0x57).

Usage::

    ox = MAX30102(i2c, sample_rate_sps=100, led_current_ma=(7.0, 7.0))
    n = ox.read_fifo(red, ir, 32)   # array('l') / lists of 18-bit counts

The part ID register (0xFF) must read 0x15, else ``OSError``.  Options carry
units: ``sample_rate_sps`` (50..3200), ``sample_average`` (1..32 samples
averaged per FIFO entry), ``pulse_width_us`` (69, 118, 215, 411 -> 15..18 bit
resolution), ``adc_range_na`` (2048..16384 nA full scale) and
``led_current_ma`` (red, IR; 0..51 mA in 0.2 mA steps).  ``mode`` is
``MODE_HR`` (red only) or ``MODE_SPO2`` (red + IR).

:meth:`read_fifo` drains the FIFO with one burst read into a buffer made at
init (no allocation per sample on ``machine.I2C``); ``overflows`` adds up
OVF_COUNTER (samples the part dropped because the FIFO was full).
"""

import errno

from firmware.hw.compat import const
from firmware.hw.drivers.i2c import I2CRegs

DEFAULT_ADDRESS = const(0x57)
PART_ID = const(0x15)
FIFO_DEPTH = const(32)

_REG_INTR_STATUS_1 = const(0x00)
_REG_INTR_ENABLE_1 = const(0x02)
_REG_FIFO_WR_PTR = const(0x04)
_REG_OVF_COUNTER = const(0x05)
_REG_FIFO_RD_PTR = const(0x06)
_REG_FIFO_DATA = const(0x07)
_REG_FIFO_CONFIG = const(0x08)
_REG_MODE_CONFIG = const(0x09)
_REG_SPO2_CONFIG = const(0x0A)
_REG_LED1_PA = const(0x0C)
_REG_LED2_PA = const(0x0D)
_REG_TINT = const(0x1F)
_REG_TFRAC = const(0x20)
_REG_TEMP_CONFIG = const(0x21)
_REG_PART_ID = const(0xFF)

_MODE_RESET = const(0x40)
_MODE_SHUTDOWN = const(0x80)
_ROLLOVER = const(0x10)
_A_FULL = const(0x80)  # A_FULL: the flag in INTR_STATUS_1 and its enable bit

MODE_HR = const(0x02)
MODE_SPO2 = const(0x03)

SAMPLE_RATES_SPS = (50, 100, 200, 400, 800, 1000, 1600, 3200)
SAMPLE_AVERAGES = (1, 2, 4, 8, 16, 32)
PULSE_WIDTHS_US = (69, 118, 215, 411)
ADC_RANGES_NA = (2048, 4096, 8192, 16384)
LED_CURRENT_MAX_MA = 51


def _led_code(ma):
    if not 0 <= ma <= LED_CURRENT_MAX_MA:
        raise ValueError("MAX30102: led_current_ma must be 0..51 mA, got %r" % (ma,))
    return int(ma * 5 + 0.5)


class MAX30102:
    def __init__(self, bus, address=DEFAULT_ADDRESS, mode=MODE_SPO2, sample_rate_sps=100,
                 sample_average=1, pulse_width_us=411, adc_range_na=4096,
                 led_current_ma=(7.0, 7.0), fifo_almost_full=15, rollover=False, retries=3):
        for name, value, allowed in (
            ("sample_rate_sps", sample_rate_sps, SAMPLE_RATES_SPS),
            ("sample_average", sample_average, SAMPLE_AVERAGES),
            ("pulse_width_us", pulse_width_us, PULSE_WIDTHS_US),
            ("adc_range_na", adc_range_na, ADC_RANGES_NA),
        ):
            if value not in allowed:
                raise ValueError("MAX30102: %s must be one of %s, got %r" % (name, allowed, value))
        if mode not in (MODE_HR, MODE_SPO2):
            raise ValueError("MAX30102: mode must be MODE_HR or MODE_SPO2")
        if not 0 <= fifo_almost_full <= 15:
            raise ValueError("MAX30102: fifo_almost_full must be 0..15 free slots")
        red_code = _led_code(led_current_ma[0])
        ir_code = _led_code(led_current_ma[1])
        self._regs = I2CRegs(bus, address, "MAX30102", retries)
        part = self._regs.read_u8(_REG_PART_ID)
        if part != PART_ID:
            raise OSError(errno.ENODEV, "MAX30102 at 0x%02x: part ID 0x%02x, expected 0x%02x"
                          % (address, part, PART_ID))
        self._regs.write_u8(_REG_MODE_CONFIG, _MODE_RESET)
        self._regs.read_u8(_REG_INTR_STATUS_1)  # clears PWR_RDY
        self.leds = 1 if mode == MODE_HR else 2
        self.sample_rate_sps = sample_rate_sps // sample_average  # FIFO entry rate
        self.resolution_bits = 15 + PULSE_WIDTHS_US.index(pulse_width_us)
        config = (
            (_REG_FIFO_CONFIG, (SAMPLE_AVERAGES.index(sample_average) << 5)
             | (_ROLLOVER if rollover else 0) | fifo_almost_full),
            (_REG_SPO2_CONFIG, (ADC_RANGES_NA.index(adc_range_na) << 5)
             | (SAMPLE_RATES_SPS.index(sample_rate_sps) << 2)
             | PULSE_WIDTHS_US.index(pulse_width_us)),
            (_REG_LED1_PA, red_code),
            (_REG_LED2_PA, ir_code),
            (_REG_INTR_ENABLE_1, _A_FULL),
        )
        for reg, value in config:
            self._regs.write_u8(reg, value)
            if self._regs.read_u8(reg) != value:
                raise OSError(errno.EIO, "MAX30102 at 0x%02x: register 0x%02x did not take 0x%02x"
                              % (address, reg, value))
        self.clear_fifo()
        self._mode = mode
        self._regs.write_u8(_REG_MODE_CONFIG, mode)
        self.overflows = 0
        self._ptrs = bytearray(7)  # INTR_STATUS_1 .. FIFO_RD_PTR
        self._left = 0  # samples the last read_fifo left in the FIFO
        self._ovf_seen = 0  # OVF_COUNTER already added to overflows (no pop since)
        self.last_interrupts = 0
        frame = 3 * self.leds
        self._fifo = bytearray(FIFO_DEPTH * frame)
        mv = memoryview(self._fifo)
        self._views = [mv[: k * frame] for k in range(FIFO_DEPTH + 1)]

    def clear_fifo(self):
        self._left = 0
        self._ovf_seen = 0
        self._regs.write_u8(_REG_FIFO_WR_PTR, 0)
        self._regs.write_u8(_REG_OVF_COUNTER, 0)
        self._regs.write_u8(_REG_FIFO_RD_PTR, 0)

    def set_led_current_ma(self, red_ma, ir_ma):
        self._regs.write_u8(_REG_LED1_PA, _led_code(red_ma))
        self._regs.write_u8(_REG_LED2_PA, _led_code(ir_ma))

    def shutdown(self, off=True):
        self._regs.write_u8(_REG_MODE_CONFIG, (_MODE_SHUTDOWN if off else 0) | self._mode)

    def read_interrupts(self):
        """INTR_STATUS_1 (A_FULL 0x80, PPG_RDY 0x40, ALC_OVF 0x20); reading clears it."""
        return self._regs.read_u8(_REG_INTR_STATUS_1)

    def available(self):
        """Samples waiting in the FIFO.

        One burst reads INTR_STATUS_1/2 (which clears them; kept in
        ``last_interrupts``), the enables, FIFO_WR_PTR, OVF_COUNTER and
        FIFO_RD_PTR, and adds OVF_COUNTER to ``overflows``.  The count is
        ``WR_PTR - RD_PTR`` modulo 32, except that equal pointers mean a full
        FIFO, not an empty one, when samples were lost (OVF_COUNTER > 0), when
        the last read left samples behind (none can vanish without an
        overflow), or when A_FULL fired since the previous call (the FIFO
        filled from empty past the almost-full mark)."""
        p = self._ptrs
        self._regs.read_into(_REG_INTR_STATUS_1, p)
        self.last_interrupts = p[0]
        ovf = p[5] & 0x1F  # reset by the part when a sample is popped
        self.overflows += ovf - self._ovf_seen
        self._ovf_seen = ovf
        n = (p[4] - p[6]) & (FIFO_DEPTH - 1)
        if n == 0 and (ovf or self._left or p[0] & _A_FULL):
            n = FIFO_DEPTH
        return n

    def read_fifo(self, red, ir, max_count):
        """Move up to ``max_count`` samples into ``red[0:n]`` (and ``ir[0:n]`` in SpO2
        mode; ``ir`` may be None in HR mode); return ``n``.  Counts are 18-bit,
        left-justified: at 15..17 bit resolution the low bits are 0."""
        avail = self.available()
        n = avail if avail < max_count else max_count
        if n < 0:
            n = 0
        self._left = avail - n
        if n == 0:
            return 0
        self._regs.read_into(_REG_FIFO_DATA, self._views[n])
        self._ovf_seen = 0
        f = self._fifo
        step = 3 * self.leds
        j = 0
        for i in range(n):
            red[i] = ((f[j] & 0x03) << 16) | (f[j + 1] << 8) | f[j + 2]
            if self.leds == 2:
                ir[i] = ((f[j + 3] & 0x03) << 16) | (f[j + 4] << 8) | f[j + 5]
            j += step
        return n

    def start_die_temperature(self):
        self._regs.write_u8(_REG_TEMP_CONFIG, 0x01)

    def die_temperature_ready(self):
        return not self._regs.read_u8(_REG_TEMP_CONFIG) & 0x01

    def read_die_temperature_mc(self):
        """Die temperature in milli-degrees Celsius: TINT + TFRAC * 0.0625."""
        tint = self._regs.read_u8(_REG_TINT)
        if tint & 0x80:
            tint -= 256
        return tint * 1000 + (self._regs.read_u8(_REG_TFRAC) & 0x0F) * 625 // 10
