"""Non-invasive blood pressure (NIBP) module on a UART: line protocol and driver.

The module (an oscillometric cuff controller; the simulator's is
``sim/nibp.py``) talks ASCII lines at 9600 baud 8N1, NMEA 0183 style: ``$``,
comma-separated fields, ``*``, a checksum of two upper-case hex digits (the
XOR of every byte between ``$`` and ``*``), CR LF.  At most
``MAX_LINE`` (80) bytes per line.

Module -> device, one line per completed measurement::

    $NIBP,<seq>,<systolic_mmhg>,<diastolic_mmhg>,<map_mmhg>,<pulse_bpm>,<status>*HH

``seq`` counts measurements modulo 1000; pressures and pulse are whole
numbers (``-`` when the module could not determine them); ``status`` is
``OK`` or the reason of a failed measurement (``MOTION``, ``CUFF_LEAK``,
``OVERPRESSURE``, ``TIMEOUT``, ``WEAK_SIGNAL``).

Device -> module::

    $START*HH      start a measurement now
    $CYCLE,<s>*HH  measure every <s> seconds (0: on request only)

:class:`NibpParser` is fed raw bytes (any chunking) and keeps the last good
reading (``systolic_mmhg``, ``diastolic_mmhg``, ``map_mmhg``, ``pulse_bpm``,
``status``, ``seq``) with ``readings`` counting them.  Bad input is counted,
never raised and never turned into a number: ``checksum_errors``,
``bad_lines`` (wrong field count, a non-number, an implausible pressure:
systolic 40..300, diastolic 15..250, diastolic < mean < systolic),
``overlong`` (a line beyond ``MAX_LINE``: dropped up to the next LF).  A
failed measurement (status not ``OK``) counts in ``failed`` with its status
kept in ``last_failure``; the last good reading stays.

:class:`NibpModule` is the driver: it owns a UART (``machine.UART`` with
``any()``/``readinto``, or pyserial opened with ``timeout=0``:
``in_waiting``/``readinto``) and a parser, :meth:`NibpModule.poll` moves what
arrived into the parser, :meth:`start` and :meth:`cycle` send commands.
Buffers are made at init; a line is parsed once, when its LF arrives.
"""

from firmware.hw.compat import const

MAX_LINE = const(80)
_RX_CHUNK = const(64)
SYS_MIN_MMHG = const(40)
SYS_MAX_MMHG = const(300)
DIA_MIN_MMHG = const(15)
DIA_MAX_MMHG = const(250)
STATUS_OK = "OK"
_HEX = "0123456789ABCDEF"


def checksum(body):
    """XOR of the bytes of ``body`` (bytes or str between ``$`` and ``*``)."""
    c = 0
    for ch in body:
        c ^= ch if isinstance(ch, int) else ord(ch)
    return c


def command(body):
    """A device -> module line for ``body`` (e.g. "START", "CYCLE,300") as bytes."""
    c = checksum(body)
    return ("$" + body + "*" + _HEX[c >> 4] + _HEX[c & 15] + "\r\n").encode()


def _int_field(buf, a, b):
    """The unsigned decimal in ``buf[a:b]``, None for ``-``, -1 if not a number."""
    if b - a == 1 and buf[a] == 0x2D:  # "-"
        return None
    if b <= a or b - a > 4:
        return -1
    v = 0
    for i in range(a, b):
        d = buf[i] - 0x30
        if not 0 <= d <= 9:
            return -1
        v = 10 * v + d
    return v


class NibpParser:
    """Bytes in, the last good reading out (module docstring)."""

    def __init__(self):
        self._line = bytearray(MAX_LINE)
        self._n = 0
        self._skip = False
        self._commas = [0] * 8
        self.readings = 0
        self.failed = 0
        self.checksum_errors = 0
        self.bad_lines = 0
        self.overlong = 0
        self.last_failure = None
        self.last_failed = False  # the latest measurement failed (newer than the reading)
        self.seq = -1
        self.systolic_mmhg = None
        self.diastolic_mmhg = None
        self.map_mmhg = None
        self.pulse_bpm = None
        self.status = None

    def feed(self, data, count=None):
        """Consume ``data[0:count]`` (bytes-like); return how many readings completed."""
        n = len(data) if count is None else count
        got = 0
        line = self._line
        for i in range(n):
            b = data[i]
            if b == 0x0A:  # LF ends a line
                if self._skip:
                    self._skip = False
                elif self._parse(self._n):
                    got += 1
                self._n = 0
                continue
            if self._skip:
                continue
            if self._n == MAX_LINE:
                self.overlong += 1
                self._skip = True
                self._n = 0
                continue
            line[self._n] = b
            self._n += 1
        return got

    def _parse(self, n):
        line = self._line
        if n and line[n - 1] == 0x0D:
            n -= 1
        if n == 0:
            return False
        if n < 4 or line[0] != 0x24 or line[n - 3] != 0x2A:  # "$" ... "*HH"
            self.bad_lines += 1
            return False
        c = 0
        for i in range(1, n - 3):
            c ^= line[i]
        hi = _HEX.find(chr(line[n - 2]))
        lo = _HEX.find(chr(line[n - 1]))
        if hi < 0 or lo < 0 or (hi << 4 | lo) != c:
            self.checksum_errors += 1
            return False
        end = n - 3
        commas = self._commas
        k = 0
        for i in range(1, end):
            if line[i] == 0x2C:
                if k == 8:
                    self.bad_lines += 1
                    return False
                commas[k] = i
                k += 1
        # "NIBP" then 6 fields: seq, sys, dia, map, pulse, status
        if k != 6 or commas[0] != 5 or line[1:5] != b"NIBP":
            self.bad_lines += 1
            return False
        seq = _int_field(line, commas[0] + 1, commas[1])
        sys_ = _int_field(line, commas[1] + 1, commas[2])
        dia = _int_field(line, commas[2] + 1, commas[3])
        mean = _int_field(line, commas[3] + 1, commas[4])
        pulse = _int_field(line, commas[4] + 1, commas[5])
        status = bytes(line[commas[5] + 1:end]).decode()
        if seq is None or seq < 0 or -1 in (sys_, dia, mean, pulse) or not status:
            self.bad_lines += 1
            return False
        if status != STATUS_OK:
            self.failed += 1
            self.last_failure = status
            self.last_failed = True
            self.seq = seq
            return False
        if (sys_ is None or dia is None or mean is None
                or not SYS_MIN_MMHG <= sys_ <= SYS_MAX_MMHG
                or not DIA_MIN_MMHG <= dia <= DIA_MAX_MMHG or not dia < mean < sys_):
            self.bad_lines += 1
            return False
        self.seq = seq
        self.systolic_mmhg = sys_
        self.diastolic_mmhg = dia
        self.map_mmhg = mean
        self.pulse_bpm = pulse
        self.status = status
        self.last_failed = False
        self.readings += 1
        return True


class NibpModule:
    """The NIBP module on ``uart`` (module docstring): :meth:`poll`, :meth:`start`,
    :meth:`cycle`; the parser's reading and counters are on ``parser``."""

    def __init__(self, uart):
        self.uart = uart
        self.parser = NibpParser()
        self._buf = bytearray(_RX_CHUNK)
        self.errors = 0  # UART faults (OSError), counted, not raised

    def _waiting(self):
        u = self.uart
        if hasattr(u, "any"):
            return u.any()
        return u.in_waiting

    def poll(self):
        """Read what the UART has (bounded); return the readings completed."""
        got = 0
        try:
            for _ in range(16):
                n = self._waiting()
                if not n:
                    break
                if n > _RX_CHUNK:
                    n = _RX_CHUNK
                mv = memoryview(self._buf)
                k = self.uart.readinto(mv[:n]) if n < _RX_CHUNK else self.uart.readinto(mv)
                if not k:
                    break
                got += self.parser.feed(self._buf, k)
        except OSError:
            self.errors += 1
        return got

    def start(self):
        self.uart.write(command("START"))

    def cycle(self, interval_s):
        if not isinstance(interval_s, int) or not 0 <= interval_s <= 86400:
            raise ValueError("NIBP: cycle interval_s must be an int in 0..86400")
        self.uart.write(command("CYCLE," + str(interval_s)))
