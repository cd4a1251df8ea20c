"""Embedded pure-Python MQTT broker (amqtt 0.11/0.12) for medge: in memory only.

Run by :class:`host.broker.launch.Broker` as a child process when mosquitto is not
installed::

    python -m host.broker.embedded --host 127.0.0.1 --port 1883 [--parent-pid PID]

It is for zero-install demos on a trusted loopback; mosquitto is the broker that
keeps everything (``host/broker/launch.py``). It listens on ``host:port`` only (TCP,
no websocket listener), publishes no ``$SYS`` topics, lets every client in
(development default, like mosquitto's ``allow_anonymous true``) and shuts down
cleanly on SIGTERM/SIGINT, or when the parent process given by ``--parent-pid``
goes away. It uses only amqtt's documented configuration and plugin API (a
``plugins`` mapping, one ``BaseAuthPlugin``).

What it keeps, and for how long:

* Within one run, a persistent (``clean_session=False``) session keeps its
  subscriptions and the QoS 1/2 messages published while its client is offline, and
  the client gets them, in order, with session_present=1 when it reconnects with the
  same client id. Retained messages reach later subscribers.
* Nothing survives a broker restart: sessions, subscriptions, queued and retained
  messages live in memory only (the start-up line says so: :data:`KEEPS`). A
  persistent subscriber that reconnects after a restart gets session_present=0 and
  must subscribe again; what was published while it was away, and not yet delivered
  to it, is gone. amqtt's documented plugin API cannot restore an offline session's
  queue (there is no public call to queue a message for one session, and no event
  when a queued message has been delivered), and its contrib ``SessionDBPlugin`` is
  crash recovery only (it clears its database on a graceful shutdown by default and
  needs SQLAlchemy), so medge does not persist the embedded broker's state.

Known amqtt limits (checked against amqtt 0.12.1, see tests/test_broker.py):

* Persistent sessions are kept only if the session is not flagged anonymous.
  amqtt's own ``AnonymousAuthPlugin`` (allow_anonymous) flags *every* session
  anonymous, after which the broker neither queues messages for it nor keeps it
  once disconnected. We therefore use :class:`OpenAuthPlugin` (a documented
  ``BaseAuthPlugin``), which accepts everyone without that flag.
* Messages queued for an offline session are delivered with the RETAIN flag set;
  subscribers must not rely on ``retain`` to tell a retained "last value" from a
  queued message.
* Messages are delivered at the *subscription's* QoS, not min(publish,
  subscription) as MQTT 3.1.1 requires (a QoS 0 publish reaches a QoS 1 subscriber
  as QoS 1).
* The per-session offline queue is unbounded and sessions never expire.
* ``Broker.shutdown()`` can wait for a connection's reader task until the client's
  keep-alive expires (seen right after a resumed session was sent its queued
  messages); after :data:`SHUTDOWN_TIMEOUT_S` the process exits anyway (there is
  nothing to save).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any, Optional

import amqtt
from amqtt.broker import Broker
from amqtt.errors import AMQTTError, BrokerError, PluginError
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

logger = logging.getLogger("host.broker.embedded")

SHUTDOWN_TIMEOUT_S = 2.0
PARENT_POLL_S = 1.0

#: What the embedded broker keeps; part of its start-up line.
KEEPS = ("in-memory only; sessions, queued and retained messages are lost on restart; "
         "for a trusted loopback")


class OpenAuthPlugin(BaseAuthPlugin):
    """Accept every client (development default) without flagging the session anonymous.

    amqtt's ``AnonymousAuthPlugin`` sets ``session.is_anonymous``, which makes the
    broker drop persistent (clean_session=False) sessions and their queued QoS>=1
    messages as soon as the client disconnects; this plugin does not.
    """

    @dataclass
    class Config:
        """No options."""

    async def authenticate(self, *, session: Session) -> bool:
        return True


def broker_config(host: str, port: int) -> dict[str, Any]:
    """amqtt broker config (``amqtt.contexts.BrokerConfig`` as a dict)."""
    return {
        # Only the "default" listener: TCP on host:port. ("::1:1883" works for IPv6
        # too: amqtt splits the bind string at the last colon.)
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        # Giving "plugins" explicitly replaces amqtt's defaults: no BrokerSysPlugin
        # ($SYS topics every 20 s, psutil deprecation warning), no Event/Packet
        # logger plugins, no AnonymousAuthPlugin.
        "plugins": {f"{OpenAuthPlugin.__module__}.{OpenAuthPlugin.__qualname__}": {}},
    }


async def serve(host: str, port: int, parent_pid: Optional[int] = None) -> int:
    """Run the broker until SIGTERM/SIGINT (or the parent exits); return an exit code."""
    try:
        broker = Broker(broker_config(host, port))
        await broker.start()
    except (BrokerError, PluginError, AMQTTError, OSError) as exc:
        logger.error("embedded MQTT broker failed to start on %s:%s: %s", host, port, exc)
        return 1

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def request_stop(reason: str) -> None:
        if not stop.is_set():
            logger.info("%s: shutting down", reason)
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, request_stop, signal.Signals(sig).name)
        except (NotImplementedError, RuntimeError):  # Windows
            signal.signal(
                sig,
                lambda s, _f: loop.call_soon_threadsafe(request_stop, signal.Signals(s).name),
            )

    async def watch_parent() -> None:
        while parent_pid is not None:
            await asyncio.sleep(PARENT_POLL_S)
            if os.getppid() != parent_pid:
                request_stop(f"parent process {parent_pid} exited")
                return

    watchdog = asyncio.create_task(watch_parent())
    logger.info(
        "embedded broker (amqtt %s, pid %d) listening on mqtt://%s:%d: %s; anonymous "
        "clients allowed (development default)",
        getattr(amqtt, "__version__", "?"), os.getpid(), host, port, KEEPS,
    )
    await stop.wait()
    watchdog.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watchdog

    try:
        await asyncio.wait_for(broker.shutdown(), SHUTDOWN_TIMEOUT_S)
    except asyncio.TimeoutError:
        # Nothing is kept across a restart, so nothing is lost by leaving now; exit hard
        # so that asyncio.run() does not wait for the stuck task.
        logger.warning(
            "amqtt shutdown did not finish within %.0f s; exiting without waiting for it",
            SHUTDOWN_TIMEOUT_S,
        )
        logging.shutdown()
        os._exit(0)
    logger.info("embedded MQTT broker stopped")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="exit when this process is no longer our parent")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: amqtt INFO (every connection), -vv: DEBUG")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.verbose >= 2:
        logger.setLevel(logging.DEBUG)
    logging.getLogger("amqtt").setLevel(
        {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG))
    logging.getLogger("transitions").setLevel(logging.WARNING)
    try:
        return asyncio.run(serve(args.host, args.port, args.parent_pid))
    except KeyboardInterrupt:  # SIGINT before the handler was installed
        return 130


if __name__ == "__main__":
    sys.exit(main())
