"""Embedded pure-Python MQTT broker (amqtt 0.11/0.12) for medge.

Run by :class:`host.broker.Broker` as a child process when mosquitto is not installed::

    python -m host.embedded_broker --host 127.0.0.1 --port 1883

It listens on ``host:port`` only (TCP, no websocket listener), publishes no ``$SYS``
topics, lets every client in (development default, like mosquitto's
``allow_anonymous true``) and shuts down cleanly on SIGTERM/SIGINT, or when the
parent process given by ``--parent-pid`` goes away.

Persistent sessions (checked against amqtt 0.12.1, see tests/test_broker.py):

* amqtt keeps a ``clean_session=False`` session, its subscriptions and the QoS 1/2
  messages published while the client is offline, and delivers them in order when
  the client reconnects with the same client id -- **but only if the session is not
  flagged anonymous**. amqtt's own ``AnonymousAuthPlugin`` (allow_anonymous) flags
  *every* session anonymous, after which the broker neither queues messages for it
  nor keeps it once disconnected (its session monitor drops it within ~1 s; the
  client reconnects with session_present=0 and receives nothing). We therefore use
  :class:`OpenAuthPlugin`, which accepts everyone without that flag.
* Everything is in memory: sessions, queued and retained messages are lost when
  this broker process stops. Use mosquitto for persistence across broker restarts.
* Messages queued for an offline session are re-delivered with the RETAIN flag set
  (an amqtt quirk); subscribers must not rely on ``retain`` to tell a retained
  "last value" from a queued message.
* Messages are delivered at the *subscription's* QoS, not min(publish, subscription)
  as MQTT 3.1.1 requires (a QoS 0 publish reaches a QoS 1 subscriber as QoS 1).
* The per-session offline queue is unbounded and sessions never expire.
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

from amqtt.broker import Broker
from amqtt.errors import AMQTTError, BrokerError, PluginError
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

logger = logging.getLogger("host.embedded_broker")

SHUTDOWN_TIMEOUT_S = 2.0
PARENT_POLL_S = 1.0


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
    """amqtt 0.12 broker config (``amqtt.contexts.BrokerConfig`` as a dict)."""
    plugin = f"{OpenAuthPlugin.__module__}.{OpenAuthPlugin.__qualname__}"
    return {
        # Only the "default" listener: TCP on host:port. ("::1:1883" works for IPv6
        # too: amqtt splits the bind string at the last colon.)
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        # Giving "plugins" explicitly replaces amqtt's defaults: no BrokerSysPlugin
        # ($SYS topics every 20 s, psutil deprecation warning), no Event/Packet
        # logger plugins.
        "plugins": {plugin: {}},
    }


def _close_client_connections(broker: Broker) -> None:
    """Close every client socket before ``Broker.shutdown()`` (best effort).

    Each connection's reader task then ends on EOF by itself instead of having to be
    cancelled by shutdown(), which avoids the hang described in :func:`serve`. Uses
    amqtt internals (``StreamWriterAdapter._writer``); does nothing if they change.
    """
    for _session, handler in list(broker.sessions.values()):
        writer = getattr(getattr(handler, "writer", None), "_writer", None)
        transport = getattr(writer, "transport", None)
        if transport is not None:
            transport.close()


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
        "embedded MQTT broker (amqtt, pid %d) listening on mqtt://%s:%d; anonymous clients "
        "allowed (development default); in-memory only",
        os.getpid(), host, port,
    )
    await stop.wait()
    watchdog.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watchdog
    # amqtt 0.12.1 (seen on CPython 3.11): if shutdown() cancels a connection's reader
    # task while PUBACKs are still arriving (e.g. right after a resumed persistent
    # session was sent its queued messages), the cancellation can be swallowed inside
    # asyncio.wait_for and shutdown() then waits for that task until the client's
    # keep-alive expires. Closing the client sockets first lets every reader end on
    # EOF instead (clients see the connection drop, as with any broker shutdown, so
    # their wills are published). The timeout below is the backstop.
    _close_client_connections(broker)
    try:
        await asyncio.wait_for(broker.shutdown(), SHUTDOWN_TIMEOUT_S)
    except asyncio.TimeoutError:
        # Everything is in memory, so nothing is lost by leaving now; exit hard so
        # that asyncio.run() does not wait for the stuck task again.
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
    amqtt_level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(amqtt_level if name == "amqtt" else logging.WARNING)
    try:
        return asyncio.run(serve(args.host, args.port, args.parent_pid))
    except KeyboardInterrupt:  # SIGINT before the handler was installed
        return 130


if __name__ == "__main__":
    sys.exit(main())
