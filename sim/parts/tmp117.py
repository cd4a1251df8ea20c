"""TI TMP117: digital temperature sensor, +-0.1 degC, 0.0078125 degC/LSB (I2C).

Chosen over the MAX30205 (also a +-0.1 degC clinical thermometer) because the
TMP117 has a Device ID register (0x0F = 0x0117) the driver can check, so a
wrong or missing part fails loudly; the MAX30205 has no identification
register at all.  It is also accurate over -20..50 degC (the MAX30205 only
over 37..39 degC), which covers skin as well as core temperature.

Registers (datasheet SNOSD82, section 7.6), 16 bit, MSB first, pointer write
as on the ADS1115:

- ``0x00`` Temp_Result: two's complement, 0.0078125 degC/LSB; 0x8000
  (-256 degC) after reset until the first conversion completes.
- ``0x01`` Configuration (reset 0x0220): HIGH_Alert[15], LOW_Alert[14],
  Data_Ready[13], EEPROM_Busy[12], MOD[11:10] (00/10 continuous,
  01 shutdown, 11 one-shot), CONV[9:7], AVG[6:5], T/nA[4], POL[3],
  DR/Alert[2], Soft_Reset[1].  Reading it clears Data_Ready and (alert mode)
  the alert flags; reading Temp_Result clears Data_Ready too.
- ``0x02`` THigh_Limit (reset 0x6000 = 192 degC), ``0x03`` TLow_Limit
  (reset 0x8000 = -256 degC), ``0x04`` EEPROM_UL, ``0x05..0x07``
  EEPROM1..3, ``0x08`` Temp_Offset (added to every result), ``0x0F``
  Device_ID = 0x0117.

Conversion cycle time: datasheet Table 7-7 (CONV x AVG); an active
conversion takes 15.5 ms, 125 ms, 500 ms or 1 s for AVG 1, 8, 32, 64.
"""

from __future__ import annotations

from typing import Any

from sim.bus import SimPin, SimTime
from sim.parts import as_signal

DEFAULT_ADDRESS = 0x48
DEVICE_ID = 0x0117
CONFIG_RESET = 0x0220
LSB_MILLI_C = 7.8125  # 0.0078125 degC
#: Cycle time in ms, [CONV][AVG] (datasheet Table 7-7).
CYCLE_MS = (
    (15.5, 125, 500, 1000),
    (125, 125, 500, 1000),
    (250, 250, 500, 1000),
    (500, 500, 500, 1000),
    (1000, 1000, 1000, 1000),
    (4000, 4000, 4000, 4000),
    (8000, 8000, 8000, 8000),
    (16000, 16000, 16000, 16000),
)
ACTIVE_MS = (15.5, 125, 500, 1000)

_REG_TEMP = 0x00
_REG_CONFIG = 0x01
_REG_HIGH = 0x02
_REG_LOW = 0x03
_REG_OFFSET = 0x08
_REG_ID = 0x0F


def _signed16(v: int) -> int:
    return v - 0x10000 if v & 0x8000 else v


class TMP117:
    """Register-level TMP117.  ``temperature``: a signal in degrees Celsius."""

    def __init__(self, clock: Any, temperature: Any = 36.6) -> None:
        self._time = SimTime(clock)
        self._t0_us = self._time.now_us()
        self.temperature = as_signal(temperature)
        self.alert = SimPin("ALERT", 1)
        self.conversions = 0
        self.reset()

    def reset(self) -> None:
        self.regs = [0] * 16
        self.regs[_REG_TEMP] = 0x8000
        self.regs[_REG_CONFIG] = CONFIG_RESET
        self.regs[_REG_HIGH] = 0x6000
        self.regs[_REG_LOW] = 0x8000
        self.regs[_REG_ID] = DEVICE_ID
        self._pointer = 0
        self._cycle_start_us = self._time.now_us()
        self._done = 0
        self._one_shot_until: int | None = None

    def _mode(self) -> int:
        return (self.regs[_REG_CONFIG] >> 10) & 3

    def _cycle_us(self) -> tuple[int, int]:
        cfg = self.regs[_REG_CONFIG]
        conv, avg = (cfg >> 7) & 7, (cfg >> 5) & 3
        return int(CYCLE_MS[conv][avg] * 1000), int(ACTIVE_MS[avg] * 1000)

    def update(self) -> None:
        now = self._time.now_us()
        if self._one_shot_until is not None:
            if now >= self._one_shot_until:
                self._convert(self._one_shot_until)
                self._one_shot_until = None
                self.regs[_REG_CONFIG] = (self.regs[_REG_CONFIG] & ~0x0C00) | 0x0400
            return
        if self._mode() in (0, 2):
            cycle, active = self._cycle_us()
            if now - self._cycle_start_us >= active:
                due = (now - self._cycle_start_us - active) // cycle + 1
                while self._done < due:
                    self._convert(self._cycle_start_us + active + self._done * cycle)
                    self._done += 1

    def _convert(self, t_us: int) -> None:
        t_s = (t_us - self._t0_us) / 1e6
        code = round(self.temperature(t_s) * 1000 / LSB_MILLI_C) + _signed16(
            self.regs[_REG_OFFSET])
        code = max(-32768, min(32767, code))
        self.regs[_REG_TEMP] = code & 0xFFFF
        self.conversions += 1
        cfg = self.regs[_REG_CONFIG] | 0x2000  # Data_Ready
        high, low = _signed16(self.regs[_REG_HIGH]), _signed16(self.regs[_REG_LOW])
        therm = bool(cfg & 0x0010)
        if code > high:
            cfg |= 0x8000
        elif therm and code < low:
            cfg &= ~0x8000
        if not therm and code < low:
            cfg |= 0x4000
        self.regs[_REG_CONFIG] = cfg
        self._drive_alert()

    def _drive_alert(self) -> None:
        cfg = self.regs[_REG_CONFIG]
        active = 1 if cfg & 0x0008 else 0
        flag = cfg & 0x2000 if cfg & 0x0004 else cfg & 0xC000
        self.alert.drive(active if flag else 1 - active)

    # -- I2C -----------------------------------------------------------------
    def i2c_write(self, data: bytes) -> int:
        self.update()
        if not data:
            return 0
        self._pointer = data[0] & 0x0F
        if len(data) >= 3:
            self._write_reg(self._pointer, (data[1] << 8) | data[2])
        return len(data)

    def _write_reg(self, reg: int, value: int) -> None:
        if reg in (_REG_TEMP, _REG_ID):
            return
        if reg != _REG_CONFIG:
            self.regs[reg] = value
            return
        if value & 0x0002:
            self.reset()
            return
        flags = self.regs[_REG_CONFIG] & 0xF000  # status bits are read only
        self.regs[_REG_CONFIG] = flags | (value & 0x0FFC)
        now = self._time.now_us()
        mode = (value >> 10) & 3
        self._one_shot_until = None
        if mode == 3:
            self._one_shot_until = now + self._cycle_us()[1]
        self._cycle_start_us = now
        self._done = 0

    def i2c_read(self, n: int) -> bytes:
        self.update()
        reg = self._pointer
        value = self.regs[reg]
        if reg == _REG_CONFIG:
            clear = 0x2000 | (0 if value & 0x0010 else 0xC000)
            self.regs[reg] &= ~clear
            self._drive_alert()
        elif reg == _REG_TEMP:
            self.regs[_REG_CONFIG] &= ~0x2000
        out = bytes([value >> 8, value & 0xFF])
        return (out * ((n + 1) // 2))[:n]
