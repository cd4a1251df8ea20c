"""Bounded store-and-forward queue of messages awaiting the broker's PUBACK.

Every QoS 1 message the device publishes goes through the outbox.  A message
leaves the outbox only when the broker has acknowledged it, so a broker outage
or a dropped connection loses nothing while the outbox has room: after a
reconnect every unacknowledged message is sent again (the host drops the
duplicates by (device, seq)).

Drop policy: the capacity is fixed at init.  When a new message arrives and
the outbox is full, the *oldest* message is dropped and counted in
``dropped``: the newest vital signs are worth more to a clinician than the
oldest.  A message pushed with ``keep=True`` (rhythm events: an AF onset or
an asystole is never worth less than a routine vitals window) is passed
over: the oldest message *without* ``keep`` goes instead, and only an outbox
full of kept messages drops its oldest one (counted in ``dropped_kept`` too).
This copy lives in RAM.  With a :class:`firmware.net.journal.Journal` every
message pushed with its ``seq`` is committed to flash before it can be sent,
every acknowledgement (and every drop) is written there too, and a new
outbox starts with the journal's pending messages: a reboot, a power cut or a
SIGKILL loses nothing that was pushed (``medge device run``, contract 13).
A journal write that fails (flash full) is counted in ``journal_errors`` and
the message stays in RAM only.

Observation hooks (diagnostics, and the simulator's loss accounting, which
must not reach into the slots): :meth:`Outbox.entries` lists what is still
queued, and ``on_push`` (None, or a callable ``(topic, payload)``) is told of
every message pushed, before the drop policy runs.
"""

_TOPIC = 0
_PAYLOAD = 1
_RETAIN = 2
_TOKEN = 3  # link token while in flight, None while waiting to be sent
_ACKED = 4
_KEEP = 5
_SEQ = 6  # the message's seq when it is in the journal, else None


class Outbox:
    def __init__(self, capacity, journal=None):
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError("outbox capacity must be a positive int, got %r" % (capacity,))
        self.capacity = capacity
        self.journal = journal
        self.journal_errors = 0  # journal writes that failed (the message stayed in RAM)
        self._slots = [None] * capacity
        self._head = 0
        self._count = 0
        self._inflight = 0
        self.dropped = 0  # messages dropped by the full-outbox policy
        self.dropped_kept = 0  # of which pushed with keep=True
        self.sent = 0  # publish attempts (including re-sends)
        self.acked = 0  # messages acknowledged by the broker
        self.on_push = None  # optional callable(topic, payload): every message pushed
        if journal is not None:  # what a reboot left unacknowledged goes out first
            for seq, topic, payload, retain, keep in journal.pending:
                self._add(topic, payload, retain, keep, seq)
            journal.pending = []

    def __len__(self):
        return self._count

    @property
    def inflight(self):
        return self._inflight

    def push(self, topic, payload, retain, keep=False, seq=None):
        """Queue a message; with a journal and its ``seq`` it is committed first."""
        if self.on_push is not None:
            self.on_push(topic, payload)
        if self.journal is not None and seq is not None:
            try:
                self.journal.commit(seq, topic, payload, retain, keep)
            except OSError:
                self.journal_errors += 1
                seq = None
        self._add(topic, payload, retain, keep, seq)

    def _add(self, topic, payload, retain, keep, seq):
        if self._count == self.capacity and self._drop_one():
            self.dropped += 1
        idx = (self._head + self._count) % self.capacity
        self._slots[idx] = [topic, payload, retain, None, False, keep, seq]
        self._count += 1

    def _done(self, entry):
        """``entry`` needs no re-send: tell the journal (acknowledged or dropped)."""
        if self.journal is not None and entry[_SEQ] is not None and not entry[_ACKED]:
            try:
                self.journal.acked(entry[_SEQ])
            except OSError:
                self.journal_errors += 1

    def _drop_one(self):
        """Make room: the oldest entry already acknowledged or without
        ``keep`` (the older ones move up one slot), else the oldest of all.
        True if a message not yet acknowledged was lost."""
        cap = self.capacity
        for i in range(self._count):
            pos = (self._head + i) % cap
            entry = self._slots[pos]
            if entry[_ACKED] or not entry[_KEEP]:
                break
        else:
            self.dropped_kept += 1
            self._done(self._slots[self._head])
            self._drop_head()
            return True
        lost = not entry[_ACKED]
        self._done(entry)
        if i == 0:
            self._drop_head()
            return lost
        if entry[_TOKEN] is not None and not entry[_ACKED]:
            self._inflight -= 1
        # Close the gap: the entries before it move one slot towards it.
        while i > 0:
            self._slots[(self._head + i) % cap] = self._slots[(self._head + i - 1) % cap]
            i -= 1
        self._slots[self._head] = None
        self._head = (self._head + 1) % cap
        self._count -= 1
        return lost

    def _drop_head(self):
        entry = self._slots[self._head]
        if entry[_TOKEN] is not None and not entry[_ACKED]:
            self._inflight -= 1
        self._slots[self._head] = None
        self._head = (self._head + 1) % self.capacity
        self._count -= 1

    def entries(self):
        """Every message still queued, oldest first, as ``(topic, payload,
        in_flight)``: ``in_flight`` is True once it was handed to the link and
        is waiting for its PUBACK.  Allocates a list: not for a hot path."""
        out = []
        for i in range(self._count):
            entry = self._slots[(self._head + i) % self.capacity]
            if not entry[_ACKED]:
                out.append((entry[_TOPIC], entry[_PAYLOAD], entry[_TOKEN] is not None))
        return out

    def send_some(self, publish, max_inflight):
        """Hand waiting messages to ``publish(topic, payload, retain) -> token``.

        Keeps at most ``max_inflight`` unacknowledged messages outstanding.
        ``publish`` raising OSError stops the round; the error propagates.
        """
        i = 0
        while i < self._count and self._inflight < max_inflight:
            entry = self._slots[(self._head + i) % self.capacity]
            if entry[_TOKEN] is None:
                entry[_TOKEN] = publish(entry[_TOPIC], entry[_PAYLOAD], entry[_RETAIN])
                self._inflight += 1
                self.sent += 1
            i += 1

    def ack(self, token):
        """The broker acknowledged ``token``; unknown tokens are ignored."""
        for i in range(self._count):
            entry = self._slots[(self._head + i) % self.capacity]
            if entry[_TOKEN] == token and not entry[_ACKED]:
                self._done(entry)
                entry[_ACKED] = True
                self._inflight -= 1
                self.acked += 1
                break
        while self._count and self._slots[self._head][_ACKED]:
            self._slots[self._head] = None
            self._head = (self._head + 1) % self.capacity
            self._count -= 1

    def requeue_inflight(self):
        """The connection dropped: every unacknowledged message goes out again."""
        for i in range(self._count):
            entry = self._slots[(self._head + i) % self.capacity]
            if not entry[_ACKED]:
                entry[_TOKEN] = None
        self._inflight = 0
