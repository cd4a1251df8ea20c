"""Small persistent key-value state on the device (sequence numbers, boot count).

Two back ends with the same surface, ``load(key, default)`` and
``save(key, value)`` for JSON-able ints and strings:

- :class:`FileState`: one JSON file on flash, replaced atomically
  (write ``path.tmp``, then ``os.rename``) so a power cut leaves the old or
  the new file, never half of one;
- :class:`MemoryState`: a dict, for tests and throw-away simulated devices.
"""

import json

try:
    import os
except ImportError:  # pragma: no cover - MicroPython ports without os
    import uos as os  # type: ignore[import-not-found,no-redef]


class MemoryState:
    def __init__(self, initial=None):
        self._data = dict(initial or {})

    def load(self, key, default=None):
        return self._data.get(key, default)

    def save(self, key, value):
        self._data[key] = value


class FileState:
    def __init__(self, path):
        self.path = path
        self._data = {}
        try:
            with open(path) as f:
                data = json.loads(f.read())
            if isinstance(data, dict):
                self._data = data
        except (OSError, ValueError):
            # Missing or unreadable (torn by a power cut before rename could
            # not happen, but a user may have edited it): start empty.
            self._data = {}

    def load(self, key, default=None):
        return self._data.get(key, default)

    def save(self, key, value):
        self._data[key] = value
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(self._data))
        os.rename(tmp, self.path)


class SeqCounter:
    """Per-device message sequence number, monotonic across reboots.

    Writing flash for every message would wear it out, so the counter
    reserves ``block`` numbers at a time: the saved value is the first number
    not yet handed out *or reserved*.  After a clean :meth:`close` the saved
    value is exact, so the next boot continues without a gap; after a power
    cut at most ``block`` numbers are skipped.  A number is never reused,
    which is what the host's de-duplication on (device, seq) relies on.
    """

    BLOCK = 64  # numbers reserved per flash write

    def __init__(self, state, key="seq", block=BLOCK, start=None):
        if not isinstance(block, int) or block < 1:
            raise ValueError("block must be a positive int")
        # ``start``: an exact next number known elsewhere (the message journal).
        start = state.load(key, 0) if start is None else start
        if not isinstance(start, int) or start < 0:
            raise ValueError("stored %s is not a non-negative int: %r" % (key, start))
        self._state = state
        self._key = key
        self._block = block
        self._next = start
        self._reserved = start
        self._reserve()

    def _reserve(self):
        self._reserved = self._next + self._block
        self._state.save(self._key, self._reserved)

    def peek(self):
        """The number the next call to :meth:`next` returns."""
        return self._next

    def next(self):
        if self._next >= self._reserved:
            self._reserve()
        value = self._next
        self._next += 1
        return value

    def close(self):
        """Save the exact next number (clean shutdown: no gap at next boot)."""
        self._state.save(self._key, self._next)
        self._reserved = self._next
