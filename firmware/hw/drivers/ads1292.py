"""TI ADS1292 / ADS1292R two-channel 24-bit ECG front end (SPI mode 1).

Usage::

    afe = ADS1292(spi, cs, drdy, data_rate_sps=250, gain=(6, 6))
    afe.start()                       # START + RDATAC
    if afe.read_frame():              # DRDY was low: a new frame
        afe.ch2, afe.lead_off         # 24-bit code, LOFF_STAT[4:0]

``spi`` is a ``machine.SPI`` (write/readinto/write_readinto), ``cs`` and
``drdy`` ``machine.Pin``-like (``value()``).  The driver reconfigures the bus
for mode 1 (CPOL 0, CPHA 1) when it has ``init``, as micropython-lib's sdcard
driver does.  The ID register must read 0x53 (ADS1292) or 0x73 (ADS1292R),
else ``OSError``; every register written is read back (``OSError`` if it did
not take).

A frame is 9 bytes: status ``1100 LOFF_STAT[4:0] GPIO[1:0]`` + 13 zeros,
then channel 1 and channel 2 (24-bit two's complement, MSB first); one
code is ``2 * VREF / gain / 2**24`` volts (``vref_uv`` / ``gain``).  A frame
whose status does not start with 1100 is counted in ``bad_frames`` and
dropped.
"""

import errno

from firmware.hw.compat import const, sleep_ms

ID_ADS1292 = const(0x53)
ID_ADS1292R = const(0x73)

_CMD_RESET = const(0x06)
_CMD_START = const(0x08)
_CMD_STOP = const(0x0A)
_CMD_RDATAC = const(0x10)
_CMD_SDATAC = const(0x11)
_CMD_RREG = const(0x20)
_CMD_WREG = const(0x40)

_REG_ID = const(0x00)
_REG_CONFIG1 = const(0x01)
_REG_CONFIG2 = const(0x02)
_REG_LOFF = const(0x03)
_REG_CH1SET = const(0x04)
_REG_RLD_SENS = const(0x06)
_REG_LOFF_SENS = const(0x07)

_CONFIG2_BASE = const(0xA0)  # bit 7 reads 1, PDB_REFBUF on
_PDB_LOFF_COMP = const(0x40)
_VREF_4V = const(0x10)
_FRAME_BYTES = const(9)

DATA_RATES_SPS = (125, 250, 500, 1000, 2000, 4000, 8000)
GAINS = (6, 1, 2, 3, 4, 8, 12)
VREF_UV = const(2420000)
VREF_4V_UV = const(4033000)


class ADS1292:
    def __init__(self, spi, cs, drdy=None, data_rate_sps=250, gain=(6, 6), vref_4v=False,
                 lead_off_detect=True, baudrate=1000000, sleep=sleep_ms):
        if not hasattr(spi, "write_readinto"):
            raise ValueError("ADS1292: spi must look like machine.SPI")
        if data_rate_sps not in DATA_RATES_SPS:
            raise ValueError("ADS1292: data_rate_sps must be one of %s, got %r"
                             % (DATA_RATES_SPS, data_rate_sps))
        for g in gain:
            if g not in GAINS:
                raise ValueError("ADS1292: gain must be one of %s, got %r" % (GAINS, g))
        if len(gain) != 2:
            raise ValueError("ADS1292: gain is (channel 1, channel 2)")
        self._spi = spi
        self._cs = cs
        self.drdy = drdy
        self._sleep = sleep
        self.data_rate_sps = data_rate_sps
        self.gain = (gain[0], gain[1])
        self.vref_uv = VREF_4V_UV if vref_4v else VREF_UV
        self._cmd = bytearray(1)
        self._reg = bytearray(3)
        self._frame = bytearray(_FRAME_BYTES)
        self._zeros = bytearray(_FRAME_BYTES)
        self.status = 0
        self.lead_off = 0  # LOFF_STAT[4:0] of the last frame (1 = electrode off)
        self.ch1 = 0
        self.ch2 = 0
        self.frames = 0
        self.bad_frames = 0
        if hasattr(spi, "init"):
            spi.init(baudrate=baudrate, polarity=0, phase=1)
        cs.value(1)
        self.command(_CMD_RESET)
        sleep(1)
        self.command(_CMD_SDATAC)
        self.device_id = self.read_register(_REG_ID)
        if self.device_id not in (ID_ADS1292, ID_ADS1292R):
            raise OSError(errno.ENODEV, "ADS1292: ID register 0x%02x, expected 0x%02x or 0x%02x"
                          % (self.device_id, ID_ADS1292, ID_ADS1292R))
        loff = _PDB_LOFF_COMP if lead_off_detect else 0
        settings = (
            (_REG_CONFIG1, DATA_RATES_SPS.index(data_rate_sps)),
            (_REG_CONFIG2, _CONFIG2_BASE | loff | (_VREF_4V if vref_4v else 0)),
            (_REG_LOFF, 0x10),  # 95 % / 5 % comparator threshold, 6 nA, DC lead-off
            (_REG_CH1SET, GAINS.index(gain[0]) << 4),
            (_REG_CH1SET + 1, GAINS.index(gain[1]) << 4),
            (_REG_RLD_SENS, 0x20 if lead_off_detect else 0x00),
            (_REG_LOFF_SENS, 0x0F if lead_off_detect else 0x00),
        )
        for reg, value in settings:
            self.write_register(reg, value)
            got = self.read_register(reg)
            if got != value:
                raise OSError(errno.EIO, "ADS1292: register 0x%02x reads 0x%02x, wrote 0x%02x"
                              % (reg, got, value))

    def command(self, opcode):
        self._cmd[0] = opcode
        self._cs.value(0)
        self._spi.write(self._cmd)
        self._cs.value(1)

    def read_register(self, reg):
        """RREG one register (SDATAC mode)."""
        r = self._reg
        r[0] = _CMD_RREG | reg
        r[1] = 0
        r[2] = 0
        self._cs.value(0)
        self._spi.write_readinto(r, r)
        self._cs.value(1)
        return r[2]

    def write_register(self, reg, value):
        r = self._reg
        r[0] = _CMD_WREG | reg
        r[1] = 0
        r[2] = value
        self._cs.value(0)
        self._spi.write(r)
        self._cs.value(1)

    def start(self):
        """Start conversions and enter read-data-continuous mode."""
        self.command(_CMD_START)
        self.command(_CMD_RDATAC)

    def stop(self):
        self.command(_CMD_SDATAC)
        self.command(_CMD_STOP)

    def read_frame(self):
        """Read one frame (RDATAC).  With a DRDY pin, return False without touching
        the bus when no new frame is ready; True when ``ch1``/``ch2``/``lead_off``
        were updated, False for a frame with a bad status header."""
        if self.drdy is not None and self.drdy.value():
            return False
        f = self._frame
        self._cs.value(0)
        self._spi.write_readinto(self._zeros, f)
        self._cs.value(1)
        if f[0] & 0xF0 != 0xC0:
            self.bad_frames += 1
            return False
        self.status = (f[0] << 16) | (f[1] << 8) | f[2]
        self.lead_off = (self.status >> 15) & 0x1F
        c1 = (f[3] << 16) | (f[4] << 8) | f[5]
        c2 = (f[6] << 16) | (f[7] << 8) | f[8]
        self.ch1 = c1 - 0x1000000 if c1 & 0x800000 else c1
        self.ch2 = c2 - 0x1000000 if c2 & 0x800000 else c2
        self.frames += 1
        return True
