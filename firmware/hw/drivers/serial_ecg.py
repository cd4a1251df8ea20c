"""Serial ECG board: frame parser and ``read_samples`` source (UART / pyserial).

Frame (v1), all multi-byte fields little-endian::

    0xA5 0x5A | seq (1 byte) | n (1 byte, 1..64) | n x int16 samples | CRC-16 (2 bytes)

``seq`` counts frames modulo 256; the CRC is CRC-16/CCITT-FALSE (polynomial
0x1021, initial value 0xFFFF, no reflection, no final XOR; check value
0x29B1 for b"123456789") over ``seq``, ``n`` and the samples.

:class:`SerialEcgParser` is pure and allocation-free per byte: bytes go into
a buffer made at init, complete frames whose CRC matches move their samples
into a ring.  After garbage, a bad length or a CRC error it resynchronises by
searching for the next ``0xA5 0x5A`` one byte further on, so a corrupted
frame costs that frame only.  Counters: ``frames``, ``crc_errors``,
``bad_lengths``, ``garbage_bytes`` (bytes skipped while searching),
``dropped_frames`` (frames missing by sequence gaps), ``overruns`` (samples
lost because the ring was full).

:class:`SerialEcgSource` reads what the port has (``any()`` +
``readinto(buf, n)`` on a MicroPython ``machine.UART``, ``in_waiting`` +
``readinto`` on a pyserial ``Serial`` opened with ``timeout=0``) and hands the
samples on through ``read_samples(buf, max_count)``.
"""

from array import array

from firmware.hw.compat import const
from firmware.hw.sources import ring_read

SYNC1 = const(0xA5)
SYNC2 = const(0x5A)
MAX_SAMPLES = const(64)
HEADER_BYTES = const(4)
CRC_BYTES = const(2)

_RX_CHUNK = const(256)


def _make_table():
    table = array("H", [0] * 256)
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
        table[i] = crc
    return table


_TABLE = _make_table()


def crc16_ccitt(data, start=0, end=None, crc=0xFFFF):
    """CRC-16/CCITT-FALSE of ``data[start:end]`` (no slicing, no allocation)."""
    if end is None:
        end = len(data)
    table = _TABLE
    for i in range(start, end):
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ data[i]) & 0xFF]
    return crc


def encode_frame(seq, samples, out=None):
    """Bytes of one frame (a helper for boards and tests; allocates unless ``out``)."""
    n = len(samples)
    if not 1 <= n <= MAX_SAMPLES:
        raise ValueError("a frame carries 1..%d samples, got %d" % (MAX_SAMPLES, n))
    size = HEADER_BYTES + 2 * n + CRC_BYTES
    if out is None:
        out = bytearray(size)
    out[0] = SYNC1
    out[1] = SYNC2
    out[2] = seq & 0xFF
    out[3] = n
    j = HEADER_BYTES
    for v in samples:
        if not -32768 <= v <= 32767:
            raise ValueError("samples are int16")
        v &= 0xFFFF
        out[j] = v & 0xFF
        out[j + 1] = v >> 8
        j += 2
    crc = crc16_ccitt(out, 2, j)
    out[j] = crc & 0xFF
    out[j + 1] = crc >> 8
    return out


class SerialEcgParser:
    def __init__(self, ring_samples=1024, max_samples=MAX_SAMPLES):
        if not 1 <= max_samples <= MAX_SAMPLES:
            raise ValueError("max_samples must be 1..%d" % MAX_SAMPLES)
        if ring_samples < max_samples:
            raise ValueError("ring_samples must hold at least one frame")
        self._max_n = max_samples
        frame_max = HEADER_BYTES + 2 * max_samples + CRC_BYTES
        self._buf = bytearray(2 * frame_max)
        self._start = 0
        self._end = 0
        self._ring = array("h", bytes(2 * ring_samples))
        self._ring_size = ring_samples
        self._head = 0
        self._count = 0
        self._last_seq = -1
        self.frames = 0
        self.samples = 0
        self.crc_errors = 0
        self.bad_lengths = 0
        self.garbage_bytes = 0
        self.dropped_frames = 0
        self.overruns = 0

    def feed(self, data, n=None):
        """Take ``data[0:n]`` (default: all of it) from the wire."""
        if n is None:
            n = len(data)
        buf = self._buf
        cap = len(buf)
        i = 0
        while i < n:
            if self._end == cap:  # compact: move the unparsed tail to the front
                k = self._end - self._start
                s = self._start
                for j in range(k):
                    buf[j] = buf[s + j]
                self._start = 0
                self._end = k
            room = cap - self._end
            take = n - i if n - i < room else room
            e = self._end
            for j in range(take):
                buf[e + j] = data[i + j]
            self._end = e + take
            i += take
            self._parse()

    def _parse(self):
        buf = self._buf
        while True:
            s = self._start
            avail = self._end - s
            if avail < 2:
                return
            if buf[s] != SYNC1 or buf[s + 1] != SYNC2:
                self._start = s + 1
                self.garbage_bytes += 1
                continue
            if avail < HEADER_BYTES:
                return
            n = buf[s + 3]
            if n == 0 or n > self._max_n:
                self.bad_lengths += 1
                self._start = s + 1
                self.garbage_bytes += 1
                continue
            end = s + HEADER_BYTES + 2 * n
            if self._end < end + CRC_BYTES:
                return
            crc = crc16_ccitt(buf, s + 2, end)
            if crc != buf[end] | (buf[end + 1] << 8):
                self.crc_errors += 1
                self._start = s + 1
                self.garbage_bytes += 1
                continue
            seq = buf[s + 2]
            if self._last_seq >= 0:
                self.dropped_frames += (seq - self._last_seq - 1) & 0xFF
            self._last_seq = seq
            self._store(s + HEADER_BYTES, n)
            self.frames += 1
            self._start = end + CRC_BYTES

    def _store(self, pos, n):
        buf = self._buf
        ring = self._ring
        size = self._ring_size
        for _ in range(n):
            v = buf[pos] | (buf[pos + 1] << 8)
            pos += 2
            if self._count == size:
                self.overruns += 1
                continue
            ring[(self._head + self._count) % size] = v - 0x10000 if v & 0x8000 else v
            self._count += 1

    def available(self):
        return self._count

    def read_samples(self, buf, max_count):
        n = self._count if self._count < max_count else max_count
        self._head = ring_read(self._ring, self._head, self._ring_size, buf, n)
        self._count -= n
        self.samples += n
        return n


class SerialEcgSource:
    """``read_samples`` over a serial port carrying v1 frames."""

    def __init__(self, port, parser=None):
        if not hasattr(port, "readinto"):
            raise ValueError("port must have readinto (machine.UART or serial.Serial)")
        self.port = port
        self.parser = parser if parser is not None else SerialEcgParser()
        self._uart = hasattr(port, "any")
        self._rx = bytearray(_RX_CHUNK)
        self._views = None if self._uart else memoryview(self._rx)

    def _pull(self):
        port = self.port
        while True:
            k = port.any() if self._uart else port.in_waiting
            if not k:
                return
            if k > _RX_CHUNK:
                k = _RX_CHUNK
            if self._uart:
                got = port.readinto(self._rx, k)
            else:
                got = port.readinto(self._views[:k])
            if not got:
                return
            self.parser.feed(self._rx, got)

    def read_samples(self, buf, max_count):
        if self.parser.available() < max_count:
            self._pull()
        return self.parser.read_samples(buf, max_count)
