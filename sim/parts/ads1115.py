"""TI ADS1115: 16-bit, 4-input delta-sigma ADC with PGA and comparator (I2C).

Registers (datasheet SBAS444, section 9.6), 16 bit, MSB first; a one-byte
write sets the address pointer, a three-byte write sets pointer + register:

- ``0x00`` Conversion (read only): the last result, two's complement.
- ``0x01`` Config (reset 0x8583): OS[15] (write 1: start a single shot;
  read: 0 while converting, 1 when idle), MUX[14:12], PGA[11:9], MODE[8]
  (1 single-shot / power-down, 0 continuous), DR[7:5] (8, 16, 32, 64, 128,
  250, 475, 860 SPS), COMP_MODE[4] (0 traditional, 1 window), COMP_POL[3]
  (0 active low), COMP_LAT[2], COMP_QUE[1:0] (assert after 1, 2, 4
  conversions; 11 disables the comparator, ALERT/RDY high impedance).
- ``0x02`` Lo_thresh (reset 0x8000), ``0x03`` Hi_thresh (reset 0x7FFF).
  Hi_thresh MSB = 1 with Lo_thresh MSB = 0 turns ALERT/RDY into a
  conversion-ready output: one pulse per conversion in continuous mode;
  asserted at the end of a single shot until the next one starts.

Input voltages come from four signals (volts, ``sim.parts``), AIN0..AIN3;
MUX picks a differential pair or one input against GND.  A conversion takes
``1 / DR`` and samples its inputs when it completes.  Code =
``round(V / FS * 32768)`` saturated to -32768..32767 (FS from the PGA:
6.144 4.096 2.048 1.024 0.512 0.256 V).  ``alert`` is a :class:`SimPin` on which
a driver may register an ``irq``.
"""

from __future__ import annotations

from typing import Any, Sequence

from sim.bus import SimPin, SimTime
from sim.parts import as_signal

DEFAULT_ADDRESS = 0x48
CONFIG_RESET = 0x8583
DATA_RATES_SPS = (8, 16, 32, 64, 128, 250, 475, 860)
FULL_SCALE_UV = (6_144_000, 4_096_000, 2_048_000, 1_024_000, 512_000, 256_000, 256_000, 256_000)
#: MUX code -> (positive input, negative input or None for GND)
MUX_INPUTS = ((0, 1), (0, 3), (1, 3), (2, 3), (0, None), (1, None), (2, None), (3, None))

_REG_CONVERSION = 0
_REG_CONFIG = 1
_REG_LO = 2
_REG_HI = 3


def _signed16(v: int) -> int:
    return v - 0x10000 if v & 0x8000 else v


class ADS1115:
    """Register-level ADS1115.  ``inputs``: four signals in volts (AIN0..AIN3)."""

    spi_mode = None

    def __init__(self, clock: Any, inputs: Sequence[Any] = (0.0, 0.0, 0.0, 0.0)) -> None:
        if len(inputs) != 4:
            raise ValueError("ADS1115 has four inputs AIN0..AIN3")
        self._time = SimTime(clock)
        self._t0_us = self._time.now_us()
        self.inputs = [as_signal(s) for s in inputs]
        self.alert = SimPin("ALERT/RDY", 1)
        self.alert.sampler = self.update
        self.conversions = 0  # conversions completed since power-up
        self.overwritten = 0  # continuous results replaced before anyone read them
        self._updating = False
        self.reset()

    def reset(self) -> None:
        self.regs = [0x0000, CONFIG_RESET, 0x8000, 0x7FFF]
        self._pointer = 0
        self._busy_until_us: float | None = None  # single-shot in progress
        self._cont_start_us: int | None = None  # continuous mode: first conversion start
        self._cont_done = 0
        self._unread = False
        self._exceed = 0
        self._alert_active = False
        self._ready_asserted = False
        self.alert.drive(1)

    # -- timing --------------------------------------------------------------
    def _rate_sps(self) -> int:
        return DATA_RATES_SPS[(self.regs[_REG_CONFIG] >> 5) & 7]

    def _period_us(self) -> float:
        return 1e6 / self._rate_sps()

    def update(self) -> None:
        """Complete every conversion whose time has come."""
        if self._updating:
            return  # an ALERT/RDY irq handler reading the result from inside
        self._updating = True
        try:
            self._catch_up()
        finally:
            self._updating = False

    def _catch_up(self) -> None:
        now = self._time.now_us()
        if self._busy_until_us is not None and now >= self._busy_until_us:
            done_at = self._busy_until_us
            self._busy_until_us = None
            self._convert(done_at)
        if self._cont_start_us is not None:
            rate = self._rate_sps()
            due = (now - self._cont_start_us) * rate // 1_000_000
            while self._cont_done < due:
                self._cont_done += 1
                self._convert(self._cont_start_us + self._cont_done * 1e6 / rate)

    def _convert(self, t_us: float) -> None:
        cfg = self.regs[_REG_CONFIG]
        pos, neg = MUX_INPUTS[(cfg >> 12) & 7]
        t_s = (t_us - self._t0_us) / 1e6
        volts = self.inputs[pos](t_s) - (self.inputs[neg](t_s) if neg is not None else 0.0)
        fs_uv = FULL_SCALE_UV[(cfg >> 9) & 7]
        code = round(volts * 1e6 / fs_uv * 32768)
        code = max(-32768, min(32767, code))
        if self._unread and self._cont_start_us is not None:
            self.overwritten += 1
        self.regs[_REG_CONVERSION] = code & 0xFFFF
        self._unread = True
        self.conversions += 1
        self._comparator(code)

    # -- comparator and ALERT/RDY -------------------------------------------
    def _ready_mode(self) -> bool:
        return bool(self.regs[_REG_HI] & 0x8000) and not self.regs[_REG_LO] & 0x8000

    def _active_level(self) -> int:
        return 1 if self.regs[_REG_CONFIG] & 0x0008 else 0

    def _comparator(self, code: int) -> None:
        cfg = self.regs[_REG_CONFIG]
        que = cfg & 3
        if que == 3:
            return
        active = self._active_level()
        if self._ready_mode():
            if self._cont_start_us is not None:  # an 8 us pulse per conversion
                self.alert.drive(active)
                self.alert.drive(1 - active)
            else:
                self._ready_asserted = True
                self.alert.drive(active)
            return
        hi, lo = _signed16(self.regs[_REG_HI]), _signed16(self.regs[_REG_LO])
        window = bool(cfg & 0x0010)
        beyond = code > hi or (window and code < lo)
        self._exceed = self._exceed + 1 if beyond else 0
        if self._exceed >= (1, 2, 4)[que]:
            self._alert_active = True
        elif self._alert_active and not cfg & 0x0004:  # non-latching: clears by itself
            if (window and lo <= code <= hi) or (not window and code < lo):
                self._alert_active = False
        self.alert.drive(active if self._alert_active else 1 - active)

    # -- I2C -----------------------------------------------------------------
    def i2c_write(self, data: bytes) -> int:
        self.update()
        if not data:
            return 0
        self._pointer = data[0] & 3
        if len(data) >= 3:
            self._write_reg(self._pointer, (data[1] << 8) | data[2])
        return len(data)

    def _write_reg(self, reg: int, value: int) -> None:
        if reg == _REG_CONVERSION:
            return  # read only
        if reg != _REG_CONFIG:
            self.regs[reg] = value
            return
        start = bool(value & 0x8000)
        self.regs[_REG_CONFIG] = (value & 0x7FFF) | (self.regs[_REG_CONFIG] & 0x8000)
        now = self._time.now_us()
        if (value & 0x3) == 3:
            self._alert_active = False
            self.alert.drive(1)  # comparator off: the pin is high impedance (pulled up)
        if not value & 0x0100:  # continuous
            self._cont_start_us = now  # a config write restarts the conversion cycle
            self._cont_done = 0
            self._busy_until_us = None
            self.regs[_REG_CONFIG] &= 0x7FFF  # OS reads 0: always converting
            return
        self._cont_start_us = None
        if start and self._busy_until_us is None:
            self._busy_until_us = now + self._period_us()
            self.regs[_REG_CONFIG] &= 0x7FFF
            if self._ready_asserted:
                self._ready_asserted = False
                self.alert.drive(1 - self._active_level())

    def i2c_read(self, n: int) -> bytes:
        self.update()
        reg = self._pointer
        if reg == _REG_CONFIG:
            busy = self._busy_until_us is not None or self._cont_start_us is not None
            value = (self.regs[_REG_CONFIG] & 0x7FFF) | (0 if busy else 0x8000)
        else:
            value = self.regs[reg]
        if reg == _REG_CONVERSION:
            self._unread = False
            if self._alert_active and self.regs[_REG_CONFIG] & 0x0004:
                self._alert_active = False  # latched alert cleared by reading the result
                self.alert.drive(1 - self._active_level())
        out = bytes([value >> 8, value & 0xFF])
        return (out * ((n + 1) // 2))[:n]
