"""An emulated NIBP module on a virtual UART (the protocol: firmware/hw/drivers/nibp.py).

:class:`SimNibpModule` turns the virtual patient's cuff readings
(:class:`sim.truth.NibpReading`, from ``PatientChunk.nibp``) into the module's
``$NIBP,...*HH`` lines on a :class:`LoopbackUart` (``any``/``readinto``/``write``:
the surface of ``machine.UART``) that the real driver,
:class:`firmware.hw.drivers.nibp.NibpModule`, reads.  It answers ``$START``
with a reading of the patient's current pressure (``measure_now``) and keeps
the ``$CYCLE`` interval it was sent.  Faults for the tests:
:meth:`SimNibpModule.corrupt_next` (flip a bit after the checksum is made),
:meth:`SimNibpModule.fail_next` (a failed measurement with a status such as
``MOTION``), :meth:`SimNibpModule.inject` (raw bytes).
"""

from __future__ import annotations

from collections.abc import Callable

from firmware.hw.drivers.nibp import checksum
from sim.truth import NibpReading

__all__ = ["LoopbackUart", "SimNibpModule", "nibp_line"]


def nibp_line(seq: int, sys_mmhg: int | None, dia_mmhg: int | None, map_mmhg: int | None,
              pulse_bpm: int | None, status: str = "OK") -> bytes:
    """One module line, checksum included."""
    def f(v: int | None) -> str:
        return "-" if v is None else str(int(v))

    body = f"NIBP,{seq % 1000},{f(sys_mmhg)},{f(dia_mmhg)},{f(map_mmhg)},{f(pulse_bpm)},{status}"
    return f"${body}*{checksum(body):02X}\r\n".encode()


class LoopbackUart:
    """Bytes written by the module side are read by the device side, and back."""

    def __init__(self) -> None:
        self.rx = bytearray()  # module -> device
        self.tx = bytearray()  # device -> module

    def any(self) -> int:
        return len(self.rx)

    def readinto(self, buf, nbytes: int | None = None) -> int:
        n = min(len(buf) if nbytes is None else nbytes, len(self.rx))
        buf[:n] = self.rx[:n]
        del self.rx[:n]
        return n

    def write(self, data: bytes) -> int:
        self.tx.extend(data)
        return len(data)


class SimNibpModule:
    """The module side (module docstring); ``pressure(t_s) -> (sys, dia)`` for ``$START``."""

    def __init__(self, uart: LoopbackUart,
                 pressure: Callable[[float], tuple[float, float]] | None = None,
                 pulse: Callable[[float], float] | None = None) -> None:
        self.uart = uart
        self.pressure = pressure
        self.pulse = pulse
        self.seq = 0
        self.cycle_s: int | None = None
        self._corrupt = 0
        self._fail: list[str] = []
        self._cmd = bytearray()

    def corrupt_next(self, count: int = 1) -> None:
        self._corrupt += count

    def fail_next(self, status: str) -> None:
        self._fail.append(status)

    def inject(self, data: bytes) -> None:
        self.uart.rx.extend(data)

    def send(self, reading: NibpReading, pulse_bpm: int | None = None) -> bytes:
        """Put one completed measurement on the line; return the bytes sent."""
        self.seq += 1
        if self._fail:
            line = nibp_line(self.seq, None, None, None, None, self._fail.pop(0))
        else:
            line = nibp_line(self.seq, reading.systolic_mmhg, reading.diastolic_mmhg,
                             reading.map_mmhg, pulse_bpm)
        if self._corrupt:
            self._corrupt -= 1
            raw = bytearray(line)
            raw[6] ^= 0x01  # a digit of seq: the checksum no longer matches
            line = bytes(raw)
        self.uart.rx.extend(line)
        return line

    def service(self, t_s: float) -> None:
        """Handle the commands the device sent (``$START``, ``$CYCLE,s``)."""
        self._cmd.extend(self.uart.tx)
        self.uart.tx.clear()
        while b"\n" in self._cmd:
            i = self._cmd.index(b"\n")
            line = bytes(self._cmd[:i]).strip()
            del self._cmd[: i + 1]
            if not line.startswith(b"$") or b"*" not in line:
                continue
            body, _, hh = line[1:].partition(b"*")
            if hh.decode(errors="replace").upper() != f"{checksum(body):02X}":
                continue
            if body == b"START" and self.pressure is not None:
                s, d = self.pressure(t_s)
                p = None if self.pulse is None else round(self.pulse(t_s))
                self.send(NibpReading(t_s, round(s), round(d), round((s + 2 * d) / 3)), p)
            elif body.startswith(b"CYCLE,"):
                self.cycle_s = int(body[6:])
