"""mosquitto's password and ACL files, generated from the account registry.

:class:`host.broker.launch.Broker` with ``accounts=`` (a function returning the
registry's :class:`host.services.accounts.Account` rows) writes these two files into
its data directory before every start and every :meth:`~host.broker.launch.Broker.reload`
(SIGHUP), and its config then says::

    allow_anonymous false
    password_file <data_dir>/mosquitto.passwd
    acl_file <data_dir>/mosquitto.acl
    plugin <mosquitto_dynamic_security.so>
    plugin_opt_config_file <data_dir>/dynamic-security.json

Password file: one ``username:$7$...`` line per active account, the hash as stored
by :mod:`host.services.accounts` (mosquitto's own format, so mosquitto checks the
password itself).  A removed account has no line: it cannot connect, and mosquitto
closes its live connection when it reloads (tests/test_security.py checks both).

Client ids are bound to accounts by mosquitto's dynamic-security plugin, used for
that alone: its file (:data:`DYNSEC_FILE`, written before every start) lists every
active account as a client with ``clientid`` = its username and no password, so a
CONNECT that presents an account's username with any other client id is refused
(CONNACK "not authorised"), and a client that presents ingest's or a device's client
id with other credentials never reaches that session: it can neither take it over
nor wipe its queue nor kick the real client off.  The passwords stay in the password
file (a plugin client without a password defers to it), the grants in the ACL file
(the plugin's default access is "deny", which also defers).  The plugin reads its
file only at start, so :meth:`host.broker.launch.Broker.reload` sends it the change
through its ``$CONTROL`` topic (:class:`DynsecAdmin`: ``createClient`` before the
files are reloaded, ``deleteClient`` after), logged in as :data:`ADMIN_USERNAME`, an
account that exists only in that file with a password made at each start and kept
in the broker object's memory.  Consequences: a device's account is its device id
(the id it already uses as client id); every client connects with its username as
client id (each ingest worker of a group has its own host account); a client
without a username is refused.  Where the plugin is not installed
(:func:`find_dynsec_plugin`) the config falls back to ``use_username_as_clientid
true`` (mosquitto 2.0: the client id is replaced by the username, so an impostor gets
its own account's session, not the real one's; it is accepted, not refused) and
says so at start.

ACL file (mosquitto checks ``user`` blocks; nothing is granted to anyone else):

``device`` account ``D``
    ``topic write medge/v1/dev/D/#`` (its own data, status, acks: nowhere else),
    ``topic read medge/v1/dev/D/cmd`` and ``topic read medge/v1/dev/D/alert`` (its
    host-to-device topics: it can read no other device's).
``host`` account (ingest, the advice service)
    ``topic read medge/v1/#`` (every device topic; shared subscriptions
    ``$share/G/medge/v1/#`` are checked against the same filter),
    ``topic write medge/v1/dev/+/alert`` (alerts to any device; a host can neither
    command a device nor forge a device's data or status).
``operator`` account (``medge fleet cmd``, ``ota push``, ``sync``)
    ``topic write medge/v1/dev/+/cmd`` and ``topic read medge/v1/dev/+/ack``: it
    commands devices and reads their answers, and reads no patient data (least
    privilege: a leaked ingest password cannot reboot a ward).

Limits: a device may publish on its own ``cmd``/``alert`` topics (inside its own
prefix; nothing reaches another device); ``check_retain_source`` (mosquitto's
default, true) withholds a retained message whose publisher lost its access.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from firmware.net import protocol

__all__ = ["ACL_FILE", "ADMIN_USERNAME", "DYNSEC_FILE", "PASSWORD_FILE", "DynsecAdmin",
           "acl_text", "allowed", "dynsec_text", "find_dynsec_plugin", "parse_acl",
           "password_text", "write_files", "write_private"]

PASSWORD_FILE = "mosquitto.passwd"
ACL_FILE = "mosquitto.acl"
DYNSEC_FILE = "dynamic-security.json"
#: The broker's own admin login to the plugin's ``$CONTROL`` topic.  Not a possible
#: account id (those never start with ``_``: :func:`host.services.accounts.check_username`).
ADMIN_USERNAME = "_medge-broker"
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
#: Where Debian/Ubuntu/Raspberry Pi OS (any architecture), Fedora and a source build
#: install the plugin; ``$MEDGE_MOSQUITTO_DYNSEC`` names another.
_PLUGIN_GLOBS = ("/usr/lib/*/mosquitto_dynamic_security.so",
                 "/usr/lib/mosquitto_dynamic_security.so",
                 "/usr/lib64/mosquitto_dynamic_security.so",
                 "/usr/local/lib/mosquitto_dynamic_security.so",
                 "/usr/local/lib/*/mosquitto_dynamic_security.so")
#: Host-to-device message types a device may read (its own only).
HOST_TO_DEVICE = (protocol.MSG_CMD, "alert")


def _dev(device_id: str, rest: str) -> str:
    return f"{protocol.TOPIC_ROOT}/dev/{device_id}/{rest}"


def _active(accounts: Iterable[Any]) -> list[Any]:
    return sorted((a for a in accounts if a.active), key=lambda a: a.username)


def password_text(accounts: Iterable[Any]) -> str:
    lines = []
    for acc in _active(accounts):
        for value in (acc.username, acc.password_hash):
            if any(c in value for c in ":\n\r") or not value:
                raise ValueError(f"account {acc.username!r}: not writable to a password file")
        lines.append(f"{acc.username}:{acc.password_hash}")
    return "".join(line + "\n" for line in lines)


def acl_text(accounts: Iterable[Any]) -> str:
    out = ["# Generated by medge (host/broker/auth.py) from the account registry; rewritten",
           "# on every change. Do not edit: `medge fleet add|remove` changes it.", ""]
    for acc in _active(accounts):
        out.append(f"user {acc.username}")
        if acc.role == "device":
            device_id = protocol.check_device_id(acc.device_id or acc.username)
            out.append(f"topic write {_dev(device_id, '#')}")
            out += [f"topic read {_dev(device_id, kind)}" for kind in HOST_TO_DEVICE]
        elif acc.role == "host":
            out.append(f"topic read {protocol.TOPIC_ROOT}/#")
            out.append(f"topic write {_dev('+', 'alert')}")
        elif acc.role == "operator":
            out.append(f"topic write {_dev('+', protocol.MSG_CMD)}")
            out.append(f"topic read {_dev('+', protocol.MSG_ACK)}")
        else:  # admin accounts are for the host tools, not the broker
            out.append("# (no broker access for this role)")
        out.append("")
    return "\n".join(out) + "\n"


def parse_acl(text: str) -> dict[str, list[tuple[str, str]]]:
    """The grants of an ACL file in the format :func:`acl_text` writes (mosquitto's:
    ``user NAME`` blocks of ``topic read|write|readwrite PATTERN``): each user's
    ``(access, pattern)`` list.  The embedded broker enforces the same file."""
    grants: dict[str, list[tuple[str, str]]] = {}
    user = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word == "user":
            user = rest.strip()
            grants.setdefault(user, [])
        elif word == "topic" and user is not None:
            access, _, pattern = rest.strip().partition(" ")
            if not pattern:
                access, pattern = "readwrite", access
            grants[user].append((access, pattern.strip()))
    return grants


def allowed(grants: list[tuple[str, str]], access: str, topic: str) -> bool:
    """May a user with ``grants`` ``access`` ("read" or "write") ``topic``?  A
    subscription filter (wildcards included) is checked as mosquitto checks it:
    the grant's pattern must match the filter taken literally; ``$share/G/`` is
    stripped first."""
    from paho.mqtt.client import topic_matches_sub

    if topic.startswith("$share/"):
        topic = topic.split("/", 2)[2] if topic.count("/") >= 2 else ""
    return any(access in have and topic_matches_sub(pattern, topic)
               for have, pattern in grants) if topic else False


def write_private(path: Path, text: str, owner: tuple[int, int] | None) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600 (and ``owner``), never through a
    link."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    if owner is not None:
        os.chown(tmp, *owner, follow_symlinks=False)
    os.replace(tmp, path)


def write_files(data_dir: Path, accounts: Iterable[Any],
                owner: tuple[int, int] | None = None, *,
                admin_hash: str | None = None) -> tuple[Path, Path]:
    """Write the password and ACL files (mode 0600, ``owner`` uid/gid when mosquitto
    drops to another account) and, with ``admin_hash`` (before a start), the
    plugin's file; return the paths of the first two."""
    accounts = list(accounts)
    pw_path, acl_path = data_dir / PASSWORD_FILE, data_dir / ACL_FILE
    write_private(pw_path, password_text(accounts), owner)
    write_private(acl_path, acl_text(accounts), owner)
    if admin_hash is not None:
        write_private(data_dir / DYNSEC_FILE, dynsec_text(accounts, admin_hash), owner)
    return pw_path, acl_path


def find_dynsec_plugin() -> str | None:
    """Path of mosquitto's dynamic-security plugin, or None if it is not installed."""
    named = os.environ.get("MEDGE_MOSQUITTO_DYNSEC")
    if named:
        return named if os.path.isfile(named) else None
    for pattern in _PLUGIN_GLOBS:
        for path in sorted(glob.glob(pattern)):
            if os.path.isfile(path):
                return path
    return None


def bound_usernames(accounts: Iterable[Any]) -> set[str]:
    """The usernames whose client id the plugin binds (every active account)."""
    return {a.username for a in _active(accounts)}


def dynsec_text(accounts: Iterable[Any], admin_hash: str) -> str:
    """The plugin's file: each active account bound to its username as client id (no
    password: the password file checks it; no role: the ACL file grants), and the
    admin login (``admin_hash``: a ``$7$`` hash) allowed only on ``$CONTROL``."""
    _, seven, iterations, salt, digest = admin_hash.split("$")
    if seven != "7":
        raise ValueError("the admin hash is not in mosquitto's $7$ format")
    clients: list[dict[str, Any]] = [{"username": u, "clientid": u}
                                     for u in sorted(bound_usernames(accounts))]
    clients.append({"username": ADMIN_USERNAME, "clientid": ADMIN_USERNAME,
                    "password": digest, "salt": salt, "iterations": int(iterations),
                    "roles": [{"rolename": "medge-control"}]})
    control = "$CONTROL/dynamic-security/#"
    doc = {
        # "deny" by default = the plugin defers every grant to the ACL file.
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False,
                             "subscribe": False, "unsubscribe": False},
        "clients": clients,
        "groups": [],
        "roles": [{"rolename": "medge-control", "acls": [
            {"acltype": "publishClientSend", "topic": control, "allow": True},
            {"acltype": "publishClientReceive", "topic": control, "allow": True},
            {"acltype": "subscribePattern", "topic": control, "allow": True}]}],
    }
    return json.dumps(doc, indent=1) + "\n"


class DynsecAdmin:
    """Sends client-id bindings to a running broker's dynamic-security plugin.

    :meth:`apply` connects as :data:`ADMIN_USERNAME`, publishes one ``$CONTROL``
    request and waits for its response; it raises ``OSError`` if the broker does
    not answer within ``timeout_s`` or refuses a command (a ``createClient`` of a
    binding that already exists counts as done, as does a ``deleteClient`` of one
    that is gone)."""

    def __init__(self, host: str, port: int, password: str, timeout_s: float = 5.0) -> None:
        self.host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
        self.port = port
        self._password = password
        self.timeout_s = timeout_s

    def apply(self, create: Iterable[str] = (), delete: Iterable[str] = ()) -> None:
        commands = [{"command": "createClient", "username": u, "clientid": u}
                    for u in sorted(create)]
        commands += [{"command": "deleteClient", "username": u} for u in sorted(delete)]
        if not commands:
            return
        import paho.mqtt.client as mqtt

        answer: list[bytes] = []
        ready, done = threading.Event(), threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=ADMIN_USERNAME)
        client.username_pw_set(ADMIN_USERNAME, self._password)
        client.on_connect = lambda c, _u, _f, rc, _p: (
            None if rc.is_failure else c.subscribe(CONTROL_TOPIC + "/response", 1))
        client.on_subscribe = lambda *_a: ready.set()
        client.on_message = lambda _c, _u, m: (answer.append(m.payload), done.set())
        try:
            client.connect(self.host, self.port, keepalive=30)
            client.loop_start()
            if not ready.wait(self.timeout_s):
                raise OSError(f"the broker's dynamic-security plugin at {self.host}:"
                              f"{self.port} did not accept its admin login")
            client.publish(CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1)
            if not done.wait(self.timeout_s):
                raise OSError("the broker's dynamic-security plugin did not answer")
        finally:
            client.loop_stop()
            with contextlib.suppress(Exception):
                client.disconnect()
        fine = {None, "Client already exists", "Client not found"}
        errors = [f"{r.get('command')}: {r.get('error')}"
                  for r in json.loads(answer[0]).get("responses", []) if r.get("error") not in fine]
        if errors:
            raise OSError("the dynamic-security plugin refused " + "; ".join(errors))
