"""TI ADS1115 16-bit ADC (I2C) with PGA, single-shot and continuous modes.

Usage::

    adc = ADS1115(i2c, data_rate_sps=250, full_scale_mv=2048, mux=MUX_AIN0_AIN1,
                  continuous=True, ready_pin=True)
    adc.read_conversion()          # latest code, -32768..32767
    adc.read_uv()                  # the same in microvolts

The ADS1115 has no ID register: the driver checks that the Config register
reads back what it wrote (``OSError`` naming the part otherwise).
``ready_pin=True`` sets Hi_thresh MSB 1 / Lo_thresh MSB 0 and COMP_QUE 00,
which turns ALERT/RDY into a conversion-ready output (a pulse per
conversion in continuous mode): wire it to a pin with an ``irq``.
"""

import errno

from firmware.hw.compat import const, sleep_ms
from firmware.hw.drivers.i2c import I2CRegs

DEFAULT_ADDRESS = const(0x48)

_REG_CONVERSION = const(0x00)
_REG_CONFIG = const(0x01)
_REG_LO_THRESH = const(0x02)
_REG_HI_THRESH = const(0x03)

_OS = const(0x8000)
_MODE_SINGLE = const(0x0100)
_COMP_QUE_OFF = const(0x0003)

# MUX settings: differential pairs, or one input against GND.
MUX_AIN0_AIN1 = const(0)
MUX_AIN0_AIN3 = const(1)
MUX_AIN1_AIN3 = const(2)
MUX_AIN2_AIN3 = const(3)
MUX_AIN0_GND = const(4)
MUX_AIN1_GND = const(5)
MUX_AIN2_GND = const(6)
MUX_AIN3_GND = const(7)

DATA_RATES_SPS = (8, 16, 32, 64, 128, 250, 475, 860)
FULL_SCALES_MV = (6144, 4096, 2048, 1024, 512, 256)


class ADS1115:
    def __init__(self, bus, address=DEFAULT_ADDRESS, data_rate_sps=128, full_scale_mv=2048,
                 mux=MUX_AIN0_GND, continuous=False, ready_pin=False, retries=3,
                 sleep=sleep_ms):
        if data_rate_sps not in DATA_RATES_SPS:
            raise ValueError("ADS1115: data_rate_sps must be one of %s, got %r"
                             % (DATA_RATES_SPS, data_rate_sps))
        if full_scale_mv not in FULL_SCALES_MV:
            raise ValueError("ADS1115: full_scale_mv must be one of %s, got %r"
                             % (FULL_SCALES_MV, full_scale_mv))
        if not isinstance(mux, int) or not 0 <= mux <= 7:
            raise ValueError("ADS1115: mux must be one of the MUX_* constants")
        self._regs = I2CRegs(bus, address, "ADS1115", retries)
        self._sleep = sleep
        self.data_rate_sps = data_rate_sps
        self.full_scale_mv = full_scale_mv
        self.continuous = continuous
        #: Microvolts per code = full_scale_uv / 32768 (kept as a ratio).
        self.full_scale_uv = full_scale_mv * 1000
        self.conversion_ms = (1000 + data_rate_sps - 1) // data_rate_sps
        config = ((mux << 12) | (FULL_SCALES_MV.index(full_scale_mv) << 9)
                  | (DATA_RATES_SPS.index(data_rate_sps) << 5))
        if continuous:
            config &= ~_MODE_SINGLE
        else:
            config |= _MODE_SINGLE
        if ready_pin:
            self._regs.write_u16(_REG_HI_THRESH, 0x8000)
            self._regs.write_u16(_REG_LO_THRESH, 0x0000)
        else:
            config |= _COMP_QUE_OFF
        self._config = config
        self._regs.write_u16(_REG_CONFIG, config)
        got = self._regs.read_u16(_REG_CONFIG) & 0x7FFF
        if got != config:
            raise OSError(errno.EIO, "ADS1115 at 0x%02x: config 0x%04x read back as 0x%04x"
                          " (no ADS1115 there?)" % (address, config, got))

    def start_conversion(self):
        """Single-shot mode: start one conversion (takes ``conversion_ms``)."""
        self._regs.write_u16(_REG_CONFIG, self._config | _OS)

    def conversion_ready(self):
        """Single-shot mode: True when no conversion is in progress (OS bit 1)."""
        return bool(self._regs.read_u16(_REG_CONFIG) & _OS)

    def read_conversion(self):
        """The Conversion register: a signed code, full scale = +-``full_scale_mv``."""
        return self._regs.read_s16(_REG_CONVERSION)

    def read_raw(self):
        """One conversion: in single-shot mode start it, wait (bounded), read it."""
        if self.continuous:
            return self.read_conversion()
        self.start_conversion()
        for _ in range(4):
            self._sleep(self.conversion_ms)
            if self.conversion_ready():
                return self.read_conversion()
        raise OSError(errno.ETIMEDOUT, "ADS1115: conversion did not complete")

    def read_uv(self):
        """One conversion in microvolts (int, rounded)."""
        code = self.read_raw()
        # code * fs_uv can exceed a small int: split fs_uv = q * 32768 + r.
        q, r = divmod(self.full_scale_uv, 32768)
        return code * q + (code * r + 16384) // 32768
