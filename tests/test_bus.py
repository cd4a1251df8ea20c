"""The emulated buses (sim/bus.py) and parts (sim/parts) answer like the datasheets."""

from __future__ import annotations

import errno

import pytest

from sim.bus import I2CBus, SimPin, SimTime, SPIBus
from sim.clock import SimClock
from sim.parts import Signal, sine
from sim.parts.ads1115 import ADS1115
from sim.parts.ads1292 import ADS1292
from sim.parts.max30102 import MAX30102
from sim.parts.tmp117 import TMP117


@pytest.fixture()
def clock() -> SimClock:
    return SimClock(start_epoch_ms=0)


# --------------------------------------------------------------------- I2C bus


def test_machine_i2c_surface_reads_and_writes_registers(clock: SimClock) -> None:
    bus = I2CBus()
    bus.attach(0x48, ADS1115(clock))
    bus.attach(0x4A, TMP117(clock))
    assert bus.scan() == [0x48, 0x4A]
    assert bus.readfrom_mem(0x48, 0x01, 2) == b"\x85\x83"  # Config reset value
    assert bus.readfrom_mem(0x48, 0x03, 2) == b"\x7f\xff"  # Hi_thresh
    bus.writeto_mem(0x48, 0x02, b"\x12\x34")
    buf = bytearray(2)
    bus.readfrom_mem_into(0x48, 0x02, buf)
    assert buf == b"\x12\x34"
    # Pointer write then a plain read, as a register-pointer part expects.
    assert bus.writeto(0x4A, b"\x0f") == 1
    assert bus.readfrom(0x4A, 2) == b"\x01\x17"
    into = bytearray(2)
    bus.writevto(0x4A, [b"\x0f"], stop=False)
    bus.readfrom_into(0x4A, into)
    assert into == b"\x01\x17"
    with pytest.raises(ValueError):
        bus.readfrom_mem(0x48, 0x01, 2, addrsize=12)


def test_missing_part_nacks_with_enodev_and_smbus_with_eremoteio(clock: SimClock) -> None:
    bus = I2CBus()
    bus.attach(0x48, ADS1115(clock))
    with pytest.raises(OSError) as exc:
        bus.readfrom_mem(0x50, 0, 1)
    assert exc.value.errno == errno.ENODEV == 19
    with pytest.raises(OSError) as exc:
        bus.smbus().read_byte_data(0x50, 0)
    assert exc.value.errno == errno.EREMOTEIO == 121
    bus.disconnect(0x48)
    assert bus.scan() == []
    with pytest.raises(OSError) as exc:
        bus.writeto_mem(0x48, 1, b"\x00\x00")
    assert exc.value.errno == errno.ENODEV
    bus.reconnect(0x48)
    assert bus.readfrom_mem(0x48, 1, 2) == b"\x85\x83"
    assert bus.nacks == 3


def test_stuck_bus_times_out_and_corruption_flips_exactly_the_armed_bytes(clock) -> None:
    bus = I2CBus()
    bus.attach(0x48, ADS1115(clock))
    bus.stuck = True
    for call in (bus.scan, lambda: bus.readfrom_mem(0x48, 1, 2)):
        with pytest.raises(OSError) as exc:
            call()
        assert exc.value.errno == errno.ETIMEDOUT
    bus.stuck = False
    bus.corrupt_next(3, mask=0x01)
    assert bus.readfrom_mem(0x48, 1, 2) == b"\x84\x82"
    assert bus.readfrom_mem(0x48, 1, 2) == b"\x84\x83"
    assert bus.readfrom_mem(0x48, 1, 2) == b"\x85\x83"
    assert bus.corrupted_bytes == 3


def test_smbus_words_are_little_endian_on_the_wire(clock: SimClock) -> None:
    bus = I2CBus()
    bus.attach(0x48, TMP117(clock))
    smbus = bus.smbus()
    assert smbus.read_word_data(0x48, 0x0F) == 0x1701  # bytes 0x01, 0x17: LSB first
    assert smbus.read_i2c_block_data(0x48, 0x0F, 2) == [0x01, 0x17]
    smbus.write_word_data(0x48, 0x02, 0x3412)  # goes out as 0x12 0x34
    assert bus.readfrom_mem(0x48, 0x02, 2) == b"\x12\x34"
    smbus.write_i2c_block_data(0x48, 0x03, [0xAB, 0xCD])
    assert smbus.read_i2c_block_data(0x48, 0x03, 2) == [0xAB, 0xCD]
    with pytest.raises(ValueError):
        smbus.read_i2c_block_data(0x48, 0, 33)


def test_sim_time_unwraps_ticks() -> None:
    class Ticks:
        t = (1 << 30) - 5

        def ticks_ms(self) -> int:
            return self.t & ((1 << 30) - 1)

    ticks = Ticks()
    st = SimTime(ticks)
    assert st.now_us() == 0
    ticks.t += 10  # wraps past 2**30
    assert st.now_us() == 10_000


def test_pin_irq_fires_on_the_chosen_edge() -> None:
    seen: list[int] = []
    pin = SimPin("x", 1)
    pin.irq(lambda p: seen.append(p.value()), trigger=SimPin.IRQ_FALLING)
    pin.drive(0)
    pin.drive(1)
    pin.drive(0)
    assert seen == [0, 0]


def test_signal_forms() -> None:
    assert Signal(2.5)(10.0) == 2.5
    assert Signal(lambda t: 2 * t)(1.5) == 3.0
    it = Signal([1, 2])
    assert [it(0), it(0), it(0)] == [1.0, 2.0, 2.0]  # holds the last value
    assert it.exhausted


# -------------------------------------------------------------------- ADS1115


def test_ads1115_single_shot_timing_and_exact_code(clock: SimClock) -> None:
    bus = I2CBus()
    part = bus.attach(0x48, ADS1115(clock, inputs=(1.0, 0.25, 0.0, 0.0)))
    # OS=1, MUX=100 (AIN0-GND), PGA=010 (2.048 V), MODE=1, DR=101 (250 SPS), comparator off.
    bus.writeto_mem(0x48, 0x01, b"\xc5\xa3")
    assert bus.readfrom_mem(0x48, 0x01, 2) == b"\x45\xa3"  # OS reads 0: converting
    clock.advance(3)
    assert bus.readfrom_mem(0x48, 0x01, 2) == b"\x45\xa3"
    clock.advance(1)  # 4 ms = 1/250 s
    assert bus.readfrom_mem(0x48, 0x01, 2) == b"\xc5\xa3"
    assert bus.readfrom_mem(0x48, 0x00, 2) == (16000).to_bytes(2, "big")  # 1 V / 2.048 V
    # AIN0 - AIN1 at PGA 0.256 V saturates at +32767; AIN1 - AIN3 = 0.25 V at 4.096 V.
    bus.writeto_mem(0x48, 0x01, b"\x8b\xa3")
    clock.advance(4)
    assert bus.readfrom_mem(0x48, 0x00, 2) == b"\x7f\xff"
    bus.writeto_mem(0x48, 0x01, b"\xa3\xa3")
    clock.advance(4)
    assert bus.readfrom_mem(0x48, 0x00, 2) == (2000).to_bytes(2, "big")
    assert part.conversions == 3


def test_ads1115_continuous_rate_and_ready_pulses(clock: SimClock) -> None:
    bus = I2CBus()
    part = bus.attach(0x48, ADS1115(clock, inputs=(lambda t: t, 0.0, 0.0, 0.0)))
    pulses: list[int] = []
    part.alert.irq(lambda p: pulses.append(1), trigger=SimPin.IRQ_FALLING)
    bus.writeto_mem(0x48, 0x03, b"\x80\x00")  # Hi MSB 1, Lo MSB 0: conversion ready
    bus.writeto_mem(0x48, 0x02, b"\x00\x00")
    bus.writeto_mem(0x48, 0x01, b"\x44\xe0")  # continuous, 860 SPS, COMP_QUE 00
    clock.advance(1000)
    part.update()
    assert part.conversions == 860
    assert len(pulses) == 860
    assert part.overwritten == 859  # nobody read them
    # The last result is V = t at conversion 860 (1.0 s): 1/2.048*32768.
    assert bus.readfrom_mem(0x48, 0x00, 2) == (16000).to_bytes(2, "big")


def test_ads1115_traditional_comparator_latches_until_read(clock: SimClock) -> None:
    bus = I2CBus()
    level = [0.0]
    part = bus.attach(0x48, ADS1115(clock, inputs=(lambda t: level[0], 0, 0, 0)))
    bus.writeto_mem(0x48, 0x03, (8000).to_bytes(2, "big"))  # Hi = 0.5 V
    bus.writeto_mem(0x48, 0x02, (4000).to_bytes(2, "big"))  # Lo = 0.25 V
    # continuous, AIN0-GND, 2.048 V, 250 SPS, latching, assert after 2 conversions.
    bus.writeto_mem(0x48, 0x01, b"\x44\xa5")
    clock.advance(8)
    assert part.alert.value() == 1
    level[0] = 1.0
    clock.advance(4)
    assert part.alert.value() == 1  # one conversion beyond: not yet
    clock.advance(4)
    assert part.alert.value() == 0  # two: asserted (active low)
    level[0] = 0.0
    clock.advance(8)
    assert part.alert.value() == 0  # latched
    bus.readfrom_mem(0x48, 0x00, 2)
    assert part.alert.value() == 1


# --------------------------------------------------------------------- TMP117


def test_tmp117_conversion_cycle_flags_and_one_shot(clock: SimClock) -> None:
    bus = I2CBus()
    part = bus.attach(0x48, TMP117(clock, temperature=37.0))
    assert bus.readfrom_mem(0x48, 0x00, 2) == b"\x80\x00"  # no result yet
    assert bus.readfrom_mem(0x48, 0x01, 2) == b"\x02\x20"
    clock.advance(125)  # AVG 8: the first result after 125 ms
    assert bus.readfrom_mem(0x48, 0x01, 2) == b"\x22\x20"  # Data_Ready
    assert bus.readfrom_mem(0x48, 0x01, 2) == b"\x02\x20"  # cleared by the read
    assert bus.readfrom_mem(0x48, 0x00, 2) == (4736).to_bytes(2, "big")  # 37 / 0.0078125
    clock.advance(1000)
    part.update()
    assert part.conversions == 2
    # Offset register: -0.5 degC = -64 LSB.
    bus.writeto_mem(0x48, 0x08, (-64 & 0xFFFF).to_bytes(2, "big"))
    bus.writeto_mem(0x48, 0x01, b"\x0c\x00")  # one-shot, AVG 1 (15.5 ms)
    clock.advance(15)
    assert part.conversions == 2
    clock.advance(1)
    assert bus.readfrom_mem(0x48, 0x00, 2) == (4672).to_bytes(2, "big")
    assert bus.readfrom_mem(0x48, 0x01, 2) == b"\x04\x00"  # back in shutdown (MOD 01)
    clock.advance(5000)
    part.update()
    assert part.conversions == 3


# ------------------------------------------------------------------- MAX30102


def max_setup(bus: I2CBus, regs: dict[int, int]) -> None:
    for reg, value in regs.items():
        bus.writeto_mem(0x57, reg, bytes([value]))


def test_max30102_fifo_bytes_pointers_and_resolution(clock: SimClock) -> None:
    bus = I2CBus()
    part = bus.attach(0x57, MAX30102(clock, red=100.0, ir=lambda t: 200.0))
    assert bus.readfrom_mem(0x57, 0xFF, 1) == b"\x15"
    assert bus.readfrom_mem(0x57, 0x00, 1) == b"\x01"  # PWR_RDY, cleared by reading
    assert bus.readfrom_mem(0x57, 0x00, 1) == b"\x00"
    # 4096 nA range, 100 sps, 411 us (18 bit); red 10 mA, IR 5 mA; SpO2 mode.
    max_setup(bus, {0x0A: 0x27, 0x0C: 50, 0x0D: 25, 0x09: 0x03})
    clock.advance(50)
    assert bus.readfrom_mem(0x57, 0x04, 3) == b"\x05\x00\x00"  # WR_PTR 5, OVF 0, RD_PTR 0
    # red: 100 nA/mA * 10 mA = 1000 nA of 4096 -> 1000/4096 * 2**18 = 64000 = 0x00FA00
    # IR: 200 * 5 = 1000 nA -> the same count.
    assert bus.readfrom_mem(0x57, 0x07, 6) == b"\x00\xfa\x00\x00\xfa\x00"
    assert bus.readfrom_mem(0x57, 0x06, 1) == b"\x01"
    assert part.fifo_count == 4
    # 15-bit resolution (69 us): the 3 low bits read 0.  Doubling LED current doubles it.
    max_setup(bus, {0x04: 0, 0x06: 0, 0x0A: 0x24, 0x0C: 100, 0x0D: 25})
    clock.advance(10)
    data = bus.readfrom_mem(0x57, 0x07, 6)
    assert int.from_bytes(data[:3], "big") == 128000
    part.red = Signal(100.03)  # 128038.4 -> 128038 -> low 3 bits cleared -> 128032
    clock.advance(10)
    assert int.from_bytes(bus.readfrom_mem(0x57, 0x07, 3), "big") == 128032


def test_max30102_overflow_counter_rollover_and_almost_full(clock: SimClock) -> None:
    bus = I2CBus()
    n = [0]

    def ramp(t: float) -> float:
        n[0] += 1
        return n[0] * 4096 / (1 << 18) / 10  # count = n at 10 mA

    part = bus.attach(0x57, MAX30102(clock, red=ramp))
    max_setup(bus, {0x08: 0x00, 0x02: 0x80, 0x0A: 0x27, 0x0C: 50, 0x09: 0x02})  # HR mode
    clock.advance(320)  # 32 samples: FIFO full, A_FULL (0 free slots)
    assert part.irq.value() == 0
    assert bus.readfrom_mem(0x57, 0x00, 1)[0] & 0x80
    clock.advance(100)  # 10 more: lost, rollover off
    assert bus.readfrom_mem(0x57, 0x04, 3) == b"\x00\x0a\x00"
    first = bus.readfrom_mem(0x57, 0x07, 3)
    assert int.from_bytes(first, "big") == 1  # the oldest kept sample
    # Rollover on: the oldest are overwritten, the counter saturates at 0x1F.
    max_setup(bus, {0x04: 0, 0x05: 0, 0x06: 0, 0x08: 0x10})
    clock.advance(700)  # 70 samples into 32 slots
    assert bus.readfrom_mem(0x57, 0x05, 1) == b"\x1f"
    assert part.samples_lost == 10 + 38
    rd = bus.readfrom_mem(0x57, 0x06, 1)[0]
    assert rd == bus.readfrom_mem(0x57, 0x04, 1)[0]
    assert int.from_bytes(bus.readfrom_mem(0x57, 0x07, 3), "big") == 42 + 70 - 31


def test_max30102_die_temperature_and_reset(clock: SimClock) -> None:
    bus = I2CBus()
    part = bus.attach(0x57, MAX30102(clock, die_temp_c=-3.25))
    bus.writeto_mem(0x57, 0x21, b"\x01")
    clock.advance(28)
    assert bus.readfrom_mem(0x57, 0x21, 1) == b"\x01"
    clock.advance(1)
    assert bus.readfrom_mem(0x57, 0x1F, 3) == b"\xfc\x0c\x00"  # -4 + 12/16, TEMP_EN cleared
    assert bus.readfrom_mem(0x57, 0x01, 1) == b"\x02"  # DIE_TEMP_RDY
    bus.writeto_mem(0x57, 0x0C, b"\x33")
    bus.writeto_mem(0x57, 0x09, b"\x40")  # RESET
    assert bus.readfrom_mem(0x57, 0x09, 5) == b"\x00\x00\x00\x00\x00"
    assert part.regs[0x0C] == 0


# -------------------------------------------------------------------- ADS1292


def spi_cmd(spi: SPIBus, cs: SimPin, data: bytes) -> bytes:
    cs.value(0)
    out = bytearray(len(data))
    spi.write_readinto(data, out)
    cs.value(1)
    return bytes(out)


def test_ads1292_registers_need_sdatac_and_frames_are_exact(clock: SimClock) -> None:
    spi = SPIBus(polarity=0, phase=1)
    part = ADS1292(clock, ch1=0.001, ch2=lambda t: -0.0005)
    cs = spi.attach(part)
    assert spi_cmd(spi, cs, b"\x20\x00\x00")[2] == 0x00  # RDATAC: RREG ignored
    spi_cmd(spi, cs, b"\x11")  # SDATAC
    assert spi_cmd(spi, cs, b"\x20\x01\x00\x00") == b"\x00\x00\x73\x02"  # ID, CONFIG1
    spi_cmd(spi, cs, b"\x41\x00\x01")  # CONFIG1: 250 SPS
    spi_cmd(spi, cs, b"\x42\x00\x00")  # CONFIG2: bit 7 stays 1
    assert spi_cmd(spi, cs, b"\x21\x01\x00\x00")[2:] == b"\x01\x80"
    spi_cmd(spi, cs, b"\x08")  # START
    assert part.drdy.value() == 1
    clock.advance(4)
    assert part.drdy.value() == 0
    frame = spi_cmd(spi, cs, b"\x12" + bytes(9))[1:]  # RDATA
    # 1 mV at gain 6, VREF 2.42 V: round(0.001 * 6 / 2.42 * 2**23) = 20798
    assert frame == b"\xc0\x00\x00" + (20798).to_bytes(3, "big") + (
        (-10399) & 0xFFFFFF).to_bytes(3, "big")
    assert part.drdy.value() == 1
    # Lead-off comparators on: the status word carries LOFF_STAT, the channel saturates.
    spi_cmd(spi, cs, b"\x42\x00\x40")
    part.set_lead_off(in2p=True)
    clock.advance(4)
    frame = spi_cmd(spi, cs, b"\x12" + bytes(9))[1:]
    assert frame[:3] == bytes([0xC2, 0x00, 0x00])  # 1100 00100 00 + 13 zeros
    assert frame[6:] == b"\x7f\xff\xff"
    clock.advance(40)  # 10 conversions unread: 9 overwritten
    part.update()
    assert part.frames_overwritten == 9


def test_ads1292_rdatac_test_signal_wrong_mode_and_disconnect(clock: SimClock) -> None:
    spi = SPIBus(polarity=0, phase=1)
    part = ADS1292(clock)
    cs = spi.attach(part)
    spi_cmd(spi, cs, b"\x11")
    # CONFIG2: INT_TEST on, DC test signal; CH1 test signal at gain 1.
    spi_cmd(spi, cs, b"\x42\x00\xa2")
    spi_cmd(spi, cs, b"\x44\x00\x15")
    spi_cmd(spi, cs, b"\x08\x10")  # START, RDATAC
    clock.advance(2)
    frame = spi_cmd(spi, cs, bytes(9))
    assert frame[3:6] == round(2.42 / 2400 / 2.42 * 2**23).to_bytes(3, "big")
    spi.init(phase=0)  # mode 0: the bits come out shifted
    garbled = spi_cmd(spi, cs, bytes(9))
    assert garbled != frame and garbled[0] == (0xC0 >> 1) | 0x80
    spi.init(phase=1)
    spi.disconnect(part)
    assert spi_cmd(spi, cs, bytes(3)) == b"\xff\xff\xff"
    assert spi.read(2) == b"\xff\xff"  # nothing selected
    with pytest.raises(ValueError):
        spi.write_readinto(b"\x00", bytearray(2))


def test_parts_follow_a_signal_in_simulated_time(clock: SimClock) -> None:
    bus = I2CBus()
    part = bus.attach(0x48, ADS1115(clock, inputs=(sine(1.0, 1.0), 0, 0, 0)))
    bus.writeto_mem(0x48, 0x01, b"\x42\xa3")  # continuous AIN0-GND 4.096 V 250 SPS
    clock.advance(250)  # a quarter period: sin = 1 at conversion 62.5 -> 62 (t = 0.248 s)
    code = int.from_bytes(bus.readfrom_mem(0x48, 0, 2), "big", signed=True)
    assert code == round(__import__("math").sin(2 * 3.141592653589793 * 0.248) / 4.096 * 32768)
    assert part.conversions == 62


def test_pin_irq_handler_errors_propagate_or_are_dropped_as_micropython_does() -> None:
    pin = SimPin("ALERT/RDY", 1)

    def nacked(p: SimPin) -> None:
        raise OSError(errno.ENODEV, "I2C address 0x48 did not acknowledge")

    pin.irq(nacked, trigger=SimPin.IRQ_FALLING)
    with pytest.raises(OSError):
        pin.drive(0)
    pin.drive(1)
    pin.drop_irq_errors = True  # a soft IRQ: MicroPython prints and drops it
    pin.drive(0)
    pin.drive(1)
    pin.drive(0)
    assert pin.irq_errors == 2 and pin.value() == 0
