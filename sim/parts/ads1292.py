"""TI ADS1292R: 2-channel 24-bit ECG/respiration analog front end (SPI mode 1).

Commands (datasheet SBAS502, Table 13): WAKEUP 0x02, STANDBY 0x04, RESET
0x06, START 0x08, STOP 0x0A, RDATAC 0x10, SDATAC 0x11, RDATA 0x12,
OFFSETCAL 0x1A, RREG ``0x20 | reg`` then ``count - 1``, WREG ``0x40 | reg``
then ``count - 1`` then the data.  After power-up and RESET the part is in
RDATAC mode, where RREG/WREG are ignored: a driver sends SDATAC first.

Registers: ``0x00`` ID (0x73 for the ADS1292R; the ADS1292 reads 0x53),
``0x01`` CONFIG1 (SINGLE_SHOT[7], OS[2:0]: 125 250 500 1k 2k 4k 8k SPS,
reset 0x02), ``0x02`` CONFIG2 (bit 7 reads 1, PDB_LOFF_COMP[6],
PDB_REFBUF[5], VREF_4V[4], CLK_EN[3], INT_TEST[1], TEST_FREQ[0]),
``0x03`` LOFF, ``0x04`` CH1SET / ``0x05`` CH2SET (PD[7], GAIN[6:4] = 6 1 2 3
4 8 12, MUX[3:0]: 0000 electrodes, 0001 shorted, 0101 test signal),
``0x06`` RLD_SENS, ``0x07`` LOFF_SENS, ``0x08`` LOFF_STAT (RLD_STAT[4],
IN2N[3], IN2P[2], IN1N[1], IN1P[0]: 1 = lead off), ``0x09`` RESP1,
``0x0A`` RESP2, ``0x0B`` GPIO.

Data: after each conversion DRDY (a :class:`SimPin`) goes low and a 9-byte
frame is ready: a 24-bit status word ``1100 LOFF_STAT[4:0] GPIO[1:0]`` and
13 zeros, then channel 1 and channel 2, 24-bit two's complement, MSB first.
Code = ``round(V * gain / VREF * 2**23)`` saturated, VREF 2.42 V (4.033 V
with VREF_4V).  In RDATAC mode clocking 72 bits with CS low reads the latest
frame (commands still decoded from MOSI, 0x00 being a no-op); in SDATAC mode
the frame follows an RDATA command.  The part has no FIFO: a frame not read
before the next conversion is overwritten (``frames_overwritten`` counts
them) -- real boards read on the DRDY falling edge, which a driver can do
here too through ``drdy.irq()``.

Signals ``ch1`` and ``ch2`` are the differential input voltages (volts).
Fault hook: :meth:`set_lead_off` marks electrodes off: the status bits report
it (when the lead-off comparators are on, CONFIG2 PDB_LOFF_COMP) and the
channel saturates, as an input pulled to a rail by the lead-off current does.
"""

from __future__ import annotations

from typing import Any

from sim.bus import SimPin, SimTime
from sim.parts import as_signal

ID_ADS1292R = 0x73
ID_ADS1292 = 0x53
DATA_RATES_SPS = (125, 250, 500, 1000, 2000, 4000, 8000)
GAINS = (6, 1, 2, 3, 4, 8, 12, 6)
VREF_UV = 2_420_000
VREF_4V_UV = 4_033_000
FRAME_BYTES = 9

_CMD_WAKEUP = 0x02
_CMD_STANDBY = 0x04
_CMD_RESET = 0x06
_CMD_START = 0x08
_CMD_STOP = 0x0A
_CMD_RDATAC = 0x10
_CMD_SDATAC = 0x11
_CMD_RDATA = 0x12
_CMD_OFFSETCAL = 0x1A

_REG_ID = 0x00
_REG_CONFIG1 = 0x01
_REG_CONFIG2 = 0x02
_REG_LOFF = 0x03
_REG_CH1SET = 0x04
_REG_CH2SET = 0x05
_REG_LOFF_STAT = 0x08
_REG_RESP2 = 0x0A
_REG_GPIO = 0x0B
_RESET_VALUES = (0, 0x02, 0x80, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x0C)
#: Bits the host can write, per register (the rest read fixed values).
_WRITE_MASKS = (0x00, 0x87, 0x7B, 0xED, 0xFF, 0xFF, 0x3F, 0x3F, 0x40, 0xFF, 0x87, 0x0F)
_FIXED_BITS = (0, 0, 0x80, 0x10, 0, 0, 0, 0, 0, 0x02, 0x02, 0)


class ADS1292:
    """Register-level ADS1292R.  ``ch1``/``ch2``: input signals in volts."""

    spi_mode = (0, 1)  # CPOL 0, CPHA 1

    def __init__(self, clock: Any, ch1: Any = 0.0, ch2: Any = 0.0,
                 device_id: int = ID_ADS1292R) -> None:
        self._time = SimTime(clock)
        self._t0_us = self._time.now_us()
        self.ch1 = as_signal(ch1)
        self.ch2 = as_signal(ch2)
        self.device_id = device_id
        self.drdy = SimPin("DRDY", 1)
        self.drdy.sampler = self.update
        self.conversions = 0
        self.frames_overwritten = 0
        self.frames_read = 0
        self.lead_off_bits = 0  # LOFF_STAT[4:0] as the comparators would see it
        self._updating = False
        self.reset()

    # -- state ---------------------------------------------------------------
    def reset(self) -> None:
        self.regs = bytearray(_RESET_VALUES)
        self.regs[_REG_ID] = self.device_id
        self.rdatac = True
        self.running = False
        self._start_us = 0
        self._done = 0
        self.frame = bytearray(FRAME_BYTES)
        self.frame[0] = 0xC0
        self._unread = False
        self._out = bytearray()
        self._state = 0  # 0 command, 1 RREG count, 2 WREG count, 3 WREG data
        self._reg = 0
        self._left = 0
        self.drdy.drive(1)

    def set_lead_off(self, in1p: bool = False, in1n: bool = False, in2p: bool = False,
                     in2n: bool = False, rld: bool = False) -> None:
        """Fault hook: mark electrodes as disconnected (True) or attached."""
        self.lead_off_bits = (int(in1p) | int(in1n) << 1 | int(in2p) << 2 | int(in2n) << 3
                              | int(rld) << 4)

    @property
    def data_rate_sps(self) -> int:
        return DATA_RATES_SPS[min(self.regs[_REG_CONFIG1] & 7, 6)]

    # -- conversions ---------------------------------------------------------
    def update(self) -> None:
        if self._updating or not self.running:
            return
        self._updating = True  # a DRDY irq handler may read the frame from inside
        try:
            now = self._time.now_us()
            period = 1_000_000 / self.data_rate_sps
            due = int((now - self._start_us) / period)
            if self.regs[_REG_CONFIG1] & 0x80:
                due = min(due, 1)  # single shot: one conversion per START
            while self._done < due:
                self._done += 1
                self._convert(self._start_us + self._done * period)
            if self.regs[_REG_CONFIG1] & 0x80 and self._done >= 1:
                self.running = False
        finally:
            self._updating = False

    def _code(self, reg: int, signal: Any, t_s: float, off: bool, test: float) -> int:
        chset = self.regs[reg]
        value = signal(t_s)  # keep an iterator signal in step even when unused
        if chset & 0x80:
            return 0  # powered down
        mux = chset & 0x0F
        if mux == 0x01:
            value = 0.0
        elif mux == 0x05:
            value = test
        elif mux != 0x00:
            value = 0.0
        gain = GAINS[(chset >> 4) & 7]
        vref = VREF_4V_UV if self.regs[_REG_CONFIG2] & 0x10 else VREF_UV
        if off and mux == 0x00:
            return 0x7FFFFF
        code = round(value * 1e6 * gain / vref * (1 << 23))
        return max(-(1 << 23), min((1 << 23) - 1, code))

    def _convert(self, t_us: float) -> None:
        t_s = (t_us - self._t0_us) / 1e6
        cfg2 = self.regs[_REG_CONFIG2]
        vref = (VREF_4V_UV if cfg2 & 0x10 else VREF_UV) / 1e6
        test = 0.0
        if cfg2 & 0x02:  # internal test signal: +-VREF/2400, 1 Hz square (or DC)
            high = (cfg2 & 0x01) == 0 or int(t_s * 2) % 2 == 0
            test = vref / 2400 if high else -vref / 2400
        bits = self.lead_off_bits
        code1 = self._code(_REG_CH1SET, self.ch1, t_s, bool(bits & 0x03), test)
        code2 = self._code(_REG_CH2SET, self.ch2, t_s, bool(bits & 0x0C), test)
        loff = bits if cfg2 & 0x40 else 0
        self.regs[_REG_LOFF_STAT] = (self.regs[_REG_LOFF_STAT] & 0x40) | loff
        gpio = self.regs[_REG_GPIO] & 0x03
        status = 0xC00000 | (loff << 15) | (gpio << 13)
        if self._unread:
            self.frames_overwritten += 1
        f = self.frame
        for i, word in enumerate((status, code1 & 0xFFFFFF, code2 & 0xFFFFFF)):
            f[3 * i] = word >> 16
            f[3 * i + 1] = (word >> 8) & 0xFF
            f[3 * i + 2] = word & 0xFF
        self.conversions += 1
        self._unread = True
        if self.drdy._value == 0:
            self.drdy.drive(1)  # DRDY pulses high before the next falling edge
        self.drdy.drive(0)

    def _load_frame(self) -> None:
        self._out = bytearray(self.frame)
        if self._unread:
            self.frames_read += 1
        self._unread = False
        self.drdy.drive(1)

    # -- SPI -----------------------------------------------------------------
    def spi_select(self) -> None:
        self.update()
        self._out = bytearray()
        self._state = 0
        if self.rdatac and self.running:
            self._load_frame()

    def spi_deselect(self) -> None:
        self._state = 0
        self._out = bytearray()

    def spi_exchange(self, byte: int) -> int:
        miso = self._out.pop(0) if self._out else 0x00
        state = self._state
        if state == 0:
            self._command(byte)
        elif state == 1:  # RREG count
            n = (byte & 0x1F) + 1
            self._out.extend(self.regs[r] if r < len(self.regs) else 0
                             for r in range(self._reg, self._reg + n))
            self._state = 0
        elif state == 2:  # WREG count
            self._left = (byte & 0x1F) + 1
            self._state = 3
        else:  # WREG data
            self._write_reg(self._reg, byte)
            self._reg += 1
            self._left -= 1
            if not self._left:
                self._state = 0
        return miso

    def spi_exchange_block(self, out: bytes) -> bytearray:
        """:meth:`spi_exchange` over a whole transfer: the same MISO bytes and the
        same state changes.  Clocking out a frame with NOPs (0x00 while no
        command is pending, as the driver does in RDATAC) is one slice."""
        if self._state == 0 and not any(out):  # NOP is a command that changes nothing
            n = len(out)
            data = self._out[:n]
            del self._out[:n]
            if len(data) < n:
                data.extend(bytes(n - len(data)))
            return data
        return bytearray(self.spi_exchange(b) for b in out)

    def _command(self, op: int) -> None:
        if op == _CMD_RESET:
            self.reset()
        elif op == _CMD_START:
            self.update()
            self.running = True
            self._start_us = self._time.now_us()
            self._done = 0
        elif op == _CMD_STOP:
            self.update()
            self.running = False
        elif op == _CMD_RDATAC:
            self.rdatac = True
        elif op == _CMD_SDATAC:
            self.rdatac = False
        elif op == _CMD_RDATA:
            if not self.rdatac:
                self.update()
                self._load_frame()
        elif op & 0xE0 in (0x20, 0x40) and not self.rdatac:
            self._reg = op & 0x1F
            self._state = 1 if op & 0xE0 == 0x20 else 2
        # WAKEUP, STANDBY, OFFSETCAL and NOP (0x00) change nothing emulated here.

    def _write_reg(self, reg: int, value: int) -> None:
        if reg >= len(self.regs):
            return
        mask = _WRITE_MASKS[reg]
        self.regs[reg] = (self.regs[reg] & ~mask & 0xFF) | (value & mask) | _FIXED_BITS[reg]
