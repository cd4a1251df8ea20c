"""The sensor drivers inside the real MicroPython VM.

The emulated parts in sim/parts are CPython-only, so the script below carries
tiny register fakes (a machine.I2C with a TMP117 and a MAX30102, a
machine.SPI with an ADS1292) written in the MicroPython subset.  The same
script runs in the VM and under CPython; the outputs must be equal, and in
the VM the per-sample paths must allocate nothing (``gc.mem_alloc``).
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout

SCRIPT = r"""
import gc
from array import array
from firmware.hw.drivers.ads1292 import ADS1292
from firmware.hw.drivers.max30102 import MAX30102
from firmware.hw.drivers.tmp117 import TMP117
from firmware.hw.sensors import Ads1292EcgSource, Max30102PpgSource, RatioScaler

try:
    from micropython import const  # noqa: F401
    VM = True
except ImportError:
    VM = False


class Pin:
    IRQ_FALLING = 4

    def __init__(self, v=1):
        self.v = v
        self.handler = None

    def value(self, x=None):
        if x is None:
            return self.v
        self.v = x

    def irq(self, handler=None, trigger=4):
        self.handler = handler


class FakeTmp117:
    def __init__(self):
        self.regs = [0] * 16
        self.regs[0] = 0x1280  # 37.0 degC
        self.regs[1] = 0x0220
        self.regs[15] = 0x1117  # revision 1

    def read(self, reg, buf):
        v = self.regs[reg]
        buf[0] = v >> 8
        buf[1] = v & 0xFF

    def write(self, reg, buf):
        self.regs[reg] = (buf[0] << 8) | buf[1]


class FakeMax30102:
    def __init__(self):
        self.regs = bytearray(256)
        self.regs[0xFF] = 0x15
        self.k = 0
        self.byte = 0

    def produce(self, n):
        self.regs[4] = (self.regs[4] + n) & 31

    def read(self, reg, buf):
        regs = self.regs
        for i in range(len(buf)):
            if reg == 7:
                led = self.byte // 3
                v = self.k * 1000 + led * 7 + 131072
                buf[i] = (v >> (16 - 8 * (self.byte % 3))) & 0xFF
                self.byte += 1
                if self.byte == 6:
                    self.byte = 0
                    self.k += 1
                    regs[6] = (regs[6] + 1) & 31
            else:
                buf[i] = regs[reg + i]

    def write(self, reg, buf):
        for i in range(len(buf)):
            self.regs[reg + i] = buf[i]
        if self.regs[9] & 0x40:
            self.regs[9] = 0


class I2C:
    def __init__(self, parts):
        self.parts = parts

    def readfrom_mem_into(self, addr, reg, buf, addrsize=8):
        part = self.parts.get(addr)
        if part is None:
            raise OSError(19)
        part.read(reg, buf)

    def writeto_mem(self, addr, reg, buf, addrsize=8):
        part = self.parts.get(addr)
        if part is None:
            raise OSError(19)
        part.write(reg, buf)


class FakeAds1292Spi:
    # Enough of the ADS1292 for the driver: RREG/WREG one register, RDATAC frames.
    def __init__(self, drdy):
        self.regs = bytearray(12)
        self.regs[0] = 0x73
        self.drdy = drdy
        self.ready = 0
        self.k = 0

    def init(self, baudrate=0, polarity=0, phase=0):
        self.mode = (polarity, phase)

    def write(self, buf):
        op = buf[0]
        if op & 0xE0 == 0x40:
            self.regs[op & 0x1F] = buf[2]

    def write_readinto(self, wbuf, rbuf):
        op = wbuf[0]
        if op & 0xE0 == 0x20:
            rbuf[2] = self.regs[op & 0x1F]
            return
        k = self.k
        ch2 = k * 4099 - 200000
        rbuf[0] = 0xC0
        rbuf[1] = 0x08 if k == 3 else 0x00  # IN2N off in frame 3
        rbuf[2] = 0
        rbuf[3] = 0
        rbuf[4] = 0
        rbuf[5] = k
        rbuf[6] = (ch2 >> 16) & 0xFF
        rbuf[7] = (ch2 >> 8) & 0xFF
        rbuf[8] = ch2 & 0xFF
        self.k = k + 1
        self.ready -= 1
        if self.ready <= 0:
            self.drdy.v = 1


def measure(fn, arg):
    gc.collect()
    gc.disable()
    before = gc.mem_alloc() if VM else 0
    for _ in range(20):
        fn(arg)
    used = gc.mem_alloc() - before if VM else 0
    gc.enable()
    return used


tmp = FakeTmp117()
ox = FakeMax30102()
bus = I2C({0x48: tmp, 0x57: ox})
t = TMP117(bus)
print("tmp117", t.read_temperature_mc(), t.revision, hex(tmp.regs[1]))
try:
    TMP117(bus, address=0x49)
except OSError as e:
    print("missing", e.args[0], e.args[1])
tmp.regs[15] = 0x0190
try:
    TMP117(bus)
except OSError as e:
    print("wrong", e.args[0], e.args[1])

m = MAX30102(bus, sample_rate_sps=100, led_current_ma=(6.4, 12.0))
print("max30102 regs", [hex(ox.regs[r]) for r in (8, 9, 10, 12, 13)])
red = array("l", [0] * 32)
ir = array("l", [0] * 32)
ox.produce(5)
n = m.read_fifo(red, ir, 32)
print("fifo", n, list(red[:n]), list(ir[:n]))
ppg = Max30102PpgSource(m, led="ir", shift_bits=3)
pbuf = array("h", [0] * 32)
ox.produce(3)
n = ppg.read_samples(pbuf, 32)
print("ppg", n, list(pbuf[:n]))


def drain_ppg(buf):
    ox.produce(4)
    ppg.read_samples(buf, 32)


print("ppgalloc", measure(drain_ppg, pbuf))

drdy = Pin(1)
spi = FakeAds1292Spi(drdy)
cs = Pin(1)
afe = ADS1292(spi, cs, drdy, data_rate_sps=250, gain=(6, 6), sleep=lambda ms: None)
print("ads1292 regs", [hex(b) for b in spi.regs], spi.mode)
src = Ads1292EcgSource(afe, channel=2)
buf = array("h", [0] * 64)
out = []
for _ in range(6):
    spi.ready = 1
    drdy.v = 0
    n = src.read_samples(buf, 64)
    out.extend(buf[:n])
    out.append(src.read_samples(buf, 64))
print("ecg", out, src.lead_off, afe.frames)


def one_frame(buf):
    spi.ready = 1
    drdy.v = 0
    src.read_samples(buf, 64)


print("ecgalloc", measure(one_frame, buf))
s = RatioScaler(2420000 * 200, 6 * 8388608 * 1000)
print("scaler", s.num, s.den, [s.apply(x) for x in (0, 1, -1, 52, -52, 8388607, -8388608)])
"""


def run_cpython() -> str:
    buf = io.StringIO()
    with redirect_stdout(buf):
        exec(compile(SCRIPT, "drivers_script", "exec"), {"__name__": "__main__"})
    return buf.getvalue()


def test_drivers_run_identically_in_micropython_without_allocating(micropython) -> None:
    vm_out = micropython(SCRIPT)
    cp_out = run_cpython()
    assert vm_out == cp_out
    lines = dict(line.split(" ", 1) for line in vm_out.splitlines())
    assert lines["tmp117"] == "37000 1 0x220"
    assert lines["missing"] == "19 TMP117 at 0x49: I2C transfer failed after 3 tries (errno 19)"
    assert lines["wrong"] == "19 TMP117 at 0x48: device ID 0x0190, expected 0x0117"
    assert lines["max30102"] == "regs ['0xf', '0x3', '0x27', '0x20', '0x3c']"
    assert lines["fifo"] == ("5 [131072, 132072, 133072, 134072, 135072] "
                             "[131079, 132079, 133079, 134079, 135079]")
    assert lines["ppg"] == "3 [17009, 17134, 17259]"  # (131079 + k * 1000) >> 3, k = 5..7
    assert lines["ppgalloc"] == "0" and lines["ecgalloc"] == "0"  # bytes allocated in the VM
    assert lines["ads1292"] == ("regs ['0x73', '0x1', '0xe0', '0x10', '0x0', '0x0', '0x20', "
                                "'0xf', '0x0', '0x0', '0x0', '0x0'] (0, 1)")
    # ch2 code k*4099 - 200000 at 48.08 nV/LSB -> 200 counts/mV: round(code * 15125 / 1572864)
    want = [round((k * 4099 - 200000) * 2420000 * 200 / (6 * 8388608 * 1000)) for k in range(6)]
    got = [int(v) for v in lines["ecg"].split("]")[0].strip("[").split(",")]
    assert got[0::2] == want and got[1::2] == [0] * 6
    assert lines["ecg"].endswith("] 0 6")  # lead-off of the last frame; 6 frames
    s_num, s_den, *_ = lines["scaler"].split(" ", 2)
    assert int(s_num) <= 32767 and int(s_den) <= 32767  # 15125/1572864 approximated


SERIAL_SCRIPT = r"""
import gc
from array import array
from firmware.hw.drivers.ads1115 import ADS1115, MUX_AIN0_AIN1
from firmware.hw.drivers.serial_ecg import SerialEcgParser, SerialEcgSource, encode_frame
from firmware.hw.sensors import Ads1115EcgSource

try:
    from micropython import const  # noqa: F401
    VM = True
except ImportError:
    VM = False

wire = bytearray(b"\x00\xa5\x13")
for seq in range(12):
    if seq in (4, 5):
        continue  # lost on the way
    frame = encode_frame(seq, [seq * 100 + i - 600 for i in range(10)])
    if seq == 7:
        frame[9] ^= 0x40  # corrupted sample byte
    wire += frame
    wire += b"\xa5\x5a\x09" if seq == 2 else b""


class Uart:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def any(self):
        left = len(self.data) - self.pos
        return 7 if left > 7 else left

    def readinto(self, buf, n):
        for i in range(n):
            buf[i] = self.data[self.pos + i]
        self.pos += n
        return n


src = SerialEcgSource(Uart(wire))
buf = array("h", [0] * 200)
n = src.read_samples(buf, 200)
p = src.parser
print("serial", n, list(buf[:n]))
print("counts", p.frames, p.crc_errors, p.bad_lengths, p.dropped_frames, p.garbage_bytes)

one = encode_frame(1, list(range(20)))
parser = SerialEcgParser()


def feed_one(b):
    parser.feed(one)
    parser.read_samples(b, 64)


def measure(fn, arg):
    gc.collect()
    gc.disable()
    before = gc.mem_alloc() if VM else 0
    for _ in range(200):
        fn(arg)
    used = gc.mem_alloc() - before if VM else 0
    gc.enable()
    return used


print("serialalloc", measure(feed_one, buf))


class Regs16:
    def __init__(self):
        self.regs = [0x0000, 0x8583, 0x8000, 0x7FFF]

    def readfrom_mem_into(self, addr, reg, buf, addrsize=8):
        v = self.regs[reg]
        buf[0] = v >> 8
        buf[1] = v & 0xFF

    def writeto_mem(self, addr, reg, buf, addrsize=8):
        self.regs[reg] = (buf[0] << 8) | buf[1]


class Pin:
    IRQ_FALLING = 4

    def irq(self, handler=None, trigger=4):
        self.handler = handler


bus = Regs16()
adc = ADS1115(bus, data_rate_sps=250, mux=MUX_AIN0_AIN1, continuous=True, ready_pin=True)
print("ads1115", hex(bus.regs[1]), hex(bus.regs[2]), hex(bus.regs[3]))
rdy = Pin()
ecg = Ads1115EcgSource(adc, 100, ready_pin=rdy, use_irq=True)
for code in (0, 8, -8, 1604, -32768, 32767, 5):
    bus.regs[0] = code & 0xFFFF
    rdy.handler(rdy)
n = ecg.read_samples(buf, 64)
print("adcecg", list(buf[:n]))
"""


def test_serial_parser_and_ads1115_in_micropython(micropython) -> None:
    vm_out = micropython(SERIAL_SCRIPT)
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(SERIAL_SCRIPT, "serial_script", "exec"), {"__name__": "__main__"})
    assert vm_out == out.getvalue()
    lines = dict(line.split(" ", 1) for line in vm_out.splitlines())
    good = [s for s in range(12) if s not in (4, 5, 7)]
    want = [s * 100 + i - 600 for s in good for i in range(10)]
    assert lines["serial"] == f"{len(want)} {want}"
    # 9 good frames; 1 CRC error; gaps: 3 -> 6 (4, 5) and 6 -> 8 (7, corrupted)
    frames, crc, bad_len, dropped, garbage = map(int, lines["counts"].split())
    # the false sync "A5 5A 09" after frame 2 reads the next sync byte 0xA5 as n: bad length
    assert (frames, crc, dropped, bad_len) == (9, 1, 3, 1) and garbage > 3
    assert lines["serialalloc"] == "0"
    assert lines["ads1115"] == "0x4a0 0x0 0x8000"  # AIN0-AIN1, 2.048 V, continuous, 250 SPS
    # 2.048 V / 32768 = 62.5 uV per code; /100 front end; 5 uV per count: code / 8
    assert lines["adcecg"] == "[0, 1, -1, 201, -4096, 4096, 1]"
