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
``plugins`` mapping, ``BaseAuthPlugin`` and ``BaseTopicPlugin``).

With ``--password-file`` and ``--acl-file`` (the files :mod:`host.broker.auth`
generates from the registry; ``Broker(accounts=...)`` passes them) it enforces the
accounts: :class:`RegistryAuthPlugin` lets in only a known username with its password
and its username as client id, :class:`RegistryTopicPlugin` applies the ACL grants
to every publish, subscription and delivery; both re-read their file when it changes
(a removed account is refused from its next message on).  What it cannot do: keep a
refused client away from a session (amqtt wipes or takes over the session of the
presented client id before the auth plugins run; ``host/broker/launch.py``), so it
is still for a trusted loopback only.

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
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, BrokerError, PluginError
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
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


class _Watched:
    """A file re-read whenever its size or modification time changes (the launcher
    rewrites it on every registry change: the broker's "reload")."""

    def __init__(self, path: str, parse: Any) -> None:
        self.path = path
        self._parse = parse
        self._stamp: Optional[tuple[int, int]] = None
        self.value: Any = parse("")

    def get(self) -> Any:
        try:
            st = os.stat(self.path)
        except OSError:
            stamp = None
        else:
            stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                with open(self.path, encoding="utf-8") as fh:
                    self.value = self._parse(fh.read())
            except OSError as exc:  # unreadable: nobody gets in until it is fixed
                logger.error("cannot read %s: %s", self.path, exc)
                self.value = self._parse("")
            self._stamp = stamp
        return self.value


def _passwords(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        user, sep, stored = line.partition(":")
        if sep and user:
            out[user] = stored.strip()
    return out


class RegistryAuthPlugin(BaseAuthPlugin):
    """Accounts from the registry: the password file :mod:`host.broker.auth` writes
    (mosquitto's ``$7$`` hashes), re-read when it changes.  A client is let in only
    with a known username, its password, and its username as client id (the rule
    mosquitto's dynamic-security plugin enforces).  Like :class:`OpenAuthPlugin` it
    never flags a session anonymous, so persistent sessions keep their queues."""

    @dataclass
    class Config:
        """``password_file``: the generated password file."""

        password_file: str = ""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._file = _Watched(self.context.config.password_file, _passwords)

    async def authenticate(self, *, session: Session) -> bool:
        from host.services.accounts import check_password

        user, password = session.username, session.password
        stored = self._file.get().get(user) if user else None
        ok = (stored is not None and isinstance(password, str)
              and session.client_id == user and check_password(password, stored))
        if not ok:
            logger.info("refused a connection (client id %r, username %r)",
                        str(session.client_id)[:64], str(user)[:64])
        return ok


class RegistryTopicPlugin(BaseTopicPlugin):
    """Per-account grants from the ACL file :mod:`host.broker.auth` writes, re-read
    when it changes: publish needs ``write``, subscribe and every delivery ``read``
    (so a removed or narrowed account loses its access at once)."""

    @dataclass
    class Config:
        """``acl_file``: the generated ACL file."""

        acl_file: str = ""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        from host.broker.auth import parse_acl

        self._file = _Watched(self.context.config.acl_file, parse_acl)

    async def topic_filtering(self, *, session: Optional[Session] = None,
                              topic: Optional[str] = None,
                              action: Optional[Action] = None) -> bool:
        from host.broker.auth import allowed

        if session is None or topic is None or not session.username:
            return False
        grants = self._file.get().get(session.username, [])
        return allowed(grants, "write" if action == Action.PUBLISH else "read", topic)


def _plugin(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def broker_config(host: str, port: int, password_file: Optional[str] = None,
                  acl_file: Optional[str] = None) -> dict[str, Any]:
    """amqtt broker config (``amqtt.contexts.BrokerConfig`` as a dict).  With
    ``password_file`` and ``acl_file`` (both or neither) it enforces the registry's
    accounts; without, it lets everyone in (development default)."""
    if (password_file is None) != (acl_file is None):
        raise ValueError("password_file and acl_file go together")
    # Giving "plugins" explicitly replaces amqtt's defaults: no BrokerSysPlugin
    # ($SYS topics every 20 s, psutil deprecation warning), no Event/Packet
    # logger plugins, no AnonymousAuthPlugin.
    plugins: dict[str, Any] = {_plugin(OpenAuthPlugin): {}}
    if password_file is not None:
        plugins = {_plugin(RegistryAuthPlugin): {"password_file": password_file},
                   _plugin(RegistryTopicPlugin): {"acl_file": acl_file}}
    return {
        # Only the "default" listener: TCP on host:port. ("::1:1883" works for IPv6
        # too: amqtt splits the bind string at the last colon.)
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": plugins,
    }


async def serve(host: str, port: int, parent_pid: Optional[int] = None,
                password_file: Optional[str] = None, acl_file: Optional[str] = None) -> int:
    """Run the broker until SIGTERM/SIGINT (or the parent exits); return an exit code."""
    try:
        broker = Broker(broker_config(host, port, password_file, acl_file))
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
        "embedded broker (amqtt %s, pid %d) listening on mqtt://%s:%d: %s; %s",
        getattr(amqtt, "__version__", "?"), os.getpid(), host, port, KEEPS,
        "anonymous clients allowed (development default)" if password_file is None else
        f"accounts from {password_file} and {acl_file} (anonymous clients refused)",
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
    parser.add_argument("--password-file", help="enforce accounts: the generated password "
                        "file (host/broker/auth.py); needs --acl-file")
    parser.add_argument("--acl-file", help="the generated ACL file; needs --password-file")
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
        return asyncio.run(serve(args.host, args.port, args.parent_pid,
                                 args.password_file, args.acl_file))
    except KeyboardInterrupt:  # SIGINT before the handler was installed
        return 130


if __name__ == "__main__":
    sys.exit(main())
