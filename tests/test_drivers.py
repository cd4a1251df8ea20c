"""Firmware drivers (firmware/hw/drivers) against the register-level emulated parts.

Both bus surfaces are exercised: MicroPython's ``machine.I2C`` (sim.bus.I2CBus)
and smbus2's ``SMBus`` (``I2CBus.smbus()``), with exact register bytes.
"""

from __future__ import annotations

import errno
import math
from array import array
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.device import Device, DeviceConfig
from firmware.hw.drivers.ads1115 import ADS1115, MUX_AIN0_AIN1
from firmware.hw.drivers.ads1292 import ADS1292
from firmware.hw.drivers.max30102 import MAX30102, MODE_HR
from firmware.hw.drivers.tmp117 import TMP117
from firmware.hw.sensors import (
    Ads1115EcgSource,
    Ads1292EcgSource,
    Max30102PpgSource,
    RatioScaler,
)
from firmware.hw.state import MemoryState
from firmware.net.links.memory import MemoryLink
from sim.bus import I2CBus, SPIBus
from sim.clock import SimClock
from sim.ecgsyn import EcgsynParams, ecgsyn
from sim.parts import samples_signal
from sim.parts.ads1115 import ADS1115 as EmuADS1115
from sim.parts.ads1292 import ADS1292 as EmuADS1292
from sim.parts.max30102 import MAX30102 as EmuMAX30102
from sim.parts.tmp117 import TMP117 as EmuTMP117
from sim.sources import mv_to_counts


@pytest.fixture()
def clock() -> SimClock:
    return SimClock(start_epoch_ms=0)


def surfaces(bus: I2CBus) -> list[object]:
    return [bus, bus.smbus()]


# --------------------------------------------------------------------- TMP117


@pytest.mark.parametrize("smbus", [False, True])
def test_tmp117_configures_and_reads_millicelsius(clock: SimClock, smbus: bool) -> None:
    bus = I2CBus()
    part = bus.attach(0x48, EmuTMP117(clock, temperature=lambda t: 36.0 + t / 10))
    drv = TMP117(bus.smbus() if smbus else bus, averages=8, conversion_cycle_ms=250)
    assert part.regs[1] & 0x0FFC == (2 << 7) | (1 << 5)  # CONV 010, AVG 01
    assert drv.cycle_ms == 250 and drv.revision == 0
    clock.advance(125)
    assert drv.data_ready()
    assert drv.read_temperature_mc() == 36016  # 36.0125 degC -> 4610 LSB -> 36015.6 m degC
    clock.advance(250)
    assert drv.read_raw() == round((36.0 + 0.375 / 10) / 0.0078125)


def test_tmp117_wrong_part_and_missing_part_raise_oserror_naming_it(clock: SimClock) -> None:
    bus = I2CBus()
    bus.attach(0x48, EmuADS1115(clock))
    with pytest.raises(OSError, match="TMP117 at 0x48: device ID 0x7fff"):
        TMP117(bus)
    with pytest.raises(OSError) as exc:
        TMP117(bus, address=0x49)
    assert exc.value.errno == errno.ENODEV
    assert "TMP117 at 0x49" in str(exc.value) and "3 tries" in str(exc.value)
    with pytest.raises(ValueError, match="averages"):
        TMP117(bus, averages=4)
    with pytest.raises(ValueError, match="conversion_cycle_ms"):
        TMP117(bus, averages=64, conversion_cycle_ms=125)


def test_tmp117_retries_a_transient_fault_and_gives_up_on_a_lasting_one(clock) -> None:
    bus = I2CBus()
    bus.attach(0x48, EmuTMP117(clock, temperature=37.0))
    drv = TMP117(bus)
    clock.advance(125)

    calls = {"n": 0}
    real = bus.readfrom_mem_into

    def flaky(addr: int, reg: int, buf: bytearray, **kw: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.EIO, "glitch")
        real(addr, reg, buf, **kw)

    bus.readfrom_mem_into = flaky  # type: ignore[method-assign]
    assert drv.read_temperature_mc() == 37000
    assert drv._regs.errors == 1
    bus.readfrom_mem_into = real  # type: ignore[method-assign]
    bus.stuck = True
    with pytest.raises(OSError) as exc:
        drv.read_raw()
    assert exc.value.errno == errno.ETIMEDOUT
    assert drv._regs.errors == 4
    bus.stuck = False
    assert drv.read_temperature_mc() == 37000


# -------------------------------------------------------------------- ADS1115


@pytest.mark.parametrize("smbus", [False, True])
def test_ads1115_single_shot_register_bytes_and_microvolts(clock: SimClock, smbus: bool) -> None:
    bus = I2CBus()
    part = bus.attach(0x48, EmuADS1115(clock, inputs=(0.0, 1.234567, 0.0, 0.0)))
    drv = ADS1115(bus.smbus() if smbus else bus, data_rate_sps=475, full_scale_mv=4096,
                  mux=5, sleep=clock.advance)
    # MUX 101, PGA 001, MODE 1, DR 110, comparator off
    assert part.regs[1] & 0x7FFF == 0x53C3
    code = drv.read_raw()
    assert code == round(1.234567 / 4.096 * 32768) == 9877
    assert drv.read_uv() == round(9877 * 4096000 / 32768)
    assert part.conversions == 2


def test_ads1115_without_a_part_fails_the_config_read_back(clock: SimClock) -> None:
    bus = I2CBus()
    bus.attach(0x48, EmuTMP117(clock))  # answers, but is not an ADS1115
    with pytest.raises(OSError, match="ADS1115 at 0x48: config"):
        ADS1115(bus)
    with pytest.raises(ValueError, match="data_rate_sps"):
        ADS1115(bus, data_rate_sps=100)


# ------------------------------------------------------------------- MAX30102


@pytest.mark.parametrize("smbus", [False, True])
def test_max30102_init_bytes_fifo_values_and_overflow(clock: SimClock, smbus: bool) -> None:
    bus = I2CBus()
    part = bus.attach(0x57, EmuMAX30102(clock, red=lambda t: 100.0, ir=lambda t: 150.0))
    drv = MAX30102(bus.smbus() if smbus else bus, sample_rate_sps=200, sample_average=2,
                   pulse_width_us=215, adc_range_na=8192, led_current_ma=(10.0, 6.4))
    regs = part.regs
    assert (regs[0x08], regs[0x09], regs[0x0A], regs[0x0C], regs[0x0D]) == (
        0x2F, 0x03, 0x4A, 50, 32)
    clock.advance(100)  # 200 sps / 2 averages = 100 entries/s -> 10
    red, ir = array("l", [0] * 32), array("l", [0] * 32)
    assert drv.read_fifo(red, ir, 32) == 10
    # red 100 nA/mA * 10 mA = 1000 nA of 8192 -> 32000; IR 150 * 6.4 = 960 -> 30720 (17 bit)
    assert list(red[:10]) == [32000] * 10 and list(ir[:10]) == [30720] * 10
    clock.advance(500)  # 50 entries into 32 slots: 18 lost
    assert drv.available() == 32 and drv.overflows == 18
    assert drv.read_fifo(red, ir, 5) == 5
    drv.set_led_current_ma(20.0, 6.4)
    assert part.regs[0x0C] == 100
    drv.start_die_temperature()
    clock.advance(30)
    assert drv.die_temperature_ready()
    assert drv.read_die_temperature_mc() == 30000


def test_max30102_ppg_source_heart_rate_mode_and_wrong_part(clock: SimClock) -> None:
    bus = I2CBus()
    bus.attach(0x57, EmuMAX30102(clock, red=lambda t: 100.0 + 10 * math.sin(2 * math.pi * t)))
    drv = MAX30102(bus, mode=MODE_HR, sample_rate_sps=50, led_current_ma=(10.0, 0.0))
    src = Max30102PpgSource(drv, led="red", shift_bits=2)
    clock.advance(1000)
    buf = array("h", bytes(128))
    n = src.read_samples(buf, 64)
    assert n == 32  # the FIFO holds 32; 18 were lost
    assert src.overflows == 18
    with pytest.raises(ValueError, match="no IR channel"):
        Max30102PpgSource(drv, led="ir")
    other = I2CBus()
    other.attach(0x57, EmuTMP117(clock))
    with pytest.raises(OSError, match="MAX30102 at 0x57: part ID"):
        MAX30102(other)


# -------------------------------------------------------------------- ADS1292


def make_afe(clock: SimClock, **signals: object) -> tuple[EmuADS1292, ADS1292, SPIBus]:
    spi = SPIBus()
    part = EmuADS1292(clock, **signals)
    cs = spi.attach(part)
    drv = ADS1292(spi, cs, part.drdy, data_rate_sps=250, gain=(1, 6), sleep=clock.advance)
    return part, drv, spi


def test_ads1292_init_writes_the_registers_and_reads_frames(clock: SimClock) -> None:
    part, drv, spi = make_afe(clock, ch1=0.1, ch2=lambda t: 0.002)
    assert (spi.polarity, spi.phase) == (0, 1)
    assert bytes(part.regs[1:8]) == bytes([0x01, 0xE0, 0x10, 0x10, 0x00, 0x20, 0x0F])
    assert drv.device_id == 0x73
    assert not drv.read_frame()  # not started: DRDY high
    drv.start()
    clock.advance(4)
    assert drv.read_frame()
    assert drv.ch1 == round(0.1 / 2.42 * 2**23) and drv.ch2 == round(0.002 * 6 / 2.42 * 2**23)
    assert drv.status == 0xC00000 and drv.lead_off == 0
    assert not drv.read_frame()
    part.set_lead_off(in2n=True, rld=True)
    clock.advance(4)
    assert drv.read_frame() and drv.lead_off == 0x18 and drv.ch2 == 0x7FFFFF
    spi.corrupt_next(1, mask=0x80)  # status header 0x40..: rejected and counted
    clock.advance(4)
    assert not drv.read_frame() and drv.bad_frames == 1


def test_ads1292_wrong_id_and_bad_options(clock: SimClock) -> None:
    spi = SPIBus()
    part = EmuADS1292(clock, device_id=0x51)
    cs = spi.attach(part)
    with pytest.raises(OSError, match="ADS1292: ID register 0x51"):
        ADS1292(spi, cs, sleep=clock.advance)
    spi.disconnect(part)
    with pytest.raises(OSError, match="ID register 0xff"):
        ADS1292(spi, cs, sleep=clock.advance)
    with pytest.raises(ValueError, match="gain"):
        ADS1292(spi, cs, gain=(5, 6))


# ------------------------------------------------------ sources and device loop


@given(st.integers(-(2**24) + 1, 2**24 - 1))
def test_ratio_scaler_rounds_exactly(x: int) -> None:
    for num, den in ((2420000 * 200, 6 * 8388608 * 1000), (2048000 * 200, 32768 * 100 * 1000),
                     (7, 3), (1, 1)):
        s = RatioScaler(num, den)
        exact = Fraction(abs(x) * s.num, s.den)
        want = int(exact + Fraction(1, 2)) * (1 if x >= 0 else -1)
        assert s.apply(x) == want
        assert abs(Fraction(s.num, s.den) - Fraction(num, den)) * 2**24 < Fraction(1, 20)


def ecg_counts(seconds: int, fs: int, seed: int = 5) -> np.ndarray:
    ecg = ecgsyn(seconds, EcgsynParams(sample_rate_hz=fs, heart_rate_mean_bpm=72),
                 np.random.default_rng(seed))
    return mv_to_counts(ecg.signal_mv).astype(np.int64)


@pytest.mark.parametrize("use_irq", [True, False])
def test_ads1292_source_delivers_exactly_the_counts_that_went_in(clock, use_irq: bool) -> None:
    counts = ecg_counts(4, 250)
    volts = samples_signal(counts, scale=1e-3 / 200)  # 200 counts per mV
    part, drv, _ = make_afe(clock, ch2=volts)
    src = Ads1292EcgSource(drv, channel=2, use_irq=use_irq)
    drv.start()
    out = array("h")
    buf = array("h", bytes(128))
    step_ms = 40 if use_irq else 4
    for _ in range(4000 // step_ms):
        clock.advance(step_ms)
        if use_irq:
            part.update()  # the board's DRDY interrupt fires for every conversion
        n = src.read_samples(buf, 64)
        out.extend(buf[:n])
    assert len(out) == 1000 and part.frames_overwritten == 0
    assert list(out) == counts.tolist()


def test_ads1115_source_through_an_ecg_front_end_is_exact(clock: SimClock) -> None:
    counts = ecg_counts(2, 250)
    # AD8232-like front end: gain 100 around a 1.65 V reference on AIN1.
    ain0 = samples_signal(counts, scale=1e-3 / 200 * 100, offset=1.65)
    bus = I2CBus()
    part = bus.attach(0x48, EmuADS1115(clock, inputs=(ain0, 1.65, 0.0, 0.0)))
    adc = ADS1115(bus, data_rate_sps=250, full_scale_mv=2048, mux=MUX_AIN0_AIN1,
                  continuous=True, ready_pin=True)
    src = Ads1115EcgSource(adc, frontend_gain=100, ready_pin=part.alert, use_irq=True)
    out = array("h")
    buf = array("h", bytes(128))
    for _ in range(50):
        clock.advance(40)
        part.update()
        out.extend(buf[: src.read_samples(buf, 64)])
    assert list(out) == counts.tolist()
    # Paced by the clock instead of the RDY pin: one read per due conversion.
    paced = Ads1115EcgSource(adc, frontend_gain=100, clock=clock)
    clock.advance(4)
    assert paced.read_samples(buf, 64) == 1 and paced.dropped == 0
    clock.advance(12)
    assert paced.read_samples(buf, 64) == 1 and paced.dropped == 2


def test_device_loop_runs_on_the_afe_as_on_an_array_source(clock: SimClock) -> None:
    counts = ecg_counts(20, 250, seed=9)
    part, drv, _ = make_afe(clock, ch2=samples_signal(counts, scale=1e-3 / 200))
    src = Ads1292EcgSource(drv, use_irq=True)
    drv.start()
    link = MemoryLink()
    dev = Device(DeviceConfig("dev-afe-1", 250), src, link, clock, MemoryState())
    for _ in range(500):
        clock.advance(40)
        part.update()
        dev.step()
    assert dev.samples == 5000 and dev.reports == 20
    hr = dev.heart_rate_bpm()
    assert hr is not None and abs(hr - 72) <= 6


def test_tmp117_limits_offset_and_alert_pin(clock: SimClock) -> None:
    bus = I2CBus()
    temp = [37.0]
    part = bus.attach(0x48, EmuTMP117(clock, temperature=lambda t: temp[0]))
    drv = TMP117(bus, averages=1, conversion_cycle_ms=125)
    drv.set_limits_mc(36000, 38000)
    assert part.regs[2] == 38000 * 16 // 125 and part.regs[3] == 36000 * 16 // 125
    drv.set_offset_mc(-500)
    assert part.regs[8] == (-64) & 0xFFFF
    clock.advance(16)
    assert drv.read_temperature_mc() == 36500
    assert part.alert.value() == 1
    temp[0] = 39.0
    clock.advance(125)
    part.update()
    assert part.alert.value() == 0  # HIGH_Alert, active low
    assert bus.readfrom_mem(0x48, 0x01, 2)[0] & 0x80  # reading clears it (alert mode)
    assert part.alert.value() == 1
    with pytest.raises(ValueError):
        drv.set_limits_mc(38000, 36000)


def test_ads1292_source_needs_drdy(clock: SimClock) -> None:
    spi = SPIBus()
    part = EmuADS1292(clock)
    drv = ADS1292(spi, spi.attach(part), None, sleep=clock.advance)
    with pytest.raises(ValueError, match="DRDY"):
        Ads1292EcgSource(drv)


@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 40)), min_size=1, max_size=12),
       st.booleans())
def test_max30102_fifo_accounting_matches_the_emulated_part(steps, rollover: bool) -> None:
    """Whatever the timing, the driver gets every sample the part kept, in order,
    and ``overflows`` counts the samples the part lost (exactly, unless OVF_COUNTER
    saturated at 31 between two reads)."""
    clock = SimClock(start_epoch_ms=0)
    bus = I2CBus()
    n = [0]

    def ramp(t: float) -> float:
        n[0] += 1
        return n[0] * 2048 / (1 << 18) / 10  # count = n at 10 mA, 2048 nA range

    part = bus.attach(0x57, EmuMAX30102(clock, red=ramp))
    drv = MAX30102(bus, mode=MODE_HR, sample_rate_sps=100, adc_range_na=2048,
                   led_current_ma=(10.0, 0.0), rollover=rollover)
    red = array("l", [0] * 32)
    got: list[int] = []
    for advance_ms, want in steps:
        clock.advance(advance_ms)
        k = drv.read_fifo(red, None, want)
        got.extend(red[:k])
    got_all = got + [red[i] for i in range(drv.read_fifo(red, None, 32))]
    assert got_all == sorted(set(got_all))  # in order, no duplicates
    assert len(got_all) + part.samples_lost == part.samples_made
    assert drv.overflows <= part.samples_lost
    if part.samples_lost <= 31:
        assert drv.overflows == part.samples_lost
