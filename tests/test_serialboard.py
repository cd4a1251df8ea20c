"""The serial ECG board on a pseudo-terminal, read through pyserial by the firmware parser."""

from __future__ import annotations

import time
from array import array

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.hw.drivers.serial_ecg import (
    SerialEcgParser,
    SerialEcgSource,
    crc16_ccitt,
    encode_frame,
)
from sim.clock import SimClock
from sim.ecgsyn import EcgsynParams, ecgsyn
from sim.serialboard import SerialEcgBoard, open_pyserial_source, read_counts
from sim.sources import mv_to_counts

serial = pytest.importorskip("serial")


def ecg_counts(seconds: int, fs: int = 250) -> list[int]:
    ecg = ecgsyn(seconds, EcgsynParams(sample_rate_hz=fs, heart_rate_mean_bpm=70),
                 np.random.default_rng(11))
    return mv_to_counts(ecg.signal_mv).astype(int).tolist()


def test_frame_bytes_and_crc() -> None:
    assert crc16_ccitt(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE check value
    frame = encode_frame(7, [1, -2, 0x1234])
    crc = crc16_ccitt(frame, 2, 10)
    assert bytes(frame) == b"\xa5\x5a\x07\x03\x01\x00\xfe\xff\x34\x12" + crc.to_bytes(2, "little")
    with pytest.raises(ValueError):
        encode_frame(0, [])
    with pytest.raises(ValueError):
        encode_frame(0, [40000])


def test_samples_read_through_pyserial_equal_what_the_board_sent() -> None:
    counts = ecg_counts(4)
    clock = SimClock(start_epoch_ms=0)
    with SerialEcgBoard(iter(counts), 250, samples_per_frame=10, clock=clock) as board:
        src = open_pyserial_source(board.port_name)
        got: list[int] = []
        for _ in range(100):  # 4 s of simulated time in 40 ms steps
            clock.advance(40)
            board.pump()
            got.extend(read_counts(src, 10))
        got.extend(read_counts(src, 1000 - len(got)))
        src.port.close()
    assert board.frames_sent == 100
    assert got == counts == board.sent_samples
    assert src.parser.crc_errors == 0 and src.parser.dropped_frames == 0


def test_corruption_garbage_and_gaps_are_counted_and_the_parser_resyncs() -> None:
    clock = SimClock(start_epoch_ms=0)
    ramp = iter(range(10_000))
    with SerialEcgBoard(ramp, 250, samples_per_frame=5, clock=clock) as board:
        src = open_pyserial_source(board.port_name)
        board.inject_garbage(b"\x00\xa5\xa5\x5a\x01\xff")  # noise with a false sync
        clock.advance(20)
        board.pump()  # frame 0
        board.corrupt_next_frame(6, 0x01)  # a sample byte of frame 1
        board.corrupt_next_frame(3, 0xFF)  # the length byte of frame 2 -> 250 > 64
        clock.advance(40)
        assert board.pump() == 2  # frames 1, 2
        board.drop_next_frames(2)  # frames 3 and 4 never sent
        clock.advance(60)
        assert board.pump() == 3  # frames 3, 4, 5
        board.inject_garbage(bytes(range(256)))
        clock.advance(20)
        board.pump()  # frame 6
        got = read_counts(src, 15, timeout_s=2.0)
        time.sleep(0.05)
        got.extend(read_counts(src, 1, timeout_s=0.05))
        src.port.close()
    p = src.parser
    assert got == list(range(0, 5)) + list(range(25, 35))  # frames 0, 5, 6
    assert got == board.sent_samples
    assert p.frames == 3
    assert p.crc_errors == 1 and p.bad_lengths >= 1
    assert p.dropped_frames == 4  # seq 0 -> 5: frames 1..4 missing
    assert p.garbage_bytes > 256


def test_real_time_thread_writes_at_the_board_rate() -> None:
    with SerialEcgBoard(lambda t: 100, 500, samples_per_frame=10) as board:
        src = open_pyserial_source(board.port_name)
        t0 = time.monotonic()
        board.start()
        got = read_counts(src, 100, timeout_s=3.0)
        elapsed = time.monotonic() - t0
        src.port.close()
    assert got[:100] == [100] * 100
    assert 0.15 <= elapsed < 3.0  # 100 samples at 500 Hz take 0.2 s


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(-32768, 32767), min_size=1, max_size=64),
                          st.binary(max_size=20)), max_size=8),
       st.integers(1, 37))
def test_parser_never_crashes_and_keeps_every_clean_frame(frames, chunk: int) -> None:
    """Arbitrary garbage between valid frames, fed in arbitrary chunk sizes: every
    frame comes out (garbage cannot contain a valid frame of CRC and length by chance
    except with tiny probability, and then it would be counted as a frame)."""
    wire = bytearray()
    want: list[int] = []
    for seq, (samples, garbage) in enumerate(frames):
        wire += garbage.replace(b"\xa5", b"\x00")
        wire += encode_frame(seq, samples)
        want += samples
    p = SerialEcgParser(ring_samples=1024)
    for i in range(0, len(wire), chunk):
        p.feed(wire[i : i + chunk])
    buf = array("h", bytes(2 * 1024))
    n = p.read_samples(buf, 1024)
    assert list(buf[:n]) == want
    assert p.frames == len(frames) and p.crc_errors == 0 and p.dropped_frames == 0


def test_uart_surface_any_and_readinto() -> None:
    class Uart:
        def __init__(self, data: bytes) -> None:
            self.data = bytearray(data)

        def any(self) -> int:
            return len(self.data)

        def readinto(self, buf: bytearray, n: int) -> int:
            k = min(n, len(self.data))
            buf[:k] = self.data[:k]
            del self.data[:k]
            return k

    wire = b"".join(bytes(encode_frame(i, list(range(i * 50, i * 50 + 50)))) for i in range(8))
    src = SerialEcgSource(Uart(wire))
    buf = array("h", bytes(1000))
    n = src.read_samples(buf, 400)
    assert list(buf[:n]) == list(range(400))
    with pytest.raises(ValueError):
        SerialEcgSource(object())
