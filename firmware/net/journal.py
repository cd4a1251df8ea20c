"""The device's message journal: the outbox and the sequence number on flash.

``medge device run`` (contract 13) promises that sequence numbers stay
contiguous across restarts and power cuts (none skipped, none reused) and that
a SIGKILL at any moment loses nothing the device had committed.  The RAM outbox
and the block-reserving :class:`firmware.hw.state.SeqCounter` cannot keep that
promise (a power cut skips up to a block of numbers and loses what was waiting
for its PUBACK), so a device with a journal commits every message to an
append-only file *before* it is published:

``m <seq> <flags> <topic> <payload>``
    a message (flags: 1 retain, 2 keep); committed = written and flushed (and
    ``os.fsync`` where the port has it).  A message is published only after
    this line is down.
``a <seq>``
    the broker acknowledged it (or the full-outbox policy dropped it): never
    re-sent.
``n <seq>``
    the next number, first line of a compacted journal.

At start-up the journal reads its file: ``next_seq`` is one past the highest
committed number (a number handed out but not committed was never published,
so using it again reuses nothing anyone saw; :class:`firmware.device.Device`
starts its counter there, see :func:`start_seq`), and every message without an
``a`` line goes back into the outbox, in order, to be sent again (the host
drops duplicates by (device, incarnation, seq)).  A torn last
line (power cut mid-write) is ignored: its message was not committed.  When
more than ``compact_after`` messages were acknowledged since the last
compaction, the file is rewritten (temporary file, flush, rename) with the
``n`` line and the pending messages only, so it stays small.

Costs: one append per message and one per acknowledgement (a few hundred
bytes, about 2 writes a second at the default 1-s report period), never in a
per-sample loop.  The file is opened once and kept open.  Payloads are the
wire encoder's JSON (no newline).  MicroPython-clean (``open``/``os.rename``).
"""

try:
    import os
except ImportError:  # pragma: no cover - MicroPython ports without os
    import uos as os  # type: ignore[import-not-found,no-redef]

_RETAIN = 1
_KEEP = 2


def _line(seq, topic, payload, retain, keep):
    flags = (_RETAIN if retain else 0) | (_KEEP if keep else 0)
    return ("m %d %d %s " % (seq, flags, topic)).encode() + payload + b"\n"


def _sync(f):
    f.flush()
    fsync = getattr(os, "fsync", None)
    if fsync is not None:
        fsync(f.fileno())


def start_seq(journal_next, saved, block):
    """Where the device's counter starts: the journal's ``next_seq`` (exact),
    unless there is none or the counter's ``saved`` value (which, with a journal,
    is never more than ``block`` ahead of it) says the device ran without the
    journal since: then ``saved``."""
    if journal_next is None or saved > journal_next + block:
        return saved
    return journal_next


class Journal:
    """The append-only message journal at ``path`` (module docstring).

    After construction ``next_seq`` is one past the highest committed number
    (None: an empty or new journal), ``pending`` the messages to send again
    (``[seq, topic, payload, retain, keep]``, oldest first; the outbox takes
    them) and ``torn`` the number of unreadable lines skipped."""

    def __init__(self, path, compact_after=256):
        if not isinstance(compact_after, int) or compact_after < 1:
            raise ValueError("compact_after must be a positive int")
        self.path = path
        self.compact_after = compact_after
        self._acked_since = 0
        self.next_seq = self._load(None)
        if self.torn:
            self._rewrite()  # drop the torn tail before anything is appended after it
        self._file = open(path, "ab")

    def _load(self, nxt):
        """Read the file: set ``pending`` and ``torn``; return the next number
        (at least ``nxt``; None if neither knows one)."""
        self.pending = []
        self.torn = 0
        try:
            f = open(self.path, "rb")
        except OSError:
            return nxt
        found = {}
        order = []
        with f:
            while True:
                raw = f.readline()
                if not raw:
                    break
                if not raw.endswith(b"\n"):
                    self.torn += 1  # the last write did not finish: not committed
                    break
                parts = raw[:-1].split(b" ", 4)
                try:
                    kind, seq = parts[0], int(parts[1])
                    if kind == b"m" and len(parts) == 5:
                        flags = int(parts[2])
                        found[seq] = [seq, parts[3].decode(), parts[4],
                                      bool(flags & _RETAIN), bool(flags & _KEEP)]
                        order.append(seq)
                        seq += 1
                    elif kind == b"a" and len(parts) == 2:
                        found.pop(seq, None)
                        seq += 1
                    elif not (kind == b"n" and len(parts) == 2):
                        raise ValueError("unknown record")
                except (ValueError, IndexError):
                    self.torn += 1
                    continue
                if nxt is None or seq > nxt:
                    nxt = seq
        for seq in order:
            entry = found.pop(seq, None)
            if entry is not None:
                self.pending.append(entry)
        return nxt

    def _rewrite(self):
        """Replace the file by ``n`` and the messages in ``pending`` (file closed)."""
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            if self.next_seq is not None:
                f.write(("n %d\n" % self.next_seq).encode())
            for seq, topic, payload, retain, keep in self.pending:
                f.write(_line(seq, topic, payload, retain, keep))
            _sync(f)
        os.rename(tmp, self.path)
        self._acked_since = 0

    def compact(self):
        """Rewrite the file as ``n`` and the messages still pending (automatic after
        ``compact_after`` acknowledgements; the device calls it at shutdown).  The
        file stays open: later acknowledgements are written too."""
        self._file.close()
        self.next_seq = self._load(self.next_seq)
        self._rewrite()
        self.pending = []  # the outbox holds them; only the file needs them
        self._file = open(self.path, "ab")

    # -- messages ------------------------------------------------------------
    def commit(self, seq, topic, payload, retain, keep):
        """Write message ``seq`` down before it is published (module docstring)."""
        if b"\n" in payload or " " in topic:
            raise ValueError("journal: a payload with a newline or a topic with a space")
        self._file.write(_line(seq, topic, payload, retain, keep))
        _sync(self._file)
        if self.next_seq is None or seq >= self.next_seq:
            self.next_seq = seq + 1

    def acked(self, seq):
        """Message ``seq`` needs no re-send (acknowledged, or dropped by the policy)."""
        self._file.write(("a %d\n" % seq).encode())
        self._acked_since += 1
        if self._acked_since >= self.compact_after:
            self.compact()
        else:
            _sync(self._file)
