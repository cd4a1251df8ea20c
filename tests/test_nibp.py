"""The NIBP module's line protocol, its driver, the emulated module and the vitals fields.

firmware/hw/drivers/nibp.py against sim/nibp.py on a loopback UART; the parser
inside the MicroPython VM gives what CPython gives; VitalSigns publishes the
last good reading with its age and counts every bad line (issue 12 item 6 and
the bad-input acceptance: a cuff message with a bad checksum is counted and
reported, never a crash, never a wrong number).
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import pytest

from firmware.hw.drivers.nibp import NibpModule, NibpParser, checksum, command
from sim.nibp import LoopbackUart, SimNibpModule, nibp_line
from sim.truth import NibpReading


def test_line_format_and_checksum() -> None:
    assert nibp_line(7, 121, 79, 93, 72) == b"$NIBP,7,121,79,93,72,OK*" + (
        f"{checksum('NIBP,7,121,79,93,72,OK'):02X}\r\n".encode())
    assert command("START") == b"$START*" + f"{checksum('START'):02X}".encode() + b"\r\n"
    assert checksum("START") == checksum(b"START")


def test_parser_takes_any_chunking_and_counts_every_bad_line() -> None:
    p = NibpParser()
    good = nibp_line(1, 121, 79, 93, 72)
    stream = (b"noise\r\n" + good[:5] + good[5:] + nibp_line(2, 118, 77, 90, 70)
              + b"$NIBP,3,999,79,93,72,OK*00\r\n"  # bad checksum
              + nibp_line(4, 350, 79, 93, 72)  # implausible systolic
              + nibp_line(5, 120, 80, 70, 72)  # mean outside diastolic..systolic
              + nibp_line(6, None, None, None, None, "MOTION")
              + b"$" + b"X" * 200 + b"\r\n"  # overlong
              + nibp_line(7, 1, 2, 3, 4)[:-2].replace(b",", b";") + b"\r\n")
    got = 0
    for i in range(0, len(stream), 7):
        got += p.feed(stream[i:i + 7])
    assert got == 2 and p.readings == 2
    assert (p.systolic_mmhg, p.diastolic_mmhg, p.map_mmhg, p.pulse_bpm) == (118, 77, 90, 70)
    assert p.checksum_errors == 1  # the forged line
    # noise, 350 mmHg, mean outside, ';' separators (6 of them: the XOR is unchanged)
    assert p.bad_lines == 4
    assert p.failed == 1 and p.last_failure == "MOTION" and p.last_failed
    assert p.overlong == 1


def test_driver_with_the_emulated_module_start_and_cycle() -> None:
    uart = LoopbackUart()
    sim = SimNibpModule(uart, pressure=lambda t: (124.4, 81.2), pulse=lambda t: 75.0)
    drv = NibpModule(uart)
    drv.cycle(300)
    drv.start()
    sim.service(10.0)
    assert sim.cycle_s == 300
    assert drv.poll() == 1
    assert (drv.parser.systolic_mmhg, drv.parser.diastolic_mmhg,
            drv.parser.map_mmhg, drv.parser.pulse_bpm) == (124, 81, 96, 75)
    sim.corrupt_next()
    sim.send(NibpReading(20.0, 130, 85, 100))
    assert drv.poll() == 0 and drv.parser.checksum_errors == 1
    assert drv.parser.systolic_mmhg == 124  # never a wrong number
    with pytest.raises(ValueError):
        drv.cycle(-1)


def test_vitals_publish_the_last_reading_and_the_fault_counts() -> None:
    from firmware.vitals.monitor import VitalSigns

    uart = LoopbackUart()
    sim = SimNibpModule(uart)
    vit = VitalSigns(250, nibp=NibpModule(uart))
    block = [0] * 250
    msg: dict = {}
    vit.ecg(block, 250)
    vit.poll()
    vit.report(msg, None)
    assert msg["nibp_systolic_mmhg"] is None and msg["withheld"]["nibp_systolic_mmhg"]
    sim.send(NibpReading(1.0, 131, 84, 100))
    sim.corrupt_next()
    sim.send(NibpReading(2.0, 99, 60, 73))
    sim.fail_next("CUFF_LEAK")
    sim.send(NibpReading(3.0, 0, 0, 0))
    for _ in range(3):
        vit.ecg(block, 250)
        vit.poll()
    msg = {}
    vit.report(msg, None)
    assert (msg["nibp_systolic_mmhg"], msg["nibp_diastolic_mmhg"], msg["nibp_map_mmhg"]) == (
        131, 84, 100)
    assert msg["nibp_age_s"] == 2 and msg["nibp_last_failure"] == "cuff_leak"
    assert msg["faults"]["nibp_checksum_errors"] == 1 and msg["faults"]["nibp_failed"] == 1


MPY = r"""
from firmware.hw.drivers.nibp import NibpParser
p = NibpParser()
data = DATA
for i in range(0, len(data), 5):
    p.feed(data[i:i + 5])
print(p.readings, p.systolic_mmhg, p.diastolic_mmhg, p.map_mmhg, p.pulse_bpm,
      p.checksum_errors, p.bad_lines, p.failed, p.last_failure, p.overlong)
"""


def test_parser_in_micropython(micropython) -> None:
    data = (nibp_line(1, 121, 79, 93, 72) + b"$NIBP,2,1,1,1,1,OK*00\r\n"
            + nibp_line(3, None, None, None, None, "TIMEOUT") + nibp_line(4, 140, 90, 107, 88))
    script = f"DATA = {data!r}\n" + MPY
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(script, "nibp", "exec"), {"__name__": "__main__"})
    assert micropython(script) == out.getvalue() == "2 140 90 107 88 1 0 1 TIMEOUT 0\n"
