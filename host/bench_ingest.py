"""``make bench`` (ingest): messages/s stored and publish-to-commit latency.

A light load generator publishes valid pre-built vitals messages (the v1
schema as the firmware encodes it, with beat classes; contiguous ``seq`` per
device; ``ts_ms`` = the publish time) from ``--devices`` (1,000) simulated
device ids, QoS 1, over ``--clients`` (4) connections in one child process, at
a paced total rate, for ``--duration`` seconds, against a mosquitto broker
started here (persistence off).  ``--generator raw`` (the default) writes
pre-encoded MQTT 3.1.1 PUBLISH packets on plain sockets and counts the PUBACKs
(~20 us of CPU a message); ``--generator paho`` uses paho-mqtt v5 clients
(~80 us a message, which the 2 cores here then lack for the consumers).  On the
other side, in child processes:

- ``ingest-1``: the real ``medge ingest`` (host.services.ingest), one worker;
- ``ingest-3``: three ``medge ingest --group bench`` workers (MQTT v5 shared
  subscription), one store;
- ``peer``: a plain consumer, paho ``on_message`` that inserts the message
  into SQLite and commits, one transaction per message (auto-acknowledged by
  paho after the callback) -- the baseline every figure is compared with.

``--backends sqlite,postgresql`` (both by default): ``ingest-1`` and
``ingest-3`` also run on PostgreSQL (``ingest-1-pg``, ``ingest-3-pg``), a
throw-away server started here (host/services/storage/pgserver.py) with
PostgreSQL's durable defaults (fsync and synchronous commit on, as a site runs
it), a fresh database per run; the peer runs on SQLite only, so the PostgreSQL
ratios are to the same SQLite baseline.

Each consumer runs alone against the same offered load (2 cores here: running
them side by side would measure the scheduler), twice over:

(a) ``throughput``: ``--rate`` (12,000) messages/s offered for ``--duration``
    (20 s; ``make bench`` passes 60), but never more than ``--max-backlog``
    (20,000) published and not yet committed: the generator reads the
    consumer's commits (below) and holds back, so an overloaded consumer runs at
    its own sustained maximum with a bounded broker queue (unbounded, the
    queue would hit mosquitto's per-client limit and drop messages);
(b) ``latency``: 1,000 devices x 1 Hz (1,000 messages/s) for ``--duration``.

How it is measured
------------------
Before a consumer starts, the bench creates its store and adds a side table
``bench_seen`` (rowid, ts_ms) filled by an ``AFTER INSERT`` trigger on the
vitals table: the trigger runs inside the consumer's transaction, so a row of
``bench_seen`` becomes visible to another connection exactly when that
transaction commits (PostgreSQL: a statement-level trigger; its ids are taken
at insert, so the poller keeps the set of ids above the last contiguous one).
A poller in the bench process reads the new rows every ``POLL_S`` (5 ms) from
its own reader connection and takes the first time it
sees a row as its commit time (late by at most the poll interval plus the
poller's own scheduling delay: latencies are upper bounds).

- stored messages/s: the rows seen per second; ``mean`` is (rows seen in the
  measured window) / window, the window running from the generator's first
  publish + ``WARMUP_S`` (2 s) to its last publish; ``min_10s`` the slowest
  10-s stretch (the sustained figure) of that window;
- latency: (first seen) - ``ts_ms`` of the row (the generator's wall clock at
  publish, same machine and clock), p50/p99/max over every row whose publish fell in the
  measured window;
- CPU: user + system seconds of each process (from /proc) per wall second of
  the run: the consumer(s), the generator, mosquitto;
- completeness: every published message must be stored exactly once (the
  store's ``stored`` counter and the row count equal the generator's acked
  count; no duplicates, no gaps).

Output: one line per figure, ``--json`` for the whole result.

    .venv/bin/python -m host.bench_ingest [--duration 60] [--rate 12000] [--json]
        [--scenarios throughput,latency] [--consumers ingest-1,ingest-3,peer]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

#: Poll period of the commit-time poller (seconds).
POLL_S = 0.005
#: Seconds after the first publish that are not measured (connects, caches warming up).
WARMUP_S = 2.0
#: Device ids: bench-0000 ... bench-0999.
DEVICE_PREFIX = "bench-"
#: Throughput scenario: at most this many messages published and not yet committed.
MAX_BACKLOG = 20_000
_SEQ_MARK = 987654321987
_TS_MARK = 1234567890123

# -- pre-built messages ---------------------------------------------------------


def device_ids(n: int) -> list[str]:
    return [f"{DEVICE_PREFIX}{i:04d}" for i in range(n)]


def message_template(device_id: str) -> tuple[str, bytes]:
    """(topic, payload template with ``%(seq)d`` and ``%(ts)d``) of one device's
    vitals message: the firmware's own constructor and wire encoding, so it is
    the real schema."""
    from firmware.net import protocol
    from firmware.net.wire import encode

    doc = protocol.vitals(device_id, _SEQ_MARK, _TS_MARK, 1000, 72, 1, protocol.QUALITY_GOOD,
                          "good", {"N": 1, "S": 0, "V": 0, "F": 0, "Q": 0})
    body = encode(doc).replace(b"%", b"%%")
    body = body.replace(str(_SEQ_MARK).encode(), b"%(seq)d").replace(
        str(_TS_MARK).encode(), b"%(ts)d")
    assert b"%(seq)d" in body and b"%(ts)d" in body, body
    return protocol.topic(device_id, protocol.MSG_VITALS), body


def render(template: bytes, seq: int, ts_ms: int) -> bytes:
    return template % {b"seq": seq, b"ts": ts_ms}


# -- the load generator (a child process) ------------------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _run_paced(n_devices: int, rate: float, duration_s: float, clients: int,
               publish: Any, acked: list[int], ack_timeout_s: float,
               inflight: int | None = None, allowed: Any = None) -> dict[str, Any]:
    """The pacing both generators share: client c owns the devices i with
    i mod clients == c and sends them round robin (so each device's seq runs 0, 1,
    2, ... and the devices' publishes are spread evenly over time), every 2 ms
    calling ``publish(c, [(device_id, seq), ...], ts_ms)`` with what is due
    (at most ``inflight`` unacknowledged, and no more in total than ``allowed()``
    when given: the backlog bound).  Waits for the PUBACKs counted in
    ``acked[c]``; returns the counts, the first/last publish times and CPU."""
    ids = device_ids(n_devices)
    slices = [ids[c::clients] for c in range(clients)]
    sent = [0] * clients
    t0 = time.monotonic()
    first_ms = _now_ms()
    stop_at = t0 + duration_s

    def pace(c: int) -> None:
        mine = slices[c]
        per_round = len(mine)
        my_rate = rate * per_round / n_devices
        j = 0
        while time.monotonic() < stop_at:
            due = int((time.monotonic() - t0) * my_rate) + 1
            if inflight is not None:
                due = min(due, acked[c] + inflight)
            if allowed is not None:
                due = min(due, allowed() * per_round // n_devices)
            if j < due:
                publish(c, [(mine[i % per_round], i // per_round) for i in range(j, due)],
                        _now_ms())
                j = due
            sent[c] = j
            time.sleep(0.002)

    threads = [threading.Thread(target=pace, args=(c,), daemon=True)
               for c in range(clients) if slices[c]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    last_ms = _now_ms()
    pub_wall = time.monotonic() - t0
    deadline = time.monotonic() + ack_timeout_s
    while sum(acked) < sum(sent) and time.monotonic() < deadline:
        time.sleep(0.01)
    cpu = os.times()
    return {"published": sum(sent), "acked": sum(acked), "first_publish_ms": first_ms,
            "last_publish_ms": last_ms, "publish_wall_s": pub_wall,
            "rate_achieved": sum(sent) / pub_wall if pub_wall > 0 else 0.0,
            "cpu_s": cpu.user + cpu.system}


class Backlog:
    """``allowed()``: how many messages may have been published in total, so that
    at most ``max_backlog`` are published and not yet committed (the consumer's
    ``bench_seen`` rows, read every 20 ms from its store).  It keeps an overloaded
    consumer's backlog, and so the broker's queue, bounded: max throughput is then
    what the consumer sustains, not what the broker's queue limit drops."""

    def __init__(self, db: str, max_backlog: int) -> None:
        self.db = db
        self.max_backlog = max_backlog
        self.committed = 0
        threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self) -> None:
        conn = _reader(self.db)
        while True:
            self.committed = conn.execute("SELECT COALESCE(MAX(id), 0) FROM bench_seen")\
                .fetchone()[0]
            time.sleep(0.02)

    def allowed(self) -> int:
        return self.committed + self.max_backlog


def generate(host: str, port: int, n_devices: int, rate: float, duration_s: float,
             clients: int = 4, ack_timeout_s: float = 30.0,
             client_prefix: str = "medge-bench-gen", allowed: Any = None) -> dict[str, Any]:
    """Publish ``rate`` vitals messages/s in total for ``duration_s`` from
    ``clients`` paho clients (MQTT v5, QoS 1; pacing: :func:`_run_paced`)."""
    import paho.mqtt.client as mqtt

    acked = [0] * clients
    connected = [threading.Event() for _ in range(clients)]
    mqtt_clients = []
    for c in range(clients):
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{client_prefix}-{c}",
                             protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)

        def on_publish(client, userdata, mid, reason_code, properties, c=c) -> None:
            acked[c] += 1

        def on_connect(client, userdata, flags, reason_code, properties, c=c) -> None:
            if not reason_code.is_failure:
                connected[c].set()

        client.on_publish = on_publish
        client.on_connect = on_connect
        client.connect(host, port, keepalive=60)
        client.loop_start()
        mqtt_clients.append(client)
    for ev in connected:
        if not ev.wait(10):
            raise RuntimeError("load generator: no CONNACK from the broker")
    templates = {d: message_template(d) for d in device_ids(n_devices)}

    def publish(c: int, batch: list[tuple[str, int]], ts_ms: int) -> None:
        for device, seq in batch:
            topic, template = templates[device]
            mqtt_clients[c].publish(topic, render(template, seq, ts_ms), qos=1)

    try:
        return _run_paced(n_devices, rate, duration_s, clients, publish, acked, ack_timeout_s,
                          allowed=allowed)
    finally:
        for client in mqtt_clients:
            client.disconnect()
            client.loop_stop()


#: In-flight QoS 1 publishes per raw connection (PUBACK not yet read).
RAW_INFLIGHT = 1000


def generate_raw(host: str, port: int, n_devices: int, rate: float, duration_s: float,
                 clients: int = 4, ack_timeout_s: float = 30.0,
                 client_prefix: str = "medge-bench-gen", allowed: Any = None) -> dict[str, Any]:
    """As :func:`generate`, but each client is a raw MQTT 3.1.1 socket writing
    pre-encoded QoS 1 PUBLISH packets in bulk and counting the PUBACKs: ~20 us of
    CPU per message instead of paho's ~80 (measured here), so the generator leaves
    the cores to the system under test (``--generator raw``, the default)."""
    import socket

    from host.broker.launch import _encode_remaining_length as _remaining_length

    acked = [0] * clients
    socks = []
    for c in range(clients):
        sock = socket.create_connection((host, port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cid = f"{client_prefix}-{c}".encode()
        # CONNECT: "MQTT" level 4, clean session, keepalive 0 (off), the client id.
        var = b"\x00\x04MQTT\x04\x02\x00\x00" + len(cid).to_bytes(2, "big") + cid
        sock.sendall(b"\x10" + _remaining_length(len(var)) + var)
        connack = b""
        while len(connack) < 4:
            chunk = sock.recv(4 - len(connack))
            if not chunk:
                raise RuntimeError("load generator: the broker closed the connection")
            connack += chunk
        if connack[0] != 0x20 or connack[3] != 0:
            raise RuntimeError(f"load generator: CONNACK {connack!r}")
        sock.settimeout(None)
        socks.append(sock)
    heads = {}
    for d in device_ids(n_devices):
        topic, template = message_template(d)
        heads[d] = (len(topic).to_bytes(2, "big") + topic.encode(), template)

    def read_acks(c: int) -> None:
        pending = b""
        while True:
            try:
                chunk = socks[c].recv(65536)
            except OSError:
                return
            if not chunk:
                return
            pending += chunk
            whole = len(pending) - len(pending) % 4  # 3.1.1 PUBACK: 0x40 0x02 mid mid
            acked[c] += whole // 4
            pending = pending[whole:]

    mids = [0] * clients

    def publish(c: int, batch: list[tuple[str, int]], ts_ms: int) -> None:
        packets = []
        mid = mids[c]
        for device, seq in batch:
            head, template = heads[device]
            mid = mid % 65535 + 1
            body = head + mid.to_bytes(2, "big") + render(template, seq, ts_ms)
            packets.append(b"\x32" + _remaining_length(len(body)) + body)
        mids[c] = mid
        socks[c].sendall(b"".join(packets))

    for c in range(clients):
        threading.Thread(target=read_acks, args=(c,), daemon=True).start()
    try:
        return _run_paced(n_devices, rate, duration_s, clients, publish, acked, ack_timeout_s,
                          inflight=RAW_INFLIGHT, allowed=allowed)
    finally:
        for sock in socks:
            try:
                sock.sendall(b"\xe0\x00")  # DISCONNECT
            except OSError:
                pass
            sock.close()


# -- the plain consumer peer (a child process) -------------------------------------

PEER_DDL = """
CREATE TABLE IF NOT EXISTS vitals (
    device_id TEXT NOT NULL, seq INTEGER NOT NULL, ts_ms INTEGER NOT NULL,
    payload TEXT NOT NULL, PRIMARY KEY (device_id, seq)) WITHOUT ROWID;
"""


def peer(db: str, host: str, port: int, stop: threading.Event,
         ready: threading.Event | None = None, client_id: str = "medge-bench-peer") -> int:
    """The baseline: paho on_message -> json.loads -> INSERT -> COMMIT, per message
    (paho acknowledges after the callback returns).  Returns the messages stored."""
    import paho.mqtt.client as mqtt

    conn = sqlite3.connect(db, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(PEER_DDL)
    stored = [0]

    def on_message(client, userdata, msg) -> None:
        doc = json.loads(msg.payload)
        conn.execute("INSERT OR IGNORE INTO vitals VALUES (?, ?, ?, ?)",
                     (doc["device_id"], doc["seq"], doc["ts_ms"], msg.payload.decode()))
        conn.commit()
        stored[0] += 1

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        client.subscribe("medge/v1/#", qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        if ready is not None:
            ready.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.max_inflight_messages_set(100)
    client.connect(host, port, keepalive=60)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()
    conn.close()
    return stored[0]


# -- the measuring side --------------------------------------------------------------

_SEEN_DDL = """
CREATE TABLE IF NOT EXISTS bench_seen (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS bench_seen_vitals AFTER INSERT ON vitals
BEGIN INSERT INTO bench_seen (ts_ms) VALUES (NEW.ts_ms); END;
"""


#: PostgreSQL: the same side table, filled per statement from its transition table.
_SEEN_DDL_PG = """
CREATE TABLE IF NOT EXISTS bench_seen (id BIGSERIAL PRIMARY KEY, ts_ms BIGINT NOT NULL);
CREATE OR REPLACE FUNCTION bench_seen_fn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO bench_seen (ts_ms) SELECT ts_ms FROM new_rows; RETURN NULL; END $$;
CREATE TRIGGER bench_seen_vitals AFTER INSERT ON vitals REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION bench_seen_fn();
"""


def _is_pg(db: Path | str) -> bool:
    return str(db).startswith(("postgresql://", "postgres://"))


def _reader(db: Path | str) -> Any:
    """A read connection with ``execute(sql, params).fetchall()/fetchone()``."""
    if _is_pg(db):
        import psycopg

        return psycopg.connect(str(db), autocommit=True)
    return sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True)


def prepare_store(db: Path | str, kind: str) -> None:
    """Create the consumer's store and the commit-time side table (module docstring)."""
    if kind == "peer":
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(PEER_DDL)
    else:
        from host.services.store import Store

        Store(db).close()
        if _is_pg(db):
            import psycopg

            with psycopg.connect(str(db), autocommit=True) as pg:
                pg.execute(_SEEN_DDL_PG)
            return
        conn = sqlite3.connect(db)
    conn.executescript(_SEEN_DDL)
    conn.close()


class Poller(threading.Thread):
    """Reads ``bench_seen`` every POLL_S: (time first seen, ts_ms) per committed row."""

    def __init__(self, db: Path) -> None:
        super().__init__(name="bench-poller", daemon=True)
        self.db = db
        self.seen_ms: list[int] = []  # poll time of each row, in rowid order
        self.ts_ms: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        conn = _reader(self.db)
        pg = _is_pg(self.db)
        sql = ("SELECT id, ts_ms FROM bench_seen WHERE id > %s ORDER BY id" if pg else
               "SELECT id, ts_ms FROM bench_seen WHERE id > ? ORDER BY id")
        # SQLite commits one writer at a time, so ids appear in commit order and the
        # last id read is the mark.  PostgreSQL takes an id at insert: a transaction
        # that commits later can hold lower ids, so the mark is the end of the run
        # of contiguous ids seen (ids above it already seen are skipped); a hole
        # left 5 s (a rolled-back insert) is stepped over.
        last = 0
        seen_above: set[int] = set()
        hole_since = 0.0
        while True:
            stopping = self.stop.is_set()
            rows = conn.execute(sql, (last,)).fetchall()
            now = _now_ms()
            fresh = [r for r in rows if r[0] not in seen_above]
            if fresh:
                self.seen_ms.extend([now] * len(fresh))
                self.ts_ms.extend(r[1] for r in fresh)
            if rows and not pg:
                last = rows[-1][0]
            elif rows:
                seen_above.update(r[0] for r in fresh)
                while last + 1 in seen_above:
                    last += 1
                    seen_above.discard(last)
                if seen_above and not hole_since:
                    hole_since = time.monotonic()
                elif seen_above and time.monotonic() - hole_since > 5:
                    last = min(seen_above) - 1
                    hole_since = 0.0
                elif not seen_above:
                    hole_since = 0.0
            if stopping:
                break
            time.sleep(POLL_S)
        conn.close()


def _proc_cpu_s(pid: int | None) -> float:
    from host.bench_fleet import _proc_cpu_s as cpu_s

    return 0.0 if pid is None else cpu_s(pid)


def _percentile(sorted_values: list[int], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[i])


def _child(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, *args], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=Path(__file__).resolve().parent.parent)


def _wait_ingest_ready(db: Path, client_ids: list[str], procs: list[subprocess.Popen[bytes]],
                       timeout_s: float = 20.0) -> None:
    from host.services.ingest import stats_dir

    deadline = time.monotonic() + timeout_s
    folder = stats_dir(db)
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"ingest worker exited with {p.returncode} at start-up")
        ok = 0
        for cid in client_ids:
            try:
                ok += bool(json.loads((folder / f"{cid}.json").read_text()).get("connected"))
            except (OSError, ValueError):
                pass
        if ok == len(client_ids):
            return
        time.sleep(0.05)
    raise RuntimeError(f"ingest workers not connected after {timeout_s:.0f} s")


def _store_counters(db: Path | str, kind: str) -> dict[str, int]:
    conn = _reader(db)
    try:
        rows = conn.execute("SELECT COUNT(*) FROM vitals").fetchone()[0]
        # seqs missing between each device's first and last stored one
        gaps = conn.execute(
            "SELECT COALESCE(SUM(hi - lo + 1 - n), 0) FROM (SELECT MIN(seq) lo, MAX(seq) hi, "
            "COUNT(*) n FROM vitals GROUP BY device_id) AS per_device").fetchone()[0]
        if kind == "peer":
            return {"rows": rows, "stored": rows, "gaps": gaps}
        counters = dict(conn.execute("SELECT name, value FROM counters"))
        return {"rows": rows, "gaps": gaps, **counters}
    finally:
        conn.close()


def run_one(broker: Any, workdir: Path, scenario: str, consumer: str, rate: float,
            duration_s: float, n_devices: int, clients: int, tag: str,
            generator: str = "raw", max_backlog: int | None = None,
            db_url: str | None = None) -> dict[str, Any]:
    """One consumer against one offered load; the figures (module docstring).
    ``db_url``: a PostgreSQL database for the store (else a SQLite file)."""
    db: Path | str = db_url or workdir / f"{tag}.db"
    log = workdir / f"{tag}.log"
    kind = "peer" if consumer == "peer" else "ingest"
    prepare_store(db, kind)
    procs: list[subprocess.Popen[bytes]] = []
    if consumer == "peer":
        procs.append(_child(["-m", "host.bench_ingest", "_peer", "--db", str(db),
                             "--port", str(broker.port), "--client-id", f"peer-{tag}"], log))
        ready_file = Path(db).with_suffix(".ready")
        deadline = time.monotonic() + 20
        while not ready_file.exists():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError(f"peer consumer did not start (see {log})")
            time.sleep(0.05)
    else:
        workers = 3 if consumer == "ingest-3" else 1
        cids = [f"ingest-{tag}-{i}" for i in range(workers)]
        for cid in cids:
            # A group of its own per run: the previous run's workers keep persistent
            # sessions (24 h expiry), and mosquitto still gives offline members of a
            # shared subscription their share (queued in the session, not redelivered
            # to the live members): reusing the name would strand messages there.
            extra = ["--group", f"bench-{tag}"] if workers > 1 else []
            procs.append(_child(["-m", "host.cli", "ingest", "--host", "127.0.0.1", "--port",
                                 str(broker.port), "--db", str(db), "--client-id", cid,
                                 *extra], log))
        _wait_ingest_ready(db, cids, procs)
    poller = Poller(db)
    poller.start()
    cpu0 = {p.pid: _proc_cpu_s(p.pid) for p in procs}
    broker_cpu0 = _proc_cpu_s(broker.pid)
    wall0 = time.monotonic()
    gen = subprocess.run(
        [sys.executable, "-m", "host.bench_ingest", "_generate", "--port", str(broker.port),
         "--devices", str(n_devices), "--rate", str(rate), "--duration", str(duration_s),
         "--clients", str(clients), "--client-prefix", f"gen-{tag}", "--generator", generator,
         *(["--backlog-db", str(db), "--max-backlog", str(max_backlog)] if max_backlog else [])],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if gen.returncode != 0:
        raise RuntimeError(f"load generator failed: {gen.stderr.strip()[-500:]}")
    g = json.loads(gen.stdout.strip().splitlines()[-1])
    # wait until everything acknowledged is stored (or nothing moves for 10 s)
    expected = g["acked"]
    last_n, last_change = -1, time.monotonic()
    while True:
        n = len(poller.ts_ms)
        if n >= expected:
            break
        if n != last_n:
            last_n, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > 10:
            break
        time.sleep(0.05)
    wall = time.monotonic() - wall0
    cpu = sum(_proc_cpu_s(p.pid) - cpu0[p.pid] for p in procs)
    broker_cpu = _proc_cpu_s(broker.pid) - broker_cpu0
    poller.stop.set()
    poller.join()
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    counters = _store_counters(db, kind)
    # figures over the measured window [first publish + WARMUP_S, last publish]
    w0 = g["first_publish_ms"] + int(WARMUP_S * 1000)
    w1 = g["last_publish_ms"]
    seen, ts = poller.seen_ms, poller.ts_ms
    lat = sorted(s - t for s, t in zip(seen, ts) if w0 <= t <= w1)
    in_window = sum(1 for s in seen if w0 <= s <= w1)
    window_s = max(1e-3, (w1 - w0) / 1000)
    per_10s: list[float] = []
    if window_s >= 10:
        import bisect

        start = w0
        while start + 10_000 <= w1:
            a = bisect.bisect_left(seen, start)
            b = bisect.bisect_left(seen, start + 10_000)
            per_10s.append((b - a) / 10)
            start += 10_000
    out = {
        "scenario": scenario, "consumer": consumer + ("-pg" if db_url else ""),
        "backend": "postgresql" if db_url else "sqlite", "offered_rate": rate,
        "duration_s": duration_s, "devices": n_devices,
        "published": g["published"], "acked": g["acked"],
        "generator_rate": round(g["rate_achieved"], 1),
        "stored_rows": counters["rows"], "stored_counter": counters.get("stored"),
        "duplicates": counters.get("duplicate", 0), "conflicts": counters.get("conflict", 0),
        "rejected": sum(v for k, v in counters.items() if k.startswith("rejected.")),
        "lost": g["acked"] - counters["rows"], "seq_gaps": counters["gaps"],
        "stored_per_s": round(in_window / window_s, 1),
        "stored_per_s_min_10s": round(min(per_10s), 1) if per_10s else None,
        "latency_ms_p50": _percentile(lat, 0.50), "latency_ms_p99": _percentile(lat, 0.99),
        "latency_ms_max": float(lat[-1]) if lat else None, "latency_samples": len(lat),
        "cpu_consumer": round(cpu / wall, 2), "cpu_generator": round(g["cpu_s"] / wall, 2),
        "cpu_broker": round(broker_cpu / wall, 2), "wall_s": round(wall, 1),
    }
    return out


def _fresh_pg_database(server_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + "/" + name


def bench(scenarios: list[str], consumers: list[str], duration_s: float, rate: float,
          n_devices: int = 1000, clients: int = 4, repeat: int = 1,
          progress: Any = None, generator: str = "raw",
          max_backlog: int | None = MAX_BACKLOG,
          backends: tuple[str, ...] = ("sqlite",)) -> dict[str, Any]:
    """Every (scenario, consumer, backend); the plain consumer (``peer``) runs on
    SQLite only.  PostgreSQL: a throw-away server started here with PostgreSQL's
    durable defaults (fsync, synchronous commit), a fresh database per run."""
    from host.broker.launch import Broker, find_mosquitto

    if find_mosquitto() is None:
        raise RuntimeError("mosquitto is not installed (apt install mosquitto): the ingest "
                           "benchmark needs it")
    runs: list[dict[str, Any]] = []
    pg = None
    with tempfile.TemporaryDirectory(prefix="medge-bench-ingest-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o711)  # mosquitto drops root: it must reach its data dir
        broker = Broker("mosquitto", data_dir=workdir / "broker", persistence=False)
        broker.start()
        # ingest's health files of a PostgreSQL store go to $MEDGE_STATE_DIR (children
        # inherit it): here, not in the checkout's var/
        state_before = os.environ.get("MEDGE_STATE_DIR")
        os.environ["MEDGE_STATE_DIR"] = str(workdir / "state")
        try:
            if "postgresql" in backends:
                from host.services.storage.pgserver import PgServer

                pg = PgServer(durable=True).start()
            for rep in range(repeat):
                for scenario in scenarios:
                    offered = rate if scenario == "throughput" else n_devices * 1.0
                    for backend in backends:
                        for consumer in consumers:
                            if consumer == "peer" and backend != "sqlite":
                                continue
                            tag = f"{scenario}-{consumer}-{backend}-{rep}"
                            url = (_fresh_pg_database(pg.url, tag.replace("-", "_"))
                                   if pg is not None and backend == "postgresql" else None)
                            r = run_one(broker, workdir, scenario, consumer, offered,
                                        duration_s, n_devices, clients, tag, generator,
                                        max_backlog if scenario == "throughput" else None,
                                        db_url=url)
                            r["repeat"] = rep
                            runs.append(r)
                            if progress:
                                progress(r)
        finally:
            broker.stop()
            if pg is not None:
                pg.stop()
            if state_before is None:
                os.environ.pop("MEDGE_STATE_DIR", None)
            else:
                os.environ["MEDGE_STATE_DIR"] = state_before
    return {"runs": runs, "summary": summarize(runs), "cores": os.cpu_count(),
            "generator": generator,
            "poll_s": POLL_S, "warmup_s": WARMUP_S}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (scenario, consumer): the median and spread of the repeats, and the ratio
    of each ingest figure to the peer's."""
    out: dict[str, Any] = {}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["scenario"], r["consumer"]), []).append(r)
    for (scenario, consumer), rs in groups.items():
        def med(key: str, rs: list[dict[str, Any]] = rs) -> float | None:
            vals = sorted(r[key] for r in rs if r.get(key) is not None)
            return vals[len(vals) // 2] if vals else None

        out[f"{scenario}/{consumer}"] = {
            "stored_per_s": med("stored_per_s"),
            "stored_per_s_range": [min(r["stored_per_s"] for r in rs),
                                   max(r["stored_per_s"] for r in rs)],
            "stored_per_s_min_10s": med("stored_per_s_min_10s"),
            "latency_ms_p50": med("latency_ms_p50"), "latency_ms_p99": med("latency_ms_p99"),
            "cpu_consumer": med("cpu_consumer"), "lost": max(r["lost"] for r in rs),
        }
    for scenario in {r["scenario"] for r in runs}:
        base = out.get(f"{scenario}/peer")
        if not base:
            continue
        for key, fig in out.items():
            if key.startswith(scenario + "/") and key != f"{scenario}/peer":
                if base["stored_per_s"]:
                    fig["ratio_to_peer"] = round(fig["stored_per_s"] / base["stored_per_s"], 2)
                if base.get("cpu_consumer") and fig.get("cpu_consumer"):
                    per_msg = fig["cpu_consumer"] / max(fig["stored_per_s"], 1e-9)
                    base_per_msg = base["cpu_consumer"] / max(base["stored_per_s"], 1e-9)
                    fig["cpu_per_msg_ratio_to_peer"] = round(per_msg / base_per_msg, 2)
    return out


def _line(r: dict[str, Any]) -> str:
    lat = (f"p50 {r['latency_ms_p50']:.0f} ms, p99 {r['latency_ms_p99']:.0f} ms"
           if r["latency_ms_p50"] is not None else "no latency samples")
    sustained = (f", slowest 10 s {r['stored_per_s_min_10s']:.0f}/s"
                 if r["stored_per_s_min_10s"] is not None else "")
    return (f"ingest bench: {r['scenario']:10s} {r['consumer']:11s} offered "
            f"{r['offered_rate']:.0f}/s (sent {r['generator_rate']:.0f}/s) "
            f"x {r['duration_s']:g} s: stored {r['stored_per_s']:.0f}/s{sustained}; {lat}; "
            f"lost {r['lost']}, duplicates {r['duplicates']}; CPU consumer "
            f"{r['cpu_consumer']:.2f}, generator {r['cpu_generator']:.2f}, broker "
            f"{r['cpu_broker']:.2f} cores")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m host.bench_ingest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    g = sub.add_parser("_generate")  # internal: the load generator child
    g.add_argument("--host", default="127.0.0.1")
    g.add_argument("--port", type=int, required=True)
    g.add_argument("--devices", type=int, default=1000)
    g.add_argument("--rate", type=float, required=True)
    g.add_argument("--duration", type=float, required=True)
    g.add_argument("--clients", type=int, default=4)
    g.add_argument("--client-prefix", default="medge-bench-gen")
    g.add_argument("--generator", choices=("raw", "paho"), default="raw")
    g.add_argument("--backlog-db")
    g.add_argument("--max-backlog", type=int)
    p = sub.add_parser("_peer")  # internal: the plain consumer child
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--client-id", default="medge-bench-peer")
    ap.add_argument("--duration", type=float, default=20.0,
                    help="seconds of load per run (20; make bench: 60)")
    ap.add_argument("--rate", type=float, default=12000.0,
                    help="offered messages/s in the throughput scenario (12000)")
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=4, help="publishing connections (4)")
    ap.add_argument("--generator", choices=("raw", "paho"), default="raw",
                    help="raw: pre-encoded MQTT 3.1.1 PUBLISH packets on plain sockets (~20 "
                    "us a message); paho: paho-mqtt clients, v5 (~80 us a message, taken "
                    "from the 2 cores the consumers need)")
    ap.add_argument("--scenarios", default="throughput,latency")
    ap.add_argument("--consumers", default="ingest-1,ingest-3,peer")
    ap.add_argument("--backends", default="sqlite,postgresql",
                    help="stores to run ingest on (sqlite,postgresql; the peer: SQLite only)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--max-backlog", type=int, default=MAX_BACKLOG,
                    help="throughput scenario: the generator holds back when this many "
                    f"messages are published and not committed ({MAX_BACKLOG}; 0: no bound)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "_generate":
        gen = generate_raw if args.generator == "raw" else generate
        allowed = (Backlog(args.backlog_db, args.max_backlog).allowed
                   if args.max_backlog else None)
        r = gen(args.host, args.port, args.devices, args.rate, args.duration, args.clients,
                client_prefix=args.client_prefix, allowed=allowed)
        print(json.dumps(r))
        return 0
    if args.cmd == "_peer":
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        ready = threading.Event()
        ready_file = Path(args.db).with_suffix(".ready")
        threading.Thread(target=lambda: (ready.wait(), ready_file.touch()), daemon=True).start()
        peer(args.db, args.host, args.port, stop, ready, args.client_id)
        return 0
    scenarios = [s for s in args.scenarios.split(",") if s]
    consumers = [c for c in args.consumers.split(",") if c]
    for s in scenarios:
        if s not in ("throughput", "latency"):
            ap.error(f"unknown scenario {s!r}")
    for c in consumers:
        if c not in ("ingest-1", "ingest-3", "peer"):
            ap.error(f"unknown consumer {c!r}")
    backends = tuple(b for b in args.backends.split(",") if b)
    for b in backends:
        if b not in ("sqlite", "postgresql"):
            ap.error(f"unknown backend {b!r}")
    result = bench(scenarios, consumers, args.duration, args.rate, args.devices, args.clients,
                   args.repeat, progress=None if args.json else lambda r: print(_line(r),
                                                                                flush=True),
                   generator=args.generator, max_backlog=args.max_backlog or None,
                   backends=backends)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        for key, fig in sorted(result["summary"].items()):
            if "ratio_to_peer" in fig:
                print(f"ingest bench: {key}: {fig['ratio_to_peer']:.2f} x the plain consumer's "
                      f"messages/s, {fig.get('cpu_per_msg_ratio_to_peer', float('nan')):.2f} x "
                      "its CPU per message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
