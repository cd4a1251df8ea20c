"""A serial ECG board emulated on a pseudo-terminal.

:class:`SerialEcgBoard` opens a pty pair (``os.openpty``), puts it in raw mode
and writes v1 frames (``firmware.hw.drivers.serial_ecg``: ``A5 5A | seq | n |
n x int16 LE | CRC-16/CCITT-FALSE LE``) to the master side at its sample
rate.  Software on the other side opens the slave name
(:attr:`SerialEcgBoard.port_name`) as it would open ``/dev/ttyUSB0``, e.g.
with pyserial: :func:`open_pyserial_source`.

Time: with ``clock=None`` the board runs in real time (``time.monotonic``);
with a :class:`sim.clock.SimClock` (or anything with ``ticks_ms``) it writes
what is due in simulated time.  :meth:`pump` writes every frame that is due
now; :meth:`start` runs a background thread that pumps every millisecond.

Samples come from a signal (``sim.parts``: a number, ``f(t_s)`` or an
iterator) in raw counts, rounded and saturated to int16.

Fault hooks: :meth:`corrupt_next_frame` (XOR a byte of the next frame),
:meth:`drop_next_frames` (frames made but never sent: a sequence gap),
:meth:`inject_garbage` (bytes between frames).  A reader that falls behind
fills the pty buffer; the board then drops whole frames and counts them in
``overrun_frames``, as a UART without flow control loses bytes.
"""

from __future__ import annotations

import os
import threading
import time
import tty
from typing import Any

from firmware.hw.drivers.serial_ecg import MAX_SAMPLES, SerialEcgSource, encode_frame
from sim.bus import SimTime
from sim.parts import as_signal

__all__ = ["SerialEcgBoard", "open_pyserial_source"]


class _RealTime:
    def __init__(self) -> None:
        self._t0 = time.monotonic_ns()

    def now_us(self) -> int:
        return (time.monotonic_ns() - self._t0) // 1000


class SerialEcgBoard:
    def __init__(self, signal: Any, sample_rate_hz: int, samples_per_frame: int = 10,
                 clock: Any = None) -> None:
        if not isinstance(sample_rate_hz, int) or not 1 <= sample_rate_hz <= 10_000:
            raise ValueError("sample_rate_hz must be an int in 1..10000")
        if not 1 <= samples_per_frame <= MAX_SAMPLES:
            raise ValueError(f"samples_per_frame must be 1..{MAX_SAMPLES}")
        self.signal = as_signal(signal)
        self.sample_rate_hz = sample_rate_hz
        self.samples_per_frame = samples_per_frame
        self._time = SimTime(clock) if clock is not None else _RealTime()
        self._t0_us = self._time.now_us()
        self.master_fd, self.slave_fd = os.openpty()
        tty.setraw(self.slave_fd)
        os.set_blocking(self.master_fd, False)
        self.port_name = os.ttyname(self.slave_fd)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._seq = 0
        self._made = 0  # samples made so far
        self._corrupt: list[tuple[int, int]] = []
        self._drop = 0
        self._garbage = bytearray()
        self.sent_samples: list[int] = []  # samples of the frames sent intact
        self.frames_sent = 0
        self.frames_corrupted = 0
        self.frames_dropped = 0
        self.overrun_frames = 0

    # -- fault hooks ---------------------------------------------------------
    def corrupt_next_frame(self, byte_index: int, mask: int = 0xFF) -> None:
        """XOR ``mask`` into byte ``byte_index`` of the next frame sent."""
        with self._lock:
            self._corrupt.append((byte_index, mask))

    def drop_next_frames(self, count: int) -> None:
        with self._lock:
            self._drop += count

    def inject_garbage(self, data: bytes) -> None:
        """Write ``data`` before the next frame."""
        with self._lock:
            self._garbage.extend(data)

    # -- output --------------------------------------------------------------
    def _sample(self, index: int) -> int:
        value = round(self.signal(index / self.sample_rate_hz))
        return max(-32768, min(32767, value))

    def pump(self) -> int:
        """Write every frame that is due now; return how many were made."""
        with self._lock:
            due = (self._time.now_us() - self._t0_us) * self.sample_rate_hz // 1_000_000
            made = 0
            k = self.samples_per_frame
            while self._made + k <= due:
                samples = [self._sample(self._made + i) for i in range(k)]
                self._made += k
                self._emit(samples)
                made += 1
            return made

    def _emit(self, samples: list[int]) -> None:
        frame = encode_frame(self._seq, samples)
        self._seq = (self._seq + 1) & 0xFF
        if self._drop:
            self._drop -= 1
            self.frames_dropped += 1
            return
        intact = True
        if self._corrupt:
            index, mask = self._corrupt.pop(0)
            frame[index % len(frame)] ^= mask
            self.frames_corrupted += 1
            intact = False
        data = bytes(self._garbage) + bytes(frame)
        self._garbage.clear()
        try:
            written = os.write(self.master_fd, data)
        except BlockingIOError:
            written = 0
        if written < len(data):
            self.overrun_frames += 1
            return
        self.frames_sent += 1
        if intact:
            self.sent_samples.extend(samples)

    # -- thread --------------------------------------------------------------
    def start(self) -> SerialEcgBoard:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="serial-ecg-board",
                                            daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            try:
                self.pump()
            except OSError:
                return  # the pty was closed

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        for fd in (self.master_fd, self.slave_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> SerialEcgBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_pyserial_source(port_name: str, baudrate: int = 115_200) -> SerialEcgSource:
    """A :class:`SerialEcgSource` on a port opened with pyserial (non-blocking reads).

    The CPython adapter of the firmware parser; on a board pass a
    ``machine.UART`` to ``SerialEcgSource`` instead."""
    import serial

    return SerialEcgSource(serial.Serial(port_name, baudrate, timeout=0))


def read_counts(src: SerialEcgSource, want: int, timeout_s: float = 5.0) -> list[int]:
    """Read samples from ``src`` until ``want`` have arrived or ``timeout_s`` has passed.

    A pty delivers when the kernel gets to it, so a fixed number of
    non-blocking reads can come up short on a loaded machine; this waits,
    bounded, for what the board has sent."""
    from array import array

    out: list[int] = []
    buf = array("h", bytes(128))
    deadline = time.monotonic() + timeout_s
    while len(out) < want and time.monotonic() < deadline:
        n = src.read_samples(buf, 64)
        out.extend(buf[:n])
        if not n:
            time.sleep(0.001)
    return out
