"""30 days of uptime through the wraps of the 2**30 ms tick counter (issue 9 item 9).

``ticks_ms`` wraps at 2**30 ms (MicroPython, and ``firmware.hw.compat`` on
CPython) and ``ticks_diff`` is valid only for spans under 2**29 ms (6.2
days).  The paced sources used to measure the absolute time since start, so
after 6.2 days they delivered nothing while the device stayed online; they
now count samples on the span since the previous read
(``firmware.hw.sources.SamplePacer``).

The scenario (:data:`SCENARIO`, MicroPython subset) starts the device's ticks
at ``2**30 - 5000``, so they wrap 5 s, 12.4 days and 24.9 days after the
start, and runs sampling bursts just after the start (across the first
wrap), past 6.2 days, at day 7, across the second and the third wrap and at
day 30.  Between bursts the clock hops forward up to 6 hours at a time, every
source read once per hop (running millions of samples per day would take
minutes).  At each burst it checks that

- the paced :class:`ArraySource` (1 Hz, so that 30 days of samples fit in
  memory: 2.6 M) has delivered exactly ``floor(elapsed_s)`` samples since the
  start, every one the next of the array;
- the polled ADS1115 source (inside a :class:`Device`) reads one result per
  conversion that came due in the burst, loses none, and that over the whole
  run every conversion is either read or counted in ``dropped``;
- the IRQ-driven sources deliver every conversion;

and at day 7, across the third wrap and at day 30 it cuts the device's MQTT
link, refuses ``FAILS`` connects, and checks that every retry, the
successful one included, comes within ``1.25 * backoff_max_ms`` of the
previous attempt (plus one loop step).

It runs three ways: in the real MicroPython VM and under CPython with tiny
register fakes (:data:`FAKE_RIG`; the outputs must be equal, and in the VM
the paced reads at day 30 allocate nothing), and under CPython on the
simulator's register-level emulated parts (:class:`EmulatedRig`: I2C
ADS1115s, an SPI ADS1292, :class:`sim.clock.SimClock` started near the
wrap).  The parts run on their own clock, advanced only during the bursts:
an emulated ADC catching up 21.6 M conversions per day would take minutes,
and a polled source sees only the latest result anyway.
"""

from __future__ import annotations

import io
import random
from contextlib import redirect_stdout

import pytest

from firmware.hw.drivers.ads1115 import ADS1115, MUX_AIN0_AIN1
from firmware.hw.drivers.ads1292 import ADS1292
from firmware.hw.sensors import Ads1115EcgSource, Ads1292EcgSource
from firmware.hw.sources import ArraySource, SamplePacer
from firmware.net.backoff import Backoff
from sim.bus import I2CBus, SPIBus
from sim.clock import SimClock
from sim.parts.ads1115 import ADS1115 as EmuADS1115
from sim.parts.ads1292 import ADS1292 as EmuADS1292

TICKS_PERIOD = 1 << 30
START_TICKS = TICKS_PERIOD - 5000
EPOCH_MS = 1764000000000
BACKOFF_MAX_MS = 2000
STEPS_MS = (1, 3, 4, 2, 4, 3, 4, 1, 4, 4)  # each <= one conversion period: a poll per conversion
STEP_MAX_MS = max(STEPS_MS)
PARAMS = (f"START_TICKS = {START_TICKS}\nEPOCH_MS = {EPOCH_MS}\n"
          f"BACKOFF_MAX_MS = {BACKOFF_MAX_MS}\nSTEPS_MS = {STEPS_MS!r}\n")

SCENARIO = r"""
import gc
from array import array
from firmware.device import Device, DeviceConfig
from firmware.hw.sensors import Ads1115EcgSource
from firmware.hw.sources import ArraySource
from firmware.hw.state import MemoryState
from firmware.net.links.memory import MemoryLink

try:
    from micropython import const  # noqa: F401
    VM = True
except ImportError:
    VM = False

DAY_MS = 86400000
WRAP_MS = 1 << 30
FIRST_WRAP_MS = 5000  # the ticks start 5 s before their first wrap
HOP_MS = 6 * 3600000
ARRAY_HZ = 1
ADC_SPS = 250
RAMP = 16384  # array value = index % RAMP
BACKOFF_MIN_MS = 250
FAILS = 6  # 250, 500, 1000, 2000, 2000, 2000 ms (+ up to 25 %): the cap is reached


class FlakyLink(MemoryLink):
    # A broker connection that refuses `fail` connects, recording when each attempt came.
    def __init__(self, clock):
        MemoryLink.__init__(self)
        self.clock = clock
        self.fail = 0
        self.attempts = []

    def connect(self, will_topic, will_payload):
        self.attempts.append(self.clock.elapsed_ms)
        if self.fail:
            self.fail -= 1
            raise OSError(111, "connection refused")
        MemoryLink.connect(self, will_topic, will_payload)


def run(rig):
    clock = rig.clock
    ramp = array("h", bytes(array("h", range(RAMP))) * 160)  # 2,621,440 s: 30.3 days at 1 Hz
    paced = ArraySource(ramp, sample_rate_hz=ARRAY_HZ, clock=clock)
    polled = Ads1115EcgSource(rig.polled_adc, 100, clock=clock)
    link = FlakyLink(clock)
    cfg = DeviceConfig("dev-wrap-1", ADC_SPS, backoff_min_ms=BACKOFF_MIN_MS,
                       backoff_max_ms=BACKOFF_MAX_MS)
    dev = Device(cfg, polled, link, clock, MemoryState())
    buf = array("h", bytes(128))
    state = {"out_of_order": 0, "step": 0, "wraps": 0, "ticks": clock.ticks_ms()}

    def step(dt, live=True):
        clock.advance(dt)
        if clock.ticks_ms() < state["ticks"]:
            state["wraps"] += 1  # steps are far shorter than 2**30 ms: one wrap at most
        state["ticks"] = clock.ticks_ms()
        if live:
            rig.run_parts(dt)
        dev.step()
        while True:
            pos = paced.position
            n = paced.read_samples(buf, 64)
            if not n:
                break
            if buf[0] != pos % RAMP or buf[n - 1] != (pos + n - 1) % RAMP:
                state["out_of_order"] += 1
        for name, src, part in rig.irq:
            while src.read_samples(buf, 64):
                pass

    def next_step():
        i = state["step"]
        state["step"] = i + 1
        step(STEPS_MS[i % len(STEPS_MS)])

    def hop_to(t):
        while clock.elapsed_ms < t:
            left = t - clock.elapsed_ms
            step(left if left < HOP_MS else HOP_MS, live=False)

    def burst(label, ms, drop=False):
        next_step()  # the first poll after a hop takes the results that came due meanwhile
        t0 = clock.elapsed_ms
        w0 = state["wraps"]
        s0, d0 = polled.samples, polled.dropped
        irq0 = [(src.samples, part.conversions) for name, src, part in rig.irq]
        if drop:
            link.fail = FAILS
            link.attempts = []
            sent0 = len(link.published)
            link.drop()
        while clock.elapsed_ms < t0 + ms or (drop and not link.connected()
                                             and clock.elapsed_ms < t0 + 60000):
            next_step()
        for _ in range(100):  # a little more after the reconnect: the queue drains
            next_step()
        t1 = clock.elapsed_ms
        due = t1 * ADC_SPS // 1000 - t0 * ADC_SPS // 1000
        words = ["burst", label, "wraps=%d" % state["wraps"],
                 "wraps_in_burst=%d" % (state["wraps"] - w0),
                 "polled=%d/%d" % (polled.samples - s0, due),
                 "accounted=%d/%d" % (polled.samples + polled.dropped, t1 * ADC_SPS // 1000),
                 "lost_in_burst=%d" % (polled.dropped - d0),
                 "array=%d/%d" % (paced.position, t1 * ARRAY_HZ // 1000),
                 "out_of_order=%d" % state["out_of_order"]]
        for k in range(len(rig.irq)):
            name, src, part = rig.irq[k]
            words.append("%s=%d/%d" % (name, src.samples - irq0[k][0],
                                       part.conversions - irq0[k][1]))
            words.append("%s_dropped=%d" % (name, src.dropped))
        print(" ".join(words))
        if drop:
            at = link.attempts
            gaps = [at[i] - at[i - 1] for i in range(1, len(at))]
            print("outage", label, "attempts=%d/%d" % (len(at), FAILS + 1),
                  "first_ms=%d" % (at[0] - t0), "connected=%d" % link.connected(),
                  "published=%d" % (len(link.published) - sent0),
                  "queued=%d" % len(dev.outbox),
                  "gaps=" + ",".join([str(g) for g in gaps]))

    def measure(src, period_ms):
        # bytes allocated by 20 paced reads, one sample period apart (VM only)
        gc.collect()
        gc.disable()
        before = gc.mem_alloc() if VM else 0
        for _ in range(20):
            clock.advance(period_ms)
            src.read_samples(buf, 64)
        used = gc.mem_alloc() - before if VM else 0
        gc.enable()
        return used

    burst("start", 10000)  # across the first wrap, 5 s after the start
    hop_to((1 << 29) + 60000)
    burst("6.2d", 2000)  # past 2**29 ms: a span from the start reads negative here
    hop_to(7 * DAY_MS)
    burst("day7", 2000, drop=True)
    hop_to(FIRST_WRAP_MS + WRAP_MS - 1000)
    burst("wrap2", 2000)  # 12.4 days
    hop_to(FIRST_WRAP_MS + 2 * WRAP_MS - 3000)
    burst("wrap3", 2000, drop=True)  # 24.9 days: the retries straddle the wrap
    hop_to(30 * DAY_MS)
    burst("day30", 2000, drop=True)
    print("alloc", measure(paced, 1000 // ARRAY_HZ), measure(polled, 1000 // ADC_SPS))
"""

FAKE_RIG = r"""
from firmware.hw.drivers.ads1115 import ADS1115, MUX_AIN0_AIN1
from firmware.hw.sensors import Ads1115EcgSource

MASK = 0x3FFFFFFF


class WrapClock:
    # The device clock: ticks start at `start` and wrap at 2**30.  True time is kept as
    # laps + ticks, so advance() stays in small ints (nothing allocated in the VM).
    def __init__(self, start):
        self.start = start
        self.ticks = start
        self.laps = 0

    def advance(self, ms):
        room = MASK - self.ticks
        if ms <= room:
            self.ticks += ms
        else:
            self.ticks = ms - room - 1
            self.laps += 1

    @property
    def elapsed_ms(self):
        return self.laps * (MASK + 1) + self.ticks - self.start

    def ticks_ms(self):
        return self.ticks

    def epoch_ms(self):
        return EPOCH_MS + self.elapsed_ms


class FakeAds1115:
    # An ADS1115's registers on a machine.I2C-like bus, converting at `sps` in its own
    # time; it doubles as its ALERT/RDY pin (irq).
    IRQ_FALLING = 4

    def __init__(self, sps):
        self.regs = [0x0000, 0x8583, 0x8000, 0x7FFF]
        self.sps = sps
        self.us = 0
        self.conversions = 0
        self.handler = None

    def readfrom_mem_into(self, addr, reg, buf, addrsize=8):
        v = self.regs[reg]
        buf[0] = v >> 8
        buf[1] = v & 0xFF

    def writeto_mem(self, addr, reg, buf, addrsize=8):
        self.regs[reg] = (buf[0] << 8) | buf[1]

    def irq(self, handler=None, trigger=4):
        self.handler = handler

    def run(self, ms):
        self.us += 1000 * ms
        due = self.us * self.sps // 1000000
        while self.conversions < due:
            self.conversions += 1
            self.regs[0] = (self.conversions * 8) & 0x7FFF
            if self.handler is not None:
                self.handler(self)


class FakeRig:
    def __init__(self):
        self.clock = WrapClock(START_TICKS)
        polled = FakeAds1115(250)
        self.polled_adc = ADS1115(polled, data_rate_sps=250, mux=MUX_AIN0_AIN1,
                                  continuous=True)
        rdy = FakeAds1115(250)
        adc = ADS1115(rdy, data_rate_sps=250, mux=MUX_AIN0_AIN1, continuous=True,
                      ready_pin=True)
        self.irq = [("ads1115_irq", Ads1115EcgSource(adc, 100, ready_pin=rdy, use_irq=True),
                     rdy)]
        self.parts = (polled, rdy)

    def run_parts(self, ms):
        for part in self.parts:
            part.run(ms)
"""

VM_SCRIPT = PARAMS + FAKE_RIG + SCENARIO + "\nrun(FakeRig())\n"


class EmulatedRig:
    """The scenario's rig on the simulator's register-level parts (sim/bus.py, sim/parts)."""

    def __init__(self) -> None:
        self.clock = SimClock(start_epoch_ms=EPOCH_MS, start_ticks_ms=START_TICKS)
        self.part_clock = SimClock(start_epoch_ms=0)
        bus = I2CBus()
        ain = (lambda t: 1.65 + 0.001 * (t % 1.0), 1.65, 0.0, 0.0)  # 1 mV ramp at the ADC
        polled = bus.attach(0x48, EmuADS1115(self.part_clock, inputs=ain))
        self.polled_adc = ADS1115(bus, address=0x48, data_rate_sps=250, mux=MUX_AIN0_AIN1,
                                  continuous=True)
        rdy = bus.attach(0x49, EmuADS1115(self.part_clock, inputs=ain))
        adc = ADS1115(bus, address=0x49, data_rate_sps=250, mux=MUX_AIN0_AIN1,
                      continuous=True, ready_pin=True)
        spi = SPIBus()
        afe = EmuADS1292(self.part_clock, ch2=lambda t: 0.001 * (t % 1.0))
        drv = ADS1292(spi, spi.attach(afe), afe.drdy, data_rate_sps=250, gain=(1, 6),
                      sleep=self.part_clock.advance)
        drv.start()
        self.irq = [
            ("ads1115_irq", Ads1115EcgSource(adc, 100, ready_pin=rdy.alert, use_irq=True), rdy),
            ("ads1292_irq", Ads1292EcgSource(drv, use_irq=True), afe),
        ]
        self.parts = (polled, rdy, afe)

    def run_parts(self, ms: int) -> None:
        self.part_clock.advance(ms)
        for part in self.parts:
            part.update()


def run_cpython(script: str, rig: object | None = None) -> str:
    out = io.StringIO()
    ns: dict[str, object] = {"__name__": "__main__"}
    with redirect_stdout(out):
        exec(compile(script, "clock_wrap_scenario", "exec"), ns)
        if rig is not None:
            ns["run"](rig)  # type: ignore[operator]
    return out.getvalue()


def check_scenario(out: str, irq_names: tuple[str, ...]) -> None:
    bursts = {}
    outages = {}
    for line in out.splitlines():
        kind, *words = line.split()
        if kind == "alloc":
            continue
        label, fields = words[0], dict(w.split("=", 1) for w in words[1:])
        (bursts if kind == "burst" else outages)[label] = fields
    assert list(bursts) == ["start", "6.2d", "day7", "wrap2", "wrap3", "day30"]
    # the tick counter wrapped 5 s, 12.4 days and 24.9 days after the start, inside bursts
    assert [int(b["wraps"]) for b in bursts.values()] == [1, 1, 1, 2, 3, 3]
    assert [int(b["wraps_in_burst"]) for b in bursts.values()] == [1, 0, 0, 1, 1, 0]
    for label, b in bursts.items():
        pairs = ["polled", "accounted", "array", *irq_names]
        for key in pairs:
            got, want = b[key].split("/")
            assert got == want and int(want) > 0, (label, key, b[key])
        assert b["lost_in_burst"] == "0" and b["out_of_order"] == "0", (label, b)
        assert all(b[f"{name}_dropped"] == "0" for name in irq_names), (label, b)
    assert list(outages) == ["day7", "wrap3", "day30"]
    cap_ms = BACKOFF_MAX_MS * 5 // 4 + STEP_MAX_MS  # the cap plus one loop step
    for label, o in outages.items():
        got, want = o["attempts"].split("/")
        assert got == want, (label, o)
        gaps = [int(g) for g in o["gaps"].split(",")]
        assert int(o["first_ms"]) <= STEP_MAX_MS, (label, o)  # retried at once
        assert max(gaps) <= cap_ms, (label, gaps)  # ... and within the backoff cap after
        assert max(gaps) >= BACKOFF_MAX_MS, (label, gaps)  # the cap was reached
        assert o["connected"] == "1" and int(o["published"]) > 0, (label, o)
        assert int(o["queued"]) <= 2, (label, o)  # the outage's backlog went out


def test_thirty_days_through_tick_wraps_in_micropython(micropython) -> None:
    vm_out = micropython(VM_SCRIPT)
    assert vm_out == run_cpython(VM_SCRIPT)
    check_scenario(vm_out, ("ads1115_irq",))
    alloc = vm_out.splitlines()[-1].split()
    assert alloc == ["alloc", "0", "0"], alloc  # bytes allocated by the paced reads at day 30


def test_thirty_days_through_tick_wraps_on_emulated_parts() -> None:
    out = run_cpython(PARAMS + SCENARIO, EmulatedRig())
    check_scenario(out, ("ads1115_irq", "ads1292_irq"))


# ------------------------------------------------------------ pacing, exactly


class _Ticks:
    """A device clock at ``ticks`` (wrapping at 2**30), moved by the test."""

    def __init__(self, ticks: int) -> None:
        self.ticks = ticks

    def advance(self, ms: int) -> None:
        self.ticks = (self.ticks + ms) % TICKS_PERIOD

    def ticks_ms(self) -> int:
        return self.ticks


class _ContinuousAdc:
    """Just enough of the ADS1115 driver in continuous mode for the polled source."""

    continuous = True
    full_scale_uv = 2_048_000

    def __init__(self, data_rate_sps: int) -> None:
        self.data_rate_sps = data_rate_sps
        self.reads = 0

    def read_conversion(self) -> int:
        self.reads += 1
        return self.reads & 0x3FFF


@pytest.mark.parametrize("fs", [1, 250, 360, 860, 2000])
def test_paced_reads_match_the_absolute_count_for_valid_spans(fs: int) -> None:
    """Read by read, the span-by-span count equals what the absolute "time since
    start" formula gave (the previous code) while that formula was valid, across
    a wrap and for read intervals from 0 ms to 3 days."""
    rng = random.Random(fs)
    clock = _Ticks(TICKS_PERIOD - 777)
    samples = [i & 0x7FFF for i in range(300_000)]
    src = ArraySource(samples, sample_rate_hz=fs, clock=clock)
    adc = _ContinuousAdc(860 if fs > 860 else fs)
    polled = Ads1115EcgSource(adc, 100, clock=clock)
    buf = [0] * 64
    elapsed = delivered = conversions_before = 0
    for _ in range(20_000):
        if rng.random() < 0.001:
            span = rng.randrange(1 << 27)  # up to 1.5 days
        else:
            span = rng.choice((0, 1, 3, 4, 7, 40, 999, 1000, 1001, 86_399))
        if elapsed + span >= 1 << 29:
            break
        clock.advance(span)
        elapsed += span
        old_due = min(len(samples), elapsed * fs // 1000)  # the previous code, valid here
        want = min(old_due - delivered, 64)
        n = src.read_samples(buf, 64)
        assert n == want, (elapsed, span)
        assert buf[:n] == samples[delivered:delivered + n]
        delivered += n
        before = polled.samples
        polled.read_samples(buf, 64)
        conversions_due = elapsed * adc.data_rate_sps // 1000
        assert polled.samples + polled.dropped == conversions_due
        assert polled.samples - before == (1 if conversions_due > conversions_before else 0)
        conversions_before = conversions_due
    assert elapsed > 1 << 28 and delivered == len(samples)  # the big spans ran it to its end


def test_a_stall_past_the_valid_span_resumes_at_once() -> None:
    """A read interval of 7 days (beyond 2**29 ms, it reads negative) counts as no
    time; the next reads deliver at the rate again instead of stalling for days."""
    clock = _Ticks(123)
    src = ArraySource(list(range(10_000)), sample_rate_hz=250, clock=clock)
    polled = Ads1115EcgSource(_ContinuousAdc(250), 100, clock=clock)
    buf = [0] * 64
    clock.advance(40)
    assert src.read_samples(buf, 64) == 10 and polled.read_samples(buf, 64) == 1
    clock.advance(7 * 86_400_000)
    assert src.read_samples(buf, 64) == 0 and polled.read_samples(buf, 64) == 0
    clock.advance(40)
    assert src.read_samples(buf, 64) == 10 and buf[0] == 10
    assert polled.read_samples(buf, 64) == 1 and polled.dropped == 9 + 9


def test_pacing_and_backoff_bounds_are_checked_at_construction() -> None:
    clock = _Ticks(0)
    for bad in (0, -250, 2001, 250.5, "250"):
        with pytest.raises(ValueError, match="sample_rate_hz"):
            SamplePacer(clock, bad)
    assert SamplePacer(clock, 250.0).due() == 0  # a whole float is a rate (JSON configs)
    with pytest.raises(ValueError, match="max_ms"):
        Backoff(250, (1 << 28) + 1, "dev")  # 1.25 x that would pass the 2**29 ms limit
    Backoff(250, 1 << 28, "dev")
