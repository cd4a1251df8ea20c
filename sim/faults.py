"""Fault injection for the simulated fleet: faults are data, applied on simulated time.

A fault spec is a comma-separated list of faults::

    FAULT := KIND [":" SELECT] [":" VALUE] ["@" START ["+" DURATION]]

``START`` and ``DURATION`` are simulated time since the fleet started:
``30s``, ``500ms``, ``2m``, ``1h`` or a bare number of seconds.  Without
``@`` a fault lasts the whole run; with ``@START`` but no ``+DURATION`` it
lasts from START to the end.  ``SELECT`` picks the devices: ``all``, a count
(``3``), a share of the fleet (``20%``, rounded up, at least one device) or
device numbers from 1 (``#1/4/7``).  A count or a share picks devices with a
generator seeded by the fleet seed and the fault's position in the spec, so
the same spec and seed hit the same devices.

=============================== ============================================================
``outage@30s+10s``              the broker process is stopped at 30 s and started again
                                10 s later (needs the ``Broker``: ``medge sim --broker``)
``partition:20%@60s+30s``       the selected devices' network is cut: their TCP connection
                                is aborted (the broker publishes their last will) and every
                                reconnect is refused until the window ends; the outbox keeps
                                everything and re-sends after the reconnect
``latency:2:300ms@10s+20s``     every publish of the selected devices waits 300 ms of
                                simulated time before it reaches the socket (in order)
``loss:10%:5%``                 the selected devices lose 5 % of their packets.  MQTT runs on
                                TCP, which never drops a PUBLISH silently: a lost segment is
                                retransmitted after an RTO (200 ms, doubling), so loss shows
                                as delay with head-of-line blocking, and 6 losses in a row
                                reset the connection (the outbox re-sends after reconnecting)
``sensor:1:leadoff@20s+5s``     electrodes off: ADS1292R LOFF_STAT bits set and the channel
                                at the rail (ads1292), the amplifier at its rail (ads1115),
                                rail counts (direct)
``sensor:1:nack@20s+5s``        the sensor stops answering: the SPI part floats MISO high (bad
                                frames, no samples), the I2C address NACKs (``OSError`` in the
                                driver, counted), no samples (direct)
``reboot:#2@40s``               clean reboot: ``stop()``, a bounded drain, disconnect, a new
                                ``Device`` on the same state file (seq continues, boot_id + 1)
``power:#3@50s+5s``             abrupt power loss at 50 s (no ``stop()``, no DISCONNECT, the
                                RAM outbox is lost, seq skips the rest of its reserved block);
                                power returns 5 s later (immediately without ``+``)
``drift:#1:+500ppm``            the device clock runs 500 ppm fast (``-`` slow): visible in
                                every ``ts_ms`` it sends
=============================== ============================================================

:func:`parse_faults` turns a spec into :class:`Fault` records (``ValueError``
with the offending part on a bad spec); :class:`FaultInjector` schedules them
on a fleet and fires each transition at the first fleet step at or after its
time; :class:`FaultyLink` wraps a device's MQTT link (any adapter with the
``firmware.net.links`` surface) to partition it, delay it and lose its packets.
Every fault ends by itself: a window closes at START + DURATION.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import random
import re
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from sim.faultsyntax import FAULT_SYNTAX  # numpy-free: the medge parser reads it

log = logging.getLogger(__name__)

__all__ = ["FAULT_KINDS", "FAULT_SYNTAX", "Fault", "FaultInjector", "FaultyLink",
           "parse_duration_ms", "parse_faults"]

FAULT_KINDS = ("outage", "partition", "latency", "loss", "sensor", "reboot", "power", "drift")
_NEEDS_SELECT = set(FAULT_KINDS) - {"outage"}
_NEEDS_START = {"reboot", "power"}

_TIME_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_TIME_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, None: 1000}
_RTO_MS = 200
_MAX_RETRANSMITS = 6


def parse_duration_ms(text: str) -> int:
    """``30s``, ``500ms``, ``2m``, ``1h`` or plain seconds -> milliseconds."""
    m = _TIME_RE.match(text.strip())
    if not m:
        raise ValueError(f"bad time {text!r} (use e.g. 30s, 500ms, 2m, 1h)")
    return round(float(m.group(1)) * _TIME_UNITS_MS[m.group(2)])


@dataclass(frozen=True)
class Fault:
    kind: str
    select: str  # "all", "3", "20%", "#1/4"; "" for outage
    value: str  # kind-specific: "300ms", "5%", "leadoff", "+500ppm"; "" if none
    start_ms: int
    duration_ms: int | None  # None: to the end of the run (or instantaneous for reboot)
    text: str

    def devices(self, n: int, seed: int, position: int) -> list[int]:
        """Indices (from 0) of the devices this fault hits in a fleet of ``n``."""
        sel = self.select
        if sel == "all":
            return list(range(n))
        if sel.startswith("#"):
            idx = [int(x) - 1 for x in sel[1:].split("/")]
            bad = [i + 1 for i in idx if not 0 <= i < n]
            if bad:
                raise ValueError(f"fault {self.text!r}: no device number {bad[0]} in 1..{n}")
            return sorted(set(idx))
        count = math.ceil(n * float(sel[:-1]) / 100) if sel.endswith("%") else int(sel)
        count = max(1, min(n, count))
        rng = np.random.default_rng([seed, 0x666C74, position])  # "flt"
        return sorted(int(i) for i in rng.choice(n, size=count, replace=False))


def _check_select(sel: str, text: str) -> None:
    ok = (sel == "all" or re.fullmatch(r"\d+", sel) is not None
          or re.fullmatch(r"\d+(\.\d+)?%", sel) is not None
          or re.fullmatch(r"#\d+(/\d+)*", sel) is not None)
    if not ok or sel in ("0", "0%"):
        raise ValueError(f"fault {text!r}: bad device selection {sel!r} "
                         "(all, a count, a percentage or #1/2/3)")


def _parse_one(text: str) -> Fault:
    head, _, when = text.partition("@")
    parts = head.split(":")
    kind = parts[0]
    if kind == "powerloss":
        kind = "power"
    if kind not in FAULT_KINDS:
        raise ValueError(f"fault {text!r}: unknown kind {kind!r} (one of {', '.join(FAULT_KINDS)})")
    args = parts[1:]
    select = ""
    if kind in _NEEDS_SELECT:
        if not args:
            raise ValueError(f"fault {text!r}: {kind} needs a device selection, e.g. {kind}:1")
        select = args.pop(0)
        _check_select(select, text)
    value = args.pop(0) if args else ""
    if args:
        raise ValueError(f"fault {text!r}: too many ':' fields")
    start_ms, duration_ms = 0, None
    if when:
        start, plus, dur = when.partition("+")
        start_ms = parse_duration_ms(start)
        if plus:
            duration_ms = parse_duration_ms(dur)
            if duration_ms <= 0:
                raise ValueError(f"fault {text!r}: the duration must be > 0")
    elif kind in _NEEDS_START:
        raise ValueError(f"fault {text!r}: {kind} needs a time, e.g. {kind}:1@30s")
    if kind == "outage" and (not when or duration_ms is None):
        raise ValueError(f"fault {text!r}: an outage needs @START+DURATION, e.g. outage@30s+10s")
    if kind == "latency":
        if not value:
            raise ValueError(f"fault {text!r}: latency needs a delay, e.g. latency:2:300ms")
        parse_duration_ms(value)
    elif kind == "loss":
        if not re.fullmatch(r"\d+(\.\d+)?%", value) or not 0 < float(value[:-1]) < 100:
            raise ValueError(f"fault {text!r}: loss needs a rate in (0, 100)%, e.g. loss:1:5%")
    elif kind == "sensor":
        value = value or "leadoff"
        if value not in ("leadoff", "nack"):
            raise ValueError(f"fault {text!r}: sensor fault is leadoff or nack, got {value!r}")
    elif kind == "drift":
        m = re.fullmatch(r"([+-]?\d+(\.\d+)?)ppm", value)
        if not m or abs(float(m.group(1))) > 100_000:
            raise ValueError(f"fault {text!r}: drift needs +-N ppm (|N| <= 100000), "
                             "e.g. drift:1:+500ppm")
    elif value:
        raise ValueError(f"fault {text!r}: {kind} takes no value")
    return Fault(kind, select, value, start_ms, duration_ms, text)


def parse_faults(spec: str | None) -> list[Fault]:
    """Parse a fault spec (module docstring); an empty spec is no faults."""
    if not spec:
        return []
    items = [t for t in re.split(r"[,\s]+", spec.strip()) if t]
    return [_parse_one(t) for t in items]


# ------------------------------------------------------------------- the link


class FaultyLink:
    """A device's MQTT link with faults: partition, added latency, packet loss.

    Wraps any link with the ``firmware.net.links`` surface (``inner``).  Its
    tokens are its own; publishes wait in a FIFO until their (simulated) time
    has come, then go to ``inner``; the inner PUBACK tokens are mapped back.
    ``clock`` is the true simulation clock.  ``sent_seqs`` holds the seq of
    every message that reached the inner link (the socket)."""

    def __init__(self, inner: Any, clock: Any, seed: int = 0, track: bool = False) -> None:
        self.inner = inner
        self.clock = clock
        self._rng = random.Random(seed)
        self.partitioned = False
        self.latency_ms = 0
        self.loss = 0.0
        self.track = track
        self.sent_seqs: set[int] = set()
        self._queue: deque[tuple[int, int, str, bytes, bool]] = deque()
        self._map: dict[Any, int] = {}
        self._next_token = 1
        self._last_due = 0
        self.refused = 0  # connects refused by a partition
        self.resets = 0  # connections reset by too many losses in a row
        self.delayed = 0  # publishes held back by latency or loss

    # -- fault controls ---------------------------------------------------------
    def set_partitioned(self, on: bool) -> None:
        self.partitioned = on
        if on:
            self.drop()

    def drop(self) -> None:
        """Cut the connection without DISCONNECT (the broker publishes the will):
        what was held back is forgotten, the inner link drops (``drop()``, as
        ``PahoLink``, ``MemoryLink`` and ``sim.netlink.PolledPahoLink`` offer)."""
        self._clear()
        self.inner.drop()

    def _clear(self) -> None:
        self._queue.clear()
        self._map.clear()

    # -- link surface -----------------------------------------------------------
    def connect(self, will_topic: str, will_payload: bytes) -> None:
        if self.partitioned:
            self.refused += 1
            raise OSError("network partition: no route to the broker")
        self._clear()
        self.inner.connect(will_topic, will_payload)

    def connected(self) -> bool:
        return not self.partitioned and self.inner.connected()

    def publish(self, topic: str, payload: bytes, retain: bool) -> int:
        if not self.connected():
            raise OSError("not connected")
        token = self._next_token
        self._next_token += 1
        delay = self.latency_ms
        if self.loss:
            losses = 0
            while self._rng.random() < self.loss:
                losses += 1
                if losses >= _MAX_RETRANSMITS:
                    self.resets += 1
                    log.info("%s: connection reset after %d losses in a row",
                             getattr(self.inner, "client_id", "link"), losses)
                    self.drop()
                    raise OSError("connection reset: too many retransmissions")
                delay += _RTO_MS << (losses - 1)
        if delay or self._queue:
            due = max(self.clock.elapsed_ms + delay, self._last_due)  # TCP keeps order
            self._last_due = due
            self._queue.append((due, token, topic, payload, retain))
            self.delayed += 1
            self._flush()
        else:
            self._send(token, topic, payload, retain)
        return token

    def _send(self, token: int, topic: str, payload: bytes, retain: bool) -> None:
        inner_token = self.inner.publish(topic, payload, retain)
        self._map[inner_token] = token
        if self.track and topic.endswith("/vitals"):
            self.sent_seqs.add(int(json.loads(payload)["seq"]))

    def _flush(self) -> None:
        now = self.clock.elapsed_ms
        q = self._queue
        while q and q[0][0] <= now:
            _, token, topic, payload, retain = q.popleft()
            self._send(token, topic, payload, retain)

    def poll(self) -> list[int]:
        if not self.connected():
            self._clear()
            return []
        try:
            self._flush()
        except OSError:
            self._clear()
            raise
        out = []
        for t in self.inner.poll():
            token = self._map.pop(t, None)
            if token is not None:
                out.append(token)
        return out

    def disconnect(self) -> None:
        self._clear()
        self.inner.disconnect()

    # paho link details the fleet reads
    @property
    def client_id(self) -> str:
        return getattr(self.inner, "client_id", "")


# --------------------------------------------------------------- the injector


class FaultInjector:
    """Schedules parsed faults on a fleet (``sim.fleet.Fleet``).

    ``tick(now_ms)`` (called by the fleet before each step) fires every
    transition whose time has come.  ``broker`` (a ``host.broker.launch.Broker``) is
    needed for ``outage``.  ``log_events`` lists what happened: (ms, text)."""

    def __init__(self, faults: list[Fault], sims: list[Any], seed: int = 0,
                 broker: Any = None) -> None:
        self.faults = faults
        self.sims = sims
        self.broker = broker
        self.events: list[tuple[int, str]] = []
        self.hits: dict[str, list[str]] = {}  # fault text -> device ids
        self._heap: list[tuple[int, int, str, Callable[[], None]]] = []
        self._n = 0
        self._active: dict[int, tuple[str, Callable[[], None]]] = {}  # open windows
        self.stalled = False  # a blocking action ran (the fleet loop resets its pacing)
        n = len(sims)
        for pos, f in enumerate(faults):
            if f.kind == "outage":
                if broker is None:
                    raise ValueError(f"fault {f.text!r}: a broker outage needs the broker "
                                     "(medge sim --broker ...)")
                if getattr(getattr(broker, "kind", None), "value", None) == "embedded":
                    log.warning("fault %s: the embedded broker keeps nothing across a restart: "
                                "messages the devices re-send before their subscribers are "
                                "back are lost (the tests and docs say so; use mosquitto "
                                "to lose nothing)", f.text)
                self._window(f, "outage", self._blocking(broker.stop),
                             self._blocking(broker.start))
                continue
            idx = f.devices(n, seed, pos)
            targets = [sims[i] for i in idx]
            self.hits[f.text] = [s.device_id for s in targets]
            for s in targets:
                self._schedule_device(f, s)

    def _blocking(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Mark an action that takes wall time (a broker stopping or starting): the
        fleet loop then does not rush to catch up (simulated time stood still)."""

        def run() -> None:
            fn()
            self.stalled = True

        return run

    def _at(self, t_ms: int, what: str, fn: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (t_ms, self._n, what, fn))
        self._n += 1

    def _window(self, f: Fault, what: str, on: Callable[[], None],
                off: Callable[[], None] | None) -> None:
        key = self._n
        ending = f.duration_ms is not None and off is not None

        def begin() -> None:
            on()
            if off is not None:
                self._active[key] = (what, off)

        def end() -> None:
            if self._active.pop(key, None) is not None:
                off()

        self._at(f.start_ms, f"{what} begins", begin)
        if ending:
            self._at(f.start_ms + f.duration_ms, f"{what} ends", end)

    @staticmethod
    def _link(sim: Any, f: Fault) -> FaultyLink:
        link = sim.link
        if not isinstance(link, FaultyLink):
            raise ValueError(f"fault {f.text!r}: {sim.device_id} has no FaultyLink")
        return link

    def _schedule_device(self, f: Fault, sim: Any) -> None:
        did = sim.device_id
        k = f.kind
        if k == "partition":
            link = self._link(sim, f)
            self._window(f, f"{did} partition", lambda: link.set_partitioned(True),
                         lambda: link.set_partitioned(False))
        elif k == "latency":
            link = self._link(sim, f)
            ms = parse_duration_ms(f.value)
            self._window(f, f"{did} latency {f.value}", lambda: setattr(link, "latency_ms", ms),
                         lambda: setattr(link, "latency_ms", 0))
        elif k == "loss":
            link = self._link(sim, f)
            p = float(f.value[:-1]) / 100
            self._window(f, f"{did} loss {f.value}", lambda: setattr(link, "loss", p),
                         lambda: setattr(link, "loss", 0.0))
        elif k == "sensor":
            sensor = sim.sensor
            hook = sensor.set_lead_off if f.value == "leadoff" else sensor.set_disconnected
            self._window(f, f"{did} sensor {f.value}", lambda: hook(True), lambda: hook(False))
        elif k == "reboot":
            self._at(f.start_ms, f"{did} reboot", sim.reboot)
        elif k == "power":
            self._window(Fault(k, f.select, f.value, f.start_ms, f.duration_ms or 0, f.text),
                         f"{did} power loss", sim.power_loss, sim.power_on)
        elif k == "drift":
            ppm = float(f.value[:-3])
            clock = sim.clock
            self._window(f, f"{did} drift {f.value}", lambda: clock.set_ppm(ppm),
                         lambda: clock.set_ppm(0.0))

    def tick(self, now_ms: int) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            t, _, what, fn = heapq.heappop(heap)
            log.info("fault at %.3f s: %s", t / 1000, what)
            self.events.append((now_ms, what))
            fn()

    def pending(self) -> int:
        return len(self._heap)

    def finish(self, now_ms: int) -> None:
        """End of the run: close every open window (partitions heal, the broker
        and power come back, drift stops); faults not yet begun never will."""
        self._heap.clear()
        for key in sorted(self._active):
            what, off = self._active.pop(key)
            log.info("fault: %s ends with the run", what)
            self.events.append((now_ms, f"{what} ends (end of run)"))
            off()
