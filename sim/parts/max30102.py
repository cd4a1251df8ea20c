"""Maxim MAX30102: pulse oximeter and heart-rate sensor (I2C, address 0x57).

Registers (datasheet 19-7740, Table 1), 8 bit, auto-incrementing pointer
except FIFO_DATA (reads of 0x07 keep the pointer there):

- ``0x00`` INTR_STATUS_1: A_FULL[7], PPG_RDY[6], ALC_OVF[5], PWR_RDY[0];
  ``0x01`` INTR_STATUS_2: DIE_TEMP_RDY[1].  Reading a status register
  clears it.  ``0x02`` / ``0x03`` INTR_ENABLE_1/2.  ``irq`` (a
  :class:`SimPin`, active low) is asserted while an enabled flag is set.
- ``0x04`` FIFO_WR_PTR, ``0x05`` OVF_COUNTER (saturates at 0x1F),
  ``0x06`` FIFO_RD_PTR (OVF_COUNTER resets when a sample is popped),
  ``0x07`` FIFO_DATA: a 32-sample FIFO; each sample is
  3 bytes per active LED (red first, then IR in SpO2 mode), 18 bits
  left-justified in 24 (bits 23:18 zero), so at a lower ADC resolution the
  low bits read 0.  RD_PTR advances once all bytes of a sample are read.
- ``0x08`` FIFO_CONFIG: SMP_AVE[7:5] (1, 2, 4, 8, 16, 32 samples averaged
  per FIFO entry), FIFO_ROLLOVER_EN[4], FIFO_A_FULL[3:0] (A_FULL fires when
  only that many free slots are left).  Full FIFO, rollover off: new
  samples are lost; rollover on: the oldest are overwritten.  Either way
  OVF_COUNTER counts the lost samples.
- ``0x09`` MODE_CONFIG: SHDN[7], RESET[6] (self-clearing), MODE[2:0]
  (010 heart rate = red only, 011 SpO2 = red + IR, 111 multi-LED).
- ``0x0A`` SPO2_CONFIG: SPO2_ADC_RGE[6:5] (2048, 4096, 8192, 16384 nA full
  scale), SPO2_SR[4:2] (50, 100, 200, 400, 800, 1000, 1600, 3200 sps),
  LED_PW[1:0] (69, 118, 215, 411 us -> 15, 16, 17, 18 bit resolution).
- ``0x0C`` LED1_PA (red), ``0x0D`` LED2_PA (IR): 0.2 mA per LSB (0xFF =
  51 mA).  ``0x11``/``0x12`` MULTI_LED_CTRL1/2.
- ``0x1F`` TINT (two's complement degC), ``0x20`` TFRAC (0.0625 degC, 4 bit),
  ``0x21`` DIE_TEMP_CONFIG TEMP_EN[0] (self-clearing after about 29 ms, then
  DIE_TEMP_RDY).  ``0xFE`` REV_ID, ``0xFF`` PART_ID = 0x15.

Signal model: ``red`` and ``ir`` give the photodiode current in nanoamperes
per milliampere of LED drive (a perfusion-weighted reflectance; DC plus a
small pulsatile part).  The ADC count is ``I_nA / full_scale_nA * 2**18``
with ``I_nA = signal * led_current_mA``, saturating at ``2**18 - 1`` (and
setting ALC_OVF): doubling the LED current doubles the signal.
"""

from __future__ import annotations

from typing import Any

from sim.bus import SimPin, SimTime
from sim.parts import as_signal

DEFAULT_ADDRESS = 0x57
PART_ID = 0x15
REV_ID = 0x03
FIFO_DEPTH = 32
SAMPLE_RATES_SPS = (50, 100, 200, 400, 800, 1000, 1600, 3200)
ADC_RANGES_NA = (2048, 4096, 8192, 16384)
PULSE_WIDTHS_US = (69, 118, 215, 411)
RESOLUTION_BITS = (15, 16, 17, 18)
SAMPLE_AVERAGES = (1, 2, 4, 8, 16, 32, 32, 32)
LED_MA_PER_LSB = 0.2
TEMP_CONVERSION_US = 29_000

_REG_INTR_STATUS_1 = 0x00
_REG_INTR_STATUS_2 = 0x01
_REG_INTR_ENABLE_1 = 0x02
_REG_INTR_ENABLE_2 = 0x03
_REG_FIFO_WR_PTR = 0x04
_REG_OVF_COUNTER = 0x05
_REG_FIFO_RD_PTR = 0x06
_REG_FIFO_DATA = 0x07
_REG_FIFO_CONFIG = 0x08
_REG_MODE_CONFIG = 0x09
_REG_SPO2_CONFIG = 0x0A
_REG_LED1_PA = 0x0C
_REG_LED2_PA = 0x0D
_REG_TINT = 0x1F
_REG_TFRAC = 0x20
_REG_TEMP_CONFIG = 0x21
_REG_REV_ID = 0xFE
_REG_PART_ID = 0xFF

_A_FULL = 0x80
_PPG_RDY = 0x40
_ALC_OVF = 0x20
_PWR_RDY = 0x01
_DIE_TEMP_RDY = 0x02

_ADC_MAX = (1 << 18) - 1


class MAX30102:
    """Register-level MAX30102.  ``red``/``ir``: signals in nA per mA of LED current;
    ``die_temp_c``: the die temperature signal (degC)."""

    def __init__(self, clock: Any, red: Any = 0.0, ir: Any = 0.0,
                 die_temp_c: Any = 30.0) -> None:
        self._time = SimTime(clock)
        self._t0_us = self._time.now_us()
        self.red = as_signal(red)
        self.ir = as_signal(ir)
        self.die_temp_c = as_signal(die_temp_c)
        self.irq = SimPin("INT", 1)
        self.irq.sampler = self.update
        self.samples_made = 0  # FIFO entries produced since power-up
        self.samples_lost = 0  # entries lost to overflow (total, not saturated)
        self.reset()

    def reset(self) -> None:
        self.regs = bytearray(256)
        self.regs[_REG_INTR_STATUS_1] = _PWR_RDY
        self.regs[_REG_REV_ID] = REV_ID
        self.regs[_REG_PART_ID] = PART_ID
        self._fifo = [(0, 0)] * FIFO_DEPTH
        self._count = 0  # entries in the FIFO (true count; WR == RD is ambiguous)
        self._byte = 0  # bytes of the current sample already read
        self._pointer = 0
        self._start_us = self._time.now_us()
        self._made = 0
        self._temp_done_us: int | None = None
        self._drive_irq()

    # -- sampling ------------------------------------------------------------
    def _mode(self) -> int:
        return self.regs[_REG_MODE_CONFIG] & 7

    def _running(self) -> bool:
        return not self.regs[_REG_MODE_CONFIG] & 0x80 and self._mode() in (2, 3, 7)

    def _leds(self) -> int:
        return 1 if self._mode() == 2 else 2

    def _entry_period_us(self) -> float:
        spo2 = self.regs[_REG_SPO2_CONFIG]
        rate = SAMPLE_RATES_SPS[(spo2 >> 2) & 7]
        ave = SAMPLE_AVERAGES[self.regs[_REG_FIFO_CONFIG] >> 5]
        return 1e6 * ave / rate

    def _restart(self) -> None:
        self._start_us = self._time.now_us()
        self._made = 0

    def update(self) -> None:
        now = self._time.now_us()
        if self._temp_done_us is not None and now >= self._temp_done_us:
            self._temp_done_us = None
            temp = self.die_temp_c((now - self._t0_us) / 1e6)
            sixteenths = round(temp * 16)
            self.regs[_REG_TINT] = (sixteenths >> 4) & 0xFF
            self.regs[_REG_TFRAC] = sixteenths & 0x0F
            self.regs[_REG_TEMP_CONFIG] &= ~1
            self.regs[_REG_INTR_STATUS_2] |= _DIE_TEMP_RDY
        if self._running():
            period = self._entry_period_us()
            due = int((now - self._start_us) / period)
            while self._made < due:
                self._made += 1
                self._push(self._start_us + self._made * period)
        self._drive_irq()

    def _adc(self, signal_value: float, pa_reg: int) -> tuple[int, bool]:
        spo2 = self.regs[_REG_SPO2_CONFIG]
        range_na = ADC_RANGES_NA[(spo2 >> 5) & 3]
        bits = RESOLUTION_BITS[spo2 & 3]
        current_ma = self.regs[pa_reg] * LED_MA_PER_LSB
        count = int(signal_value * current_ma / range_na * (1 << 18))
        over = count > _ADC_MAX
        count = max(0, min(_ADC_MAX, count))
        return count & ~((1 << (18 - bits)) - 1), over

    def _push(self, t_us: float) -> None:
        t_s = (t_us - self._t0_us) / 1e6
        red, over_r = self._adc(self.red(t_s), _REG_LED1_PA)
        ir, over_i = self._adc(self.ir(t_s), _REG_LED2_PA) if self._leds() == 2 else (0, False)
        self.samples_made += 1
        status = _PPG_RDY | (_ALC_OVF if over_r or over_i else 0)
        rd, wr = self.regs[_REG_FIFO_RD_PTR], self.regs[_REG_FIFO_WR_PTR]
        if self._count == FIFO_DEPTH:
            self.samples_lost += 1
            self.regs[_REG_OVF_COUNTER] = min(0x1F, self.regs[_REG_OVF_COUNTER] + 1)
            if not self.regs[_REG_FIFO_CONFIG] & 0x10:
                self.regs[_REG_INTR_STATUS_1] |= status
                return  # rollover off: the FIFO is not updated
            self.regs[_REG_FIFO_RD_PTR] = (rd + 1) % FIFO_DEPTH  # rollover: drop the oldest
            self._count -= 1
            self._byte = 0
        self._fifo[wr] = (red, ir)
        self.regs[_REG_FIFO_WR_PTR] = (wr + 1) % FIFO_DEPTH
        self._count += 1
        free = FIFO_DEPTH - self._count
        if free == (self.regs[_REG_FIFO_CONFIG] & 0x0F):
            status |= _A_FULL
        self.regs[_REG_INTR_STATUS_1] |= status

    def _drive_irq(self) -> None:
        pending = (self.regs[_REG_INTR_STATUS_1] & (self.regs[_REG_INTR_ENABLE_1] | _PWR_RDY)) or (
            self.regs[_REG_INTR_STATUS_2] & self.regs[_REG_INTR_ENABLE_2])
        self.irq.drive(0 if pending else 1)

    @property
    def fifo_count(self) -> int:
        return self._count

    # -- I2C -----------------------------------------------------------------
    def i2c_write(self, data: bytes) -> int:
        self.update()
        if not data:
            return 0
        self._pointer = data[0]
        for value in data[1:]:
            self._write_reg(self._pointer, value)
            if self._pointer != _REG_FIFO_DATA:
                self._pointer = (self._pointer + 1) & 0xFF
        self._drive_irq()
        return len(data)

    def _write_reg(self, reg: int, value: int) -> None:
        if reg in (_REG_INTR_STATUS_1, _REG_INTR_STATUS_2, _REG_REV_ID, _REG_PART_ID,
                   _REG_TINT, _REG_TFRAC):
            return
        if reg == _REG_MODE_CONFIG and value & 0x40:
            self.reset()  # RESET: every register to its power-on value; the bit clears
            return
        if reg in (_REG_FIFO_WR_PTR, _REG_FIFO_RD_PTR, _REG_OVF_COUNTER):
            self.regs[reg] = value & 0x1F
            wr, rd = self.regs[_REG_FIFO_WR_PTR], self.regs[_REG_FIFO_RD_PTR]
            self._count = (wr - rd) % FIFO_DEPTH
            self._byte = 0
            return
        old_mode = self.regs[_REG_MODE_CONFIG]
        self.regs[reg] = value
        if reg == _REG_TEMP_CONFIG and value & 1:
            self._temp_done_us = self._time.now_us() + TEMP_CONVERSION_US
        if reg in (_REG_SPO2_CONFIG, _REG_FIFO_CONFIG) or (
                reg == _REG_MODE_CONFIG and value != old_mode):
            self._restart()

    def i2c_read(self, n: int) -> bytes:
        self.update()
        out = bytearray()
        for _ in range(n):
            reg = self._pointer
            if reg == _REG_FIFO_DATA:
                out.append(self._fifo_byte())
                continue
            value = self.regs[reg]
            if reg in (_REG_INTR_STATUS_1, _REG_INTR_STATUS_2):
                self.regs[reg] = 0  # read clears (PWR_RDY included)
            out.append(value)
            self._pointer = (reg + 1) & 0xFF
        self._drive_irq()
        return bytes(out)

    def _fifo_byte(self) -> int:
        rd = self.regs[_REG_FIFO_RD_PTR]
        sample = self._fifo[rd]
        led, pos = divmod(self._byte, 3)
        value = sample[led] if led < 2 else 0
        byte = (value >> (16 - 8 * pos)) & 0xFF
        self._byte += 1
        if self._byte == 3 * self._leds():
            self._byte = 0
            if self._count > 0:  # reading an empty FIFO does not move the pointer
                self.regs[_REG_FIFO_RD_PTR] = (rd + 1) % FIFO_DEPTH
                self.regs[_REG_OVF_COUNTER] = 0  # reset when a complete sample is popped
                self._count -= 1
        return byte
