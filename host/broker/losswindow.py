"""Measure what a SIGKILL of mosquitto loses of the messages it acknowledged.

The scenario is the one the no-loss promise has to survive: ingest (a persistent
QoS 1 session, ``clean_session=False``) is offline, devices keep publishing QoS 1
and the broker acknowledges each message (PUBACK: the device drops it from its
outbox), then mosquitto is killed (SIGKILL: no shutdown save), restarted on the
same data dir, and ingest reconnects. Every message acknowledged to the publisher
but not delivered to the reconnected session is lost for good.

Run it::

    python -m host.broker.losswindow                       # medge's settings
    python -m host.broker.losswindow --autosave-interval 5 --no-autosave-on-changes
    python -m host.broker.losswindow --online              # throughput, ingest up

``--online`` keeps the subscriber connected and acknowledging instead (ingest is
up): the figure is then the throughput cost of the save-after-every-change
setting, and the loss is what was in flight to it.

Bounded: the publisher runs ``--seconds`` (3 s by default), the drain at most
10 s. One publisher with a window of 100 QoS 1 messages in flight, loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Optional, Union

import paho.mqtt.client as mqtt

from host.broker.launch import Broker, BrokerKind

TOPIC = "medge/v1/loss/{}/vitals"
WINDOW = 100  # QoS 1 messages in flight from the publisher
PAYLOAD_PAD = 300  # bytes of padding: about the size of a vitals message


@dataclass
class LossWindow:
    """The outcome of one run of :func:`measure`."""

    options: dict
    online: bool
    seconds: float
    acknowledged: int  # PUBACKs the publisher received
    delivered: int  # distinct acknowledged messages the subscriber got, before or after
    lost: int  # acknowledged, never delivered
    lost_seconds: float  # span of publishing the lost messages covered
    rate_per_s: float  # acknowledged messages per second before the kill

    def line(self) -> str:
        opts = " ".join(f"{k}={v}" for k, v in self.options.items()) or "medge defaults"
        mode = "ingest online" if self.online else "ingest offline"
        return (f"{opts} ({mode}): {self.acknowledged} acknowledged in {self.seconds:.1f} s "
                f"({self.rate_per_s:.0f}/s), {self.lost} lost after SIGKILL "
                f"({self.lost_seconds:.2f} s of publishing)")


class _Subscriber:
    def __init__(self, broker: Broker, client_id: str) -> None:
        self.got: set[int] = set()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.last_rx = time.monotonic()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                        clean_session=False, protocol=mqtt.MQTTv311)
        c.on_connect = lambda *_a: self._ready.set()
        c.on_message = self._on_message
        c.connect(broker.host, broker.port, keepalive=30)
        c.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError("subscriber: no CONNACK")
        self.client = c

    def _on_message(self, _c, _u, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.got.add(int(msg.payload.split(b" ", 1)[0]))
            self.last_rx = time.monotonic()

    def subscribe(self) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.subscribe(TOPIC.format("+"), qos=1)
        if not done.wait(10):
            raise RuntimeError("subscriber: no SUBACK")

    def drain(self, quiet_s: float = 1.0, limit_s: float = 10.0) -> set[int]:
        end = time.monotonic() + limit_s
        while time.monotonic() < end and time.monotonic() - self.last_rx < quiet_s:
            time.sleep(0.05)
        with self._lock:
            return set(self.got)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _publish_until_killed(broker: Broker, seconds: float) -> tuple[list[float], float]:
    """Publish QoS 1 for ``seconds``, SIGKILL the broker; return the ack time of each seq."""
    acked: dict[int, float] = {}
    mid_seq: dict[int, int] = {}
    early: dict[int, float] = {}  # PUBACKs that beat the bookkeeping after publish()
    window = threading.Semaphore(WINDOW)
    lock = threading.Lock()
    pad = b"x" * PAYLOAD_PAD

    def on_publish(_c, _u, mid, _rc, _p) -> None:
        with lock:  # never held across paho calls: paho calls us under its own lock
            seq = mid_seq.pop(mid, None)
            if seq is None:
                early[mid] = time.monotonic()
            else:
                acked[seq] = time.monotonic()
        window.release()

    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                      client_id=f"loss-pub-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv311)
    pub.max_inflight_messages_set(WINDOW)
    pub.max_queued_messages_set(WINDOW)
    pub.on_publish = on_publish
    pub.connect(broker.host, broker.port, keepalive=30)
    pub.loop_start()
    t0 = time.monotonic()
    seq = 0
    try:
        while time.monotonic() - t0 < seconds:
            if not window.acquire(timeout=1.0):
                continue
            info = pub.publish(TOPIC.format(seq % 50), b"%d " % seq + pad, qos=1)
            with lock:
                if info.mid in early:
                    acked[seq] = early.pop(info.mid)
                else:
                    mid_seq[info.mid] = seq
            seq += 1
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGKILL)  # mid-stream: no shutdown save
        killed = time.monotonic()
    finally:
        pub.loop_stop()
        pub.disconnect()
    with lock:
        times = [acked.get(i, -1.0) for i in range(seq)]
    return [t - t0 if t >= 0 else -1.0 for t in times], killed - t0


def measure(
    seconds: float = 3.0,
    options: Optional[Mapping[str, Union[int, bool]]] = None,
    online: bool = False,
    data_dir: Union[str, Path, None] = None,
) -> LossWindow:
    """Run the scenario of the module docstring once on a fresh mosquitto."""
    with tempfile.TemporaryDirectory(prefix="medge-losswindow-") as tmp:
        os.chmod(tmp, 0o711)  # as root, mosquitto's own account must reach broker/
        broker = Broker(BrokerKind.MOSQUITTO, data_dir=data_dir or Path(tmp) / "broker",
                        options=options)
        broker.start()
        try:
            sub_id = f"ingest-loss-{uuid.uuid4().hex[:6]}"
            sub = _Subscriber(broker, sub_id)
            sub.subscribe()
            if not online:
                sub.close()
                time.sleep(0.2)
            ack_times, killed_at = _publish_until_killed(broker, seconds)
            before = sub.drain(quiet_s=0.0, limit_s=0.0) if online else set()
            if online:
                sub.close()
            broker.stop(timeout_s=1.0)  # reap the killed process
            broker.start()
            again = _Subscriber(broker, sub_id)  # no SUBSCRIBE: the session must hold it
            after = again.drain()
            again.close()
        finally:
            broker.stop()
    acknowledged = [i for i, t in enumerate(ack_times) if t >= 0]
    delivered = before | after
    lost = [i for i in acknowledged if i not in delivered]
    lost_times = [ack_times[i] for i in lost]
    return LossWindow(
        options=dict(options or {}),
        online=online,
        seconds=round(killed_at, 3),
        acknowledged=len(acknowledged),
        delivered=len(set(acknowledged) & delivered),
        lost=len(lost),
        lost_seconds=round(max(lost_times) - min(lost_times), 3) if lost_times else 0.0,
        rate_per_s=round(len(acknowledged) / max(killed_at, 1e-9), 1),
    )


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--autosave-interval", type=int)
    p.add_argument("--autosave-on-changes", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--online", action="store_true", help="subscriber stays connected")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    options: dict[str, Union[int, bool]] = {}
    if args.autosave_interval is not None:
        options["autosave_interval"] = args.autosave_interval
    if args.autosave_on_changes is not None:
        options["autosave_on_changes"] = args.autosave_on_changes
    result = measure(args.seconds, options, online=args.online)
    print(json.dumps(asdict(result)) if args.json else result.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
