"""Start an MQTT broker for medge.

Two kinds of broker are supported, both run as a *child process* so that a test
can stop, kill and restart the broker mid-run, and a broker crash cannot take the
host tool down with it:

``mosquitto``
    The production-grade broker, used when the ``mosquitto`` binary is installed.
    A config file is generated into ``data_dir``. With ``persistence=True`` the
    broker keeps its in-memory database (sessions, subscriptions, queued QoS >= 1
    messages, retained messages) in ``<data_dir>/mosquitto.db``; it is written on
    a graceful shutdown and after every 100 changes, so QoS 1 messages queued for
    an offline persistent subscriber (``clean_session=False``) survive a restart,
    and a SIGKILL of the broker loses at most about 100 acknowledged ones
    (``host/broker/losswindow.py`` measures it). The config
    sets message-size, in-flight and queue limits (:data:`MOSQUITTO_DEFAULTS`) and,
    when started as root, makes mosquitto drop to the ``mosquitto`` account
    (:func:`mosquitto_user`).

``embedded``
    The pure-Python broker from amqtt, run as ``python -m host.broker.embedded``
    (see that module), for zero-install demos on a trusted loopback. It keeps
    everything in memory: within one run a persistent session keeps its
    subscriptions and queued QoS >= 1 messages while its client is away, but
    nothing (sessions, queued or retained messages) survives a *broker* restart,
    whatever ``persistence`` says. Its start-up line says so.

Authentication.  ``Broker(accounts=F)``: ``F()`` returns the account registry
(:mod:`host.services.accounts`); the broker refuses anonymous clients, checks
passwords and per-account ACLs from files generated from it (:mod:`host.broker.auth`),
and on mosquitto binds client ids to accounts (its dynamic-security plugin);
:meth:`Broker.reload` regenerates the files and sends SIGHUP (``medge broker --db``
polls the registry and reloads on every change).  ``tls=TlsListener(...)``
(mosquitto) adds a TLS listener that requires a client certificate from the local CA
(:mod:`host.services.tlsca`), with the same accounts.  Without ``accounts`` both
kinds allow anonymous clients: the development mode (``medge broker --insecure``),
for a broker that listens on loopback only, and what the tests that are not about
security use.  The embedded broker checks the same password and ACL files (its
plugins re-read them when they change: nobody anonymous reads or forges anything),
but cannot protect a session: amqtt (0.12.1, ``Broker._initialize_client_session``
and ``_handle_client_session``) looks up, wipes (clean session) or adopts
(persistent) the session of the presented client id, and takes over a connected
one, *before* its auth plugins run, so a refused client can still destroy ingest's
queue or kick a device off.  It stays for a trusted loopback only, and its start-up
line says so.
:class:`Broker` binds ``127.0.0.1`` unless the caller asks otherwise.

Typical use::

    with Broker() as broker:          # "auto": mosquitto if installed, else embedded
        client.connect(broker.host, broker.port)
        ...
        broker.restart()              # same port, same data_dir

``run_broker_forever`` is the body of ``medge broker``.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

logger = logging.getLogger(__name__)

__all__ = [
    "MOSQUITTO_DEFAULTS",
    "Broker",
    "BrokerKind",
    "TlsListener",
    "find_mosquitto",
    "free_port",
    "mosquitto_config",
    "mosquitto_user",
    "run_broker_forever",
]

#: Debian/Ubuntu install mosquitto in /usr/sbin, which is often not on a normal
#: user's PATH; Homebrew uses <prefix>/sbin.
_MOSQUITTO_FALLBACKS = (
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/opt/homebrew/sbin/mosquitto",
)

#: Repository root (the directory holding the ``host`` package); put on the embedded
#: broker's PYTHONPATH so ``-m host.broker.embedded`` works from any working directory.
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]

_LOG_TAIL_LINES = 40
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_PROBE_INTERVAL_S = 0.05


class BrokerKind(str, Enum):
    """Which broker implementation to run."""

    MOSQUITTO = "mosquitto"
    EMBEDDED = "embedded"


def find_mosquitto() -> Optional[str]:
    """Return the path of an executable ``mosquitto`` binary, or None if not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in _MOSQUITTO_FALLBACKS:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a host name such as "localhost"
        return socket.AF_INET


def _ephemeral_low() -> int:
    """The lowest port the OS gives outgoing connections (Linux: 32768)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free right now.

    There is an unavoidable window between this call and the server binding the
    port.  A port the OS picks (bind to 0) comes from the ephemeral range, which
    outgoing connections draw from too: with many clients connecting (a parallel
    test run), one of them could take it in that window and the server would fail
    to bind (seen once: a ``medge broker`` child's port).  So the port is drawn at
    random below that range (where no outgoing connection lands) and checked;
    bind-to-0 is the fallback.
    """
    import random

    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(64):
        port = rng.randrange(max(1024, low - 12000), low) if low > 2048 else 0
        with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: The tunable settings of the generated mosquitto config, and why each number.
#: :class:`Broker` and :func:`mosquitto_config` take overrides (``options=``); the
#: measurements behind them are in docs/scaling.md ("The broker's own limits").
MOSQUITTO_DEFAULTS: dict[str, Union[int, bool]] = {
    # Device messages are < 4 KB and ingest refuses more than 16 KiB
    # (host/services/messages.py); 256 KiB leaves room for an ECG strip or a
    # base64 model (beatnet.tflite is 14 KB) in one message, and refuses the
    # multi-megabyte payloads an anonymous client could queue. Larger payloads
    # are discarded by the broker (MQTT 5 publishers get PUBACK reason 0x83).
    "message_size_limit": 256 * 1024,
    # Outgoing QoS 1 messages in flight per client (MQTT 5 clients can lower it
    # with Receive Maximum). Ingest acknowledges after its batch commits, so the
    # window must hold two of its batches (host.services.ingest.BATCH_MAX, 5000:
    # a batch grows with the load, and large ones write far less per message).
    "max_inflight_messages": 10000,
    # ... and at most 16 MiB of them, so 10,000 x 256 KiB cannot pile up per client.
    "max_inflight_bytes": 16 * 1024 * 1024,
    # Queue of an offline persistent session (ingest down): 400,000 messages or
    # 256 MiB, whichever comes first. That is an hour of a 100-device ward at
    # 1 message/s each (about 0.5 KB each) and caps what one anonymous persistent
    # session can make the broker hold. Beyond it mosquitto DROPS new messages for
    # that session (after acknowledging them to the publisher): the ride-through
    # for an ingest outage is this queue, so size it to the site (docs/scaling.md).
    "max_queued_messages": 400_000,
    "max_queued_bytes": 256 * 1024 * 1024,
    # Save the in-memory database after every 100 changes (a queued, delivered or
    # acknowledged message, a subscription, a retained message) instead of every
    # 5 s. A SIGKILL of mosquitto with ingest offline then loses at most about 100
    # acknowledged messages (measured: 100, i.e. 0.04 s of publishing) instead of
    # up to 5 s of them (measured: 28,911); with ingest online it lost none.
    # Each save rewrites the whole database, so 1 (save after every change)
    # lost 1 message but carried 160 msg/s; 100 carries 2,300-2,800 msg/s with a
    # growing offline queue and ~5,000/s with ingest online (host/broker/
    # losswindow.py; docs/scaling.md). mosquitto does not fsync: a power cut can
    # still lose the last writes.
    "autosave_interval": 100,
    "autosave_on_changes": True,
}

#: Files mosquitto writes in its data directory (the console log is written by
#: this process and stays ours).
_MOSQUITTO_FILES = ("mosquitto.db", "mosquitto.db.new", "mosquitto.log")
#: What mosquitto reads from its data directory besides its config: the generated
#: password and ACL files (host/broker/auth.py) and the TLS listener's files.
_SECURITY_FILES = ("mosquitto.passwd", "mosquitto.acl", "dynamic-security.json",
                   "tls-ca.pem", "tls-server.pem", "tls-server.key")
#: Files that may sit in a broker data directory next to them.
_BROKER_DIR_FILES = (*_MOSQUITTO_FILES, *_SECURITY_FILES, ".mosquitto.passwd.tmp",
                     ".mosquitto.acl.tmp", ".dynamic-security.json.tmp",
                     "dynamic-security.json.new", "mosquitto.conf", "mosquitto.console.log")


@dataclass(frozen=True)
class TlsListener:
    """A TLS listener on ``port`` (same address as the plain one): the server's
    certificate and key, and the CA whose client certificates it requires."""

    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path


def _can_traverse(path: Path, uid: int, gids: set[int]) -> bool:
    """True if ``uid`` (with groups ``gids``) may search every existing ancestor."""
    for folder in [path, *path.parents]:
        try:
            st = folder.stat()
        except FileNotFoundError:
            continue  # made by mkdir(parents=True) later, 0o777 & ~umask
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def mosquitto_user(data_dir: Union[str, Path]) -> tuple[Optional[str], str]:
    """Return ``(user, why)``: the account mosquitto drops to, for the ``user`` line.

    ``None`` when this process is not root (mosquitto then keeps our account).
    As root: ``mosquitto`` if that account exists, else ``nobody`` (mosquitto's
    own fallback), provided it can reach ``data_dir`` (search permission on
    every parent) and ``data_dir`` is the broker's own (only broker files in it,
    owned by root or that account); :class:`Broker` then hands ``data_dir`` and
    mosquitto's files to it. Otherwise ``root`` with the reason in ``why``: the
    documented fallback, logged as a warning when the broker starts.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None, ""
    import pwd

    data_dir = Path(data_dir).resolve()
    account = None
    for name in ("mosquitto", "nobody"):
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            continue
        if account.pw_uid != 0:
            break
        account = None
    if account is None:
        return "root", "neither a 'mosquitto' nor a 'nobody' account exists"
    name = account.pw_name
    gids = set(os.getgrouplist(name, account.pw_gid))
    if not _can_traverse(data_dir.parent, account.pw_uid, gids):
        return "root", (f"user {name} cannot reach {data_dir} (a parent folder is not "
                        f"searchable by it); give the broker a data dir it can reach")
    if data_dir.is_dir():
        owner = data_dir.stat().st_uid
        if owner not in (0, account.pw_uid):
            return "root", f"{data_dir} belongs to uid {owner}, not to root or {name}"
        others = sorted(p.name for p in data_dir.iterdir() if p.name not in _BROKER_DIR_FILES)
        if others:
            return "root", (f"{data_dir} holds other files ({', '.join(others[:3])}); "
                            f"give the broker a folder of its own")
    return name, ""


def mosquitto_config(
    host: str,
    port: int,
    data_dir: Union[str, Path],
    persistence: bool = True,
    options: Optional[Mapping[str, Union[int, bool]]] = None,
    *,
    secure: bool = False,
    tls: Optional[TlsListener] = None,
    dynsec_plugin: Optional[str] = None,
) -> str:
    """Return the text of the mosquitto (2.x) config file used by :class:`Broker`.

    ``options`` overrides entries of :data:`MOSQUITTO_DEFAULTS` (unknown names are
    refused).  ``secure``: no anonymous clients, the password and ACL files of
    :mod:`host.broker.auth` in ``data_dir``, client ids bound to usernames (by the
    dynamic-security plugin at ``dynsec_plugin``, else by replacing them).  ``tls``:
    a second listener with TLS that requires a client certificate (its files copied
    into ``data_dir`` as ``tls-*.pem``).
    """
    data_dir = Path(data_dir).resolve()
    for value in (host, str(data_dir), dynsec_plugin or ""):
        if "\n" in value or "\r" in value:
            raise ValueError(f"newline in mosquitto config value {value!r}")
    opts = dict(MOSQUITTO_DEFAULTS)
    for key, value in (options or {}).items():
        if key not in MOSQUITTO_DEFAULTS:
            raise ValueError(f"unknown mosquitto option {key!r} "
                             f"(expected one of {', '.join(MOSQUITTO_DEFAULTS)})")
        opts[key] = value

    def setting(key: str) -> str:
        value = opts[key]
        text = ("true" if value else "false") if isinstance(value, bool) else str(int(value))
        return f"{key} {text}"

    lines = [
        "# Generated by medge (host/broker/launch.py); rewritten on every start. Do not edit.",
        f"listener {int(port)} {host}",
    ]
    if tls is not None:
        lines += [
            "# TLS: the server's certificate from the local CA (medge fleet ca init); every",
            "# client must present a certificate that CA issued (medge fleet add --cert),",
            "# and still log in with its account's password.",
            f"listener {int(tls.port)} {host}",
            f"cafile {data_dir / 'tls-ca.pem'}",
            f"certfile {data_dir / 'tls-server.pem'}",
            f"keyfile {data_dir / 'tls-server.key'}",
            "require_certificate true",
            "tls_version tlsv1.2",
        ]
    if secure:
        from host.broker.auth import ACL_FILE, DYNSEC_FILE, PASSWORD_FILE

        lines += [
            "# Accounts from the registry (host/broker/auth.py): no anonymous clients, a",
            "# password per account, per-account ACLs.",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {data_dir / PASSWORD_FILE}",
            f"acl_file {data_dir / ACL_FILE}",
        ]
        if dynsec_plugin is not None:
            lines += [
                "# Client ids bound to accounts: a CONNECT whose client id is not its",
                "# username is refused (the plugin is used for that alone).",
                f"plugin {dynsec_plugin}",
                f"plugin_opt_config_file {data_dir / DYNSEC_FILE}",
                "",
            ]
        else:
            lines += [
                "# FALLBACK (mosquitto's dynamic-security plugin not found): the client id",
                "# is replaced by the username, so no client can take over another",
                "# account's session (an impostor is accepted under its own account).",
                "use_username_as_clientid true",
                "",
            ]
    else:
        lines += [
            "# INSECURE (development only, medge broker --insecure): mosquitto 2.x refuses",
            "# anonymous clients on a configured listener unless this is set. Acceptable",
            "# only on loopback; run with accounts (medge broker --db) anywhere else.",
            "allow_anonymous true",
            "",
        ]
    if persistence:
        lines += [
            "# Sessions, subscriptions, queued QoS>=1 and retained messages are saved after",
            "# every autosave_interval changes (autosave_on_changes) and on a graceful",
            "# shutdown: a SIGKILL loses at most that many acknowledged messages. mosquitto",
            "# does not fsync: a power cut can lose the last writes (docs/scaling.md).",
            "persistence true",
            # mosquitto requires the trailing slash on persistence_location.
            f"persistence_location {data_dir}{os.sep}",
            "persistence_file mosquitto.db",
            setting("autosave_interval"),
            setting("autosave_on_changes"),
        ]
    else:
        lines.append("persistence false")
    lines += [
        "",
        "# Limits (why each number: MOSQUITTO_DEFAULTS in host/broker/launch.py).",
        "# Payloads above message_size_limit are discarded (QoS flow completed).",
        setting("message_size_limit"),
        "# Per client: in flight, and queued for an offline persistent session. Past the",
        "# queue limits mosquitto drops new messages for that session.",
        setting("max_inflight_messages"),
        setting("max_inflight_bytes"),
        setting("max_queued_messages"),
        setting("max_queued_bytes"),
        "set_tcp_nodelay true",
        "",
        f"log_dest file {data_dir / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "# not information: it logs every autosave, i.e. every message",
        "log_timestamp true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    user, why = mosquitto_user(data_dir)
    if user == "root":
        lines += [
            "",
            f"# FALLBACK: running as root because {why}.",
            "user root",
        ]
    elif user is not None:
        lines += [
            "",
            "# Started as root: mosquitto drops to this account after binding the port;",
            "# medge hands it the data directory and mosquitto's files in it.",
            f"user {user}",
        ]
    return "\n".join(lines) + "\n"


def _encode_remaining_length(length: int) -> bytes:
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | 0x80 if length else byte)
        if not length:
            return bytes(out)


def _mqtt_probe(host: str, port: int, timeout_s: float, any_answer: bool = False) -> bool:
    """Return True if an MQTT 3.1.1 CONNECT on host:port is answered by CONNACK(accepted),
    or with ``any_answer`` also by CONNACK(not authorised)."""
    client_id = f"medge-probe-{os.getpid()}-{time.monotonic_ns() % 1_000_000}".encode()
    variable = b"\x00\x04MQTT" + bytes([4, 0x02]) + (10).to_bytes(2, "big")  # clean, ka 10 s
    payload = len(client_id).to_bytes(2, "big") + client_id
    body = variable + payload
    packet = b"\x10" + _encode_remaining_length(len(body)) + body
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(packet)
            connack = b""
            while len(connack) < 4:
                chunk = sock.recv(4 - len(connack))
                if not chunk:
                    return False
                connack += chunk
            answered = connack[0] == 0x20 and connack[1] == 0x02
            # A broker with accounts refuses this anonymous probe (5: not authorised):
            # it still answered, so it is up.
            ok = answered and (connack[3] == 0 or (any_answer and connack[3] == 5))
            with contextlib.suppress(OSError):
                sock.sendall(b"\xe0\x00")  # DISCONNECT
            return ok
    except OSError:
        return False


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


# Brokers with a live child process (strong references: a running Broker is not
# garbage-collected, and so its temporary data_dir is not deleted under the broker);
# stopped at interpreter exit so that `medge demo` or an interrupted test run does
# not leave a broker listening behind it.
_LIVE: set[Broker] = set()


@atexit.register
def _stop_live_brokers() -> None:
    for broker in list(_LIVE):
        with contextlib.suppress(Exception):
            broker.stop(timeout_s=3.0)


class Broker:
    """An MQTT broker child process (mosquitto or the embedded amqtt broker).

    ``kind`` is ``"auto"`` (mosquitto if :func:`find_mosquitto` finds it, else
    embedded), ``"mosquitto"`` or ``"embedded"``. ``port=0`` picks a free port at
    construction; the port and ``data_dir`` are kept across :meth:`restart`.
    ``data_dir=None`` uses a private temporary directory that lives as long as this
    object. ``persistence`` (mosquitto only; the embedded broker is in-memory only):
    keep persistent sessions, their queued QoS >= 1 messages and retained messages
    in ``data_dir`` across a restart. ``options`` (mosquitto only) overrides
    entries of :data:`MOSQUITTO_DEFAULTS`, e.g. small queue limits in a test.
    ``accounts`` (mosquitto only): a function returning the account registry; the
    broker then enforces it (module docstring).  ``tls`` (mosquitto only, with
    ``accounts``): a TLS listener.
    Not thread-safe: drive one Broker from one thread.
    """

    def __init__(
        self,
        kind: Union[BrokerKind, str] = "auto",
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: Union[str, Path, None] = None,
        persistence: bool = True,
        options: Optional[Mapping[str, Union[int, bool]]] = None,
        accounts: Optional[Callable[[], Sequence[Any]]] = None,
        tls: Optional[TlsListener] = None,
    ) -> None:
        self._mosquitto: Optional[str] = None
        if kind == "auto":
            self._mosquitto = find_mosquitto()
            self.kind = BrokerKind.MOSQUITTO if self._mosquitto else BrokerKind.EMBEDDED
        else:
            try:
                self.kind = BrokerKind(kind)
            except ValueError:
                raise ValueError(
                    f"unknown broker kind {kind!r} (expected 'auto', 'mosquitto' or 'embedded')"
                ) from None
            if self.kind is BrokerKind.MOSQUITTO:
                self._mosquitto = find_mosquitto()
                if self._mosquitto is None:
                    raise RuntimeError(
                        "broker kind 'mosquitto' requested but the mosquitto binary was not found "
                        "(install it, e.g. `apt install mosquitto`, or use kind 'embedded')"
                    )
        self.host = host
        self.port = int(port) if port else free_port(host)
        self.persistence = persistence
        self.options = dict(options or {})
        self.accounts = accounts
        self.tls = tls
        if tls is not None and accounts is None:
            raise ValueError("a TLS listener needs accounts (the registry)")
        if tls is not None and self.kind is not BrokerKind.MOSQUITTO:
            raise ValueError("a TLS listener needs mosquitto (the embedded broker has none)")
        if self.kind is BrokerKind.MOSQUITTO:  # refuse unknown options now, not at start
            mosquitto_config(host, self.port, ".", persistence, self.options)
        self._tmp: Optional[tempfile.TemporaryDirectory[str]] = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"medge-broker-{self.kind.value}-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir).resolve()
        self._proc: Optional[subprocess.Popen[bytes]] = None
        #: The dynamic-security plugin that binds client ids (None: not installed, so
        #: the config replaces client ids instead; or not a secure broker).
        self.dynsec_plugin: Optional[str] = None
        if self.secure and self.kind is BrokerKind.MOSQUITTO:
            from host.broker.auth import find_dynsec_plugin

            self.dynsec_plugin = find_dynsec_plugin()
        self._admin_password: Optional[str] = None
        self._bound: set[str] = set()  # usernames the running plugin binds

    # ------------------------------------------------------------------ properties

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def secure(self) -> bool:
        """True when this broker enforces accounts (given ``accounts``)."""
        return self.accounts is not None

    @property
    def client_ids_bound(self) -> str:
        """How this broker binds client ids to accounts, in words (its start-up line)."""
        if not self.secure:
            return "not bound (no accounts)"
        if self.kind is BrokerKind.EMBEDDED:
            return ("checked at CONNECT (amqtt drops a clean session of that client id "
                    "before it checks: a trusted network only)")
        if self.dynsec_plugin is not None:
            return "bound to accounts (any other client id is refused)"
        return ("replaced by the username (mosquitto's dynamic-security plugin is not "
                "installed, so an impostor is remapped, not refused)")

    @property
    def config_path(self) -> Path:
        """Generated mosquitto config (mosquitto kind only)."""
        return self.data_dir / "mosquitto.conf"

    @property
    def log_paths(self) -> list[Path]:
        """Files the broker writes its log to (console output first)."""
        if self.kind is BrokerKind.MOSQUITTO:
            return [self.data_dir / "mosquitto.console.log", self.data_dir / "mosquitto.log"]
        return [self.data_dir / "embedded_broker.log"]

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        parts = []
        for path in self.log_paths:
            text = _tail(path, lines)
            if text.strip():
                parts.append(f"--- {path} ---\n{text}")
        return "\n".join(parts) or "(broker wrote no log)"

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<Broker {self.kind.value} {self.url} {state}>"

    # ------------------------------------------------------------------ lifecycle

    def _command(self) -> list[str]:
        if self.kind is BrokerKind.MOSQUITTO:
            assert self._mosquitto is not None
            text = mosquitto_config(self.host, self.port, self.data_dir, self.persistence,
                                    self.options, secure=self.secure, tls=self.tls,
                                    dynsec_plugin=self.dynsec_plugin)
            self._hand_over_data_dir()
            admin_hash = None
            if self.secure and self.dynsec_plugin is not None:
                import secrets

                from host.services.accounts import mosquitto_hash

                self._admin_password = secrets.token_urlsafe(24)
                admin_hash = mosquitto_hash(self._admin_password)
            self._write_security_files(admin_hash=admin_hash)
            # The folder may now belong to mosquitto's account: never follow a link
            # it could have put there (we are root when it does).
            with contextlib.suppress(FileNotFoundError):
                self.config_path.unlink()
            fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            return [self._mosquitto, "-c", str(self.config_path)]
        cmd = [
            sys.executable,
            "-m",
            "host.broker.embedded",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--parent-pid",
            str(os.getpid()),
        ]
        if self.secure:
            from host.broker.auth import ACL_FILE, PASSWORD_FILE

            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._write_security_files()
            cmd += ["--password-file", str(self.data_dir / PASSWORD_FILE),
                    "--acl-file", str(self.data_dir / ACL_FILE)]
        return cmd

    def _owner(self) -> Optional[tuple[int, int]]:
        """uid/gid of the account mosquitto drops to (None: it keeps ours)."""
        if self.kind is not BrokerKind.MOSQUITTO:
            return None
        user, _why = mosquitto_user(self.data_dir)
        if user is None or user == "root":
            return None
        import pwd

        account = pwd.getpwnam(user)
        return account.pw_uid, account.pw_gid

    def _write_security_files(self, accounts: Optional[Sequence[Any]] = None,
                              admin_hash: Optional[str] = None) -> None:
        if not self.secure:
            return
        from host.broker.auth import bound_usernames, write_files

        assert self.accounts is not None
        owner = self._owner()
        if accounts is None:
            accounts = self.accounts()
        write_files(self.data_dir, accounts, owner, admin_hash=admin_hash)
        if admin_hash is not None:
            self._bound = bound_usernames(accounts)
        if self.tls is not None:
            from host.broker.auth import write_private

            for name, src in (("tls-ca.pem", self.tls.ca_file),
                              ("tls-server.pem", self.tls.cert_file),
                              ("tls-server.key", self.tls.key_file)):
                write_private(self.data_dir / name, Path(src).read_text(encoding="ascii"),
                              owner)

    def reload(self) -> None:
        """Regenerate the password and ACL files from the registry and make mosquitto
        re-read them (SIGHUP): new accounts can connect, removed ones cannot, and
        mosquitto closes a removed account's live connection.  With the
        dynamic-security plugin, a new account's client id is bound before its
        password is loaded and a removed one's binding dropped after (OSError if the
        plugin does not take them: the caller retries)."""
        if not self.secure or not self.running:
            return
        accounts = list(self.accounts())  # type: ignore[misc]
        if self.kind is BrokerKind.EMBEDDED:  # it re-reads changed files itself
            self._write_security_files(accounts)
            return
        admin = None
        if self.dynsec_plugin is not None and self._admin_password is not None:
            from host.broker.auth import DynsecAdmin, bound_usernames

            admin = DynsecAdmin(self.host, self.port, self._admin_password)
            wanted = bound_usernames(accounts)
            admin.apply(create=wanted - self._bound)
            self._bound |= wanted
        self._write_security_files(accounts)
        assert self._proc is not None
        self._proc.send_signal(signal.SIGHUP)
        if admin is not None:
            gone = self._bound - wanted
            admin.apply(delete=gone)
            self._bound -= gone

    def _hand_over_data_dir(self) -> None:
        """As root: give data_dir and mosquitto's files to the account it drops to."""
        user, why = mosquitto_user(self.data_dir)
        if user is None:
            return
        if user == "root":
            logger.warning("mosquitto will run as root: %s", why)
            return
        import pwd

        account = pwd.getpwnam(user)
        for path in (self.data_dir, *(self.data_dir / f for f in _MOSQUITTO_FILES)):
            with contextlib.suppress(FileNotFoundError):
                os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)
        os.chmod(self.data_dir, 0o700)  # its queued messages are nobody else's business

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.kind is BrokerKind.EMBEDDED:
            path = env.get("PYTHONPATH")
            env["PYTHONPATH"] = str(_PACKAGE_ROOT) + (os.pathsep + path if path else "")
            env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker; return once it answers an MQTT CONNECT with CONNACK.

        Raises RuntimeError (with the tail of the broker's log) if the process exits
        or does not accept a connection within ``timeout_s``. No-op if running.
        """
        if self.running:
            return
        self._proc = None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not _is_loopback(self.host) and not self.secure:
            logger.warning(
                "MQTT broker will listen on non-loopback address %s with anonymous access "
                "(development default): anyone who can reach this port can publish and subscribe",
                self.host,
            )
        cmd = self._command()
        console = self.log_paths[0]
        t0 = time.monotonic()
        fd = os.open(console, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o644)
        with os.fdopen(fd, "ab") as out:
            out.write(f"=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start: {' '.join(cmd)}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(self.data_dir),
                env=self._env(),
            )
        _LIVE.add(self)
        deadline = t0 + timeout_s
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(
                    f"{self.kind.value} broker exited with code {code} during start-up "
                    f"on {self.url}:\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if _mqtt_probe(self.host, self.port, timeout_s=min(0.5, max(remaining, 0.05)),
                           any_answer=self.secure):
                logger.debug(
                    "%s broker (pid %d) ready on %s after %.3f s",
                    self.kind.value, self._proc.pid, self.url, time.monotonic() - t0,
                )
                return
            time.sleep(_PROBE_INTERVAL_S)
        self.stop(timeout_s=2.0)
        raise RuntimeError(
            f"{self.kind.value} broker did not accept an MQTT connection on {self.url} "
            f"within {timeout_s:.1f} s:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop gracefully (SIGTERM; kill after ``timeout_s``). Idempotent."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s broker (pid %d) did not exit %.1f s after SIGTERM; killing it",
                    self.kind.value, proc.pid, timeout_s,
                )
                proc.kill()
                proc.wait()
        code = proc.returncode
        if code not in (0, -signal.SIGTERM):
            logger.warning(
                "%s broker (pid %d) exited with code %s:\n%s",
                self.kind.value, proc.pid, code, self.log_tail(10),
            )
        else:
            logger.debug("%s broker (pid %d) stopped", self.kind.value, proc.pid)

    def restart(self) -> None:
        """Stop gracefully and start again on the same port with the same data_dir."""
        self.stop()
        self.start()

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


#: How often ``medge broker --db`` looks for changed accounts (seconds).
REGISTRY_POLL_S = 0.5


class RegistryWatcher:
    """Polls the account registry's fingerprint and reloads ``broker`` on a change
    (a thread; ``medge broker --db``).  A failing read is logged and retried.  Each
    poll opens the store afresh: a long-lived read-only SQLite connection was seen to
    keep an old snapshot after another process's commit and WAL checkpoint."""

    def __init__(self, broker: Broker, db: Any, poll_s: float = REGISTRY_POLL_S) -> None:
        self.broker = broker
        self.db = db
        self.poll_s = poll_s
        self.reloads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-watch", daemon=True)
        self._last: Optional[str] = None

    def fingerprint(self) -> str:
        from host.services.accounts import fingerprint
        from host.services.store import Store

        with Store(self.db, readonly=True) as store:
            return fingerprint(store)

    def take_baseline(self) -> None:
        """Read the registry's fingerprint now: call it *before* the broker writes
        its files from the registry, so a change made while the broker starts is
        seen by the first poll (it costs at most one needless reload)."""
        self._last = self.fingerprint()

    def start(self) -> RegistryWatcher:
        if self._last is None:
            self.take_baseline()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                now = self.fingerprint()
                if now != self._last:
                    self.broker.reload()
                    self._last = now
                    self.reloads += 1
                    logger.info("accounts changed: broker files regenerated and reloaded")
            except Exception as exc:  # a locked store, a busy broker: next poll
                logger.warning("cannot apply the account registry (retrying): %s", " ".join(
                    str(exc).split())[:200])

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


def registry_accounts(db: Any) -> Callable[[], list[Any]]:
    """A function that reads the registry's accounts from the store at ``db``."""

    def read() -> list[Any]:
        from host.services.accounts import accounts
        from host.services.store import Store

        with Store(db, readonly=True) as store:
            return accounts(store)

    return read


def run_broker_forever(
    kind: Union[BrokerKind, str] = "auto",
    host: str = "127.0.0.1",
    port: int = 1883,
    data_dir: Union[str, Path, None] = None,
    *,
    db: Any = None,
    tls: Optional[TlsListener] = None,
) -> int:
    """Run a broker until Ctrl-C/SIGTERM (the ``medge broker`` command); return an exit code.

    ``db`` (the account registry) makes it a broker with accounts, reloaded on every
    change; None is the insecure development mode (anonymous clients)."""
    try:
        broker = Broker(kind, host=host, port=port, data_dir=data_dir,
                        accounts=None if db is None else registry_accounts(db), tls=tls)
        watcher = None
        if db is not None:  # the baseline before the broker reads the registry
            watcher = RegistryWatcher(broker, db)
            watcher.take_baseline()
        broker.start()
    except (RuntimeError, ValueError, OSError) as exc:
        logger.error("could not start the MQTT broker: %s", exc)
        return 1
    if watcher is not None:
        watcher.start()

    stop_requested = threading.Event()
    previous: dict[int, object] = {}

    def _on_signal(signum: int, _frame: object) -> None:
        logger.info("received %s, stopping the broker", signal.Signals(signum).name)
        stop_requested.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _on_signal)
    if broker.kind is BrokerKind.EMBEDDED:
        from host.broker.embedded import KEEPS  # imports amqtt: only for this kind

        keeps = KEEPS
    else:
        keeps = f"data in {broker.data_dir}"
    if broker.secure:
        n = sum(1 for a in registry_accounts(db)() if a.active)
        auth = (f"accounts from {db} ({n} active; anonymous clients refused, client ids "
                f"{broker.client_ids_bound})")
        if tls is not None:
            auth += f"; TLS with client certificates on port {tls.port}"
    else:
        auth = ("AUTHENTICATION OFF: anonymous clients allowed (development default, "
                "--insecure): anyone who can reach this port reads and writes everything")
    logger.info("MQTT broker (%s, pid %s) listening on %s; %s; %s. Press Ctrl-C to stop.",
                broker.kind.value, broker.pid, broker.url, keeps, auth)
    code = 0
    try:
        while not stop_requested.wait(0.5):
            if not broker.running:
                logger.error("MQTT broker exited unexpectedly:\n%s", broker.log_tail())
                code = 1
                break
    except KeyboardInterrupt:  # only if SIGINT could not be hooked (not the main thread)
        pass
    finally:
        if watcher is not None:
            watcher.stop()
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
    logger.info("MQTT broker stopped")
    return code
