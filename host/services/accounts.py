"""Broker accounts: who may connect to the broker, as what (contract 11).

One account per device (role ``device``: username = device id, so the device's MQTT
client id, its topics and its account are the same name) and one per host process
that talks MQTT (role ``host``: ingest workers, the advice service; each its own
username, because the broker binds a client id to its account:
:mod:`host.broker.auth`), and one per person or tool that commands devices (role
``operator``: ``medge fleet cmd``, ``ota push``, ``sync``: it may send commands and
read their answers, nothing else).  Rows live in the store's ``accounts`` table (schema 4):
``username, device_id, role, password_hash, incarnation, created_ms, disabled_ms``.

Credentials.  :func:`add` makes a random password (``secrets.token_urlsafe(24)``:
192 bits) and returns it once; the store keeps only its hash, in the format of
mosquitto's password file (what ``mosquitto_passwd`` writes, mosquitto 2.0
``src/mosquitto_passwd.c`` / ``password_mosq.c``):
``$7$<iterations>$<base64 salt, 12 bytes>$<base64 PBKDF2-HMAC-SHA512, 64 bytes>``.
:data:`PBKDF2_ITERATIONS` is 1,000 (mosquitto 2.0 writes 101, 2.1 writes 1,000): the
passwords are machine-made with 192 bits of entropy, so stretching adds little
against guessing and every CONNECT pays it in the broker's one thread (measured here:
1.5 ms per hash at 1,000, 15 ms at 10,000).

Incarnation.  A device account gets a new ``incarnation`` (16 random hex digits)
each time it is provisioned: a replaced or re-flashed unit under the same device id
is a new incarnation, so its messages never collide with the old unit's
(the store keys messages by (device_id, incarnation, seq)).

Removal (:func:`remove`) revokes the account: the hash is cleared and
``disabled_ms`` set (the row stays, so the registry remembers the id and its
incarnation; :func:`add` on a removed id provisions it again with a new password and
incarnation).  The broker regenerates its files from the registry and reloads
(:mod:`host.broker.auth`), so a removed account cannot connect any more and its live
connection is closed.

Every change is recorded in the audit log (:func:`host.services.audit.record`) in
the same transaction: ``account.add``, ``account.remove``, ``credential.reset``,
with the account's role, device, incarnation and ``"credentials": "set"|"none"``,
never the password or its hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import Enum
from typing import Any

from host.services import audit
from host.services.store import transaction

__all__ = ["PBKDF2_ITERATIONS", "Account", "AccountError", "Role", "account", "accounts",
           "add", "check_password", "fingerprint", "incarnations", "mosquitto_hash",
           "new_password", "provision", "remove", "reset"]

#: PBKDF2-HMAC-SHA512 iterations of new hashes (see the module docstring).
PBKDF2_ITERATIONS = 1000
_SALT_BYTES = 12  # mosquitto's SALT_LEN
_HASH_BYTES = 64  # SHA-512


class Role(str, Enum):
    DEVICE = "device"
    HOST = "host"
    OPERATOR = "operator"


class AccountError(ValueError):
    """A refused account operation (unknown id, already exists, bad id); one line."""


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    device_id: str | None
    incarnation: str | None
    created_ms: int
    disabled_ms: int | None
    has_credentials: bool
    password_hash: str = ""  # for the broker's password file only; never printed

    @property
    def active(self) -> bool:
        return self.disabled_ms is None and self.has_credentials

    def as_dict(self) -> dict[str, Any]:
        """What ``medge fleet show --json`` prints (no hash)."""
        return {"username": self.username, "role": self.role, "device_id": self.device_id,
                "incarnation": self.incarnation, "created_ms": self.created_ms,
                "disabled_ms": self.disabled_ms, "active": self.active,
                "credentials": "set" if self.active else "none"}

    def __repr__(self) -> str:  # never the hash
        return (f"Account({self.username!r}, role={self.role!r}, "
                f"credentials={'set' if self.active else 'none'})")


def new_password() -> str:
    return secrets.token_urlsafe(24)


def mosquitto_hash(password: str, *, iterations: int = PBKDF2_ITERATIONS,
                   salt: bytes | None = None) -> str:
    """``password`` hashed as mosquitto's password file stores it (``$7$``)."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _HASH_BYTES)
    salt64, hash64 = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"$7${iterations}${salt64}${hash64}"


def check_password(password: str, stored: str) -> bool:
    """True if ``password`` matches a ``$7$`` hash (constant-time compare)."""
    parts = stored.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        want = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(want))
    return hmac.compare_digest(got, want)


def check_username(name: str) -> str:
    """Account names follow the device id rule (a-z 0-9 - _, 1-64, no leading - or _):
    safe as an MQTT client id, a topic level and a line of mosquitto's files."""
    from firmware.net.protocol import check_device_id

    try:
        return check_device_id(name)
    except ValueError as exc:
        raise AccountError(str(exc).replace("device id", "account id")) from None


_COLUMNS = "username, role, device_id, incarnation, created_ms, disabled_ms, password_hash"


def _row(row: tuple[Any, ...]) -> Account:
    username, role, device_id, incarnation, created_ms, disabled_ms, pw_hash = row
    return Account(username, role, device_id, incarnation, int(created_ms),
                   None if disabled_ms is None else int(disabled_ms), bool(pw_hash),
                   pw_hash or "")


def accounts(store: Any) -> list[Account]:
    """Every account (removed ones too), by username."""
    rows = store.db.execute(f"SELECT {_COLUMNS} FROM accounts ORDER BY username").fetchall()
    return [_row(r) for r in rows]


def account(store: Any, username: str) -> Account | None:
    row = store.db.execute(f"SELECT {_COLUMNS} FROM accounts WHERE username = ?",
                           (username,)).fetchone()
    return None if row is None else _row(row)


def _summary(acc: Account | None) -> dict[str, Any] | None:
    if acc is None:
        return None
    return {"role": acc.role, "device_id": acc.device_id, "incarnation": acc.incarnation,
            "credentials": "set" if acc.active else "none"}


def _put(store: Any, username: str, role: Role, before: Account | None, pw_hash: str) -> str:
    """Write one account's new hash (inside the caller's transaction); the audit action:
    a new account or a removed one provisioned again (a new unit: a new incarnation)
    is ``account.add``, a new password for an active one ``credential.reset``."""
    from host.services.store import now_ms

    incarnation = secrets.token_hex(8) if role is Role.DEVICE else None
    if before is None:
        store.db.execute(
            "INSERT INTO accounts (username, device_id, role, password_hash, incarnation, "
            "created_ms, disabled_ms) VALUES (?, ?, ?, ?, ?, ?, NULL)",
            (username, username if role is Role.DEVICE else None, role.value, pw_hash,
             incarnation, now_ms()))
        return "account.add"
    if before.active:
        store.db.execute("UPDATE accounts SET password_hash = ? WHERE username = ?",
                         (pw_hash, username))
        return "credential.reset"
    store.db.execute("UPDATE accounts SET password_hash = ?, incarnation = ?, disabled_ms = NULL"
                     " WHERE username = ?", (pw_hash, incarnation, username))
    return "account.add"


def _set_password(store: Any, username: str, role: Role, actor: str) -> tuple[Account, str]:
    """Inside a transaction: a new password for ``username`` and its audit row."""
    before = account(store, username)
    if before is not None and before.role != role.value:
        raise AccountError(f"account {username} is a {before.role} account, not {role.value}")
    password = new_password()
    action = _put(store, username, role, before, mosquitto_hash(password))
    after = account(store, username)
    assert after is not None
    audit.record(store, actor, action, username, _summary(before), _summary(after))
    return after, password


def add(store: Any, username: str, role: Role | str = Role.DEVICE, *, actor: str
        ) -> tuple[Account, str]:
    """Create (or re-provision a removed) account; return it and its password (the
    only time the password exists outside the caller).  A device account gets a new
    incarnation.  ``AccountError`` if the id is bad or the account is active."""
    check_username(username)
    with transaction(store):
        before = account(store, username)
        if before is not None and before.active:
            raise AccountError(f"account {username} exists ({before.role}); remove it first, "
                               "or give it a new password with `medge fleet passwd`")
        return _set_password(store, username, Role(role), actor)


def reset(store: Any, username: str, *, actor: str) -> tuple[Account, str]:
    """A new password for an active account (same incarnation: the same unit)."""
    with transaction(store):
        before = account(store, username)
        if before is None or not before.active:
            raise AccountError(f"no active account {username}")
        return _set_password(store, username, Role(before.role), actor)


def remove(store: Any, username: str, *, actor: str) -> Account:
    """Revoke an account (module docstring).  ``AccountError`` if there is none."""
    from host.services.store import now_ms

    with transaction(store):
        before = account(store, username)
        if before is None or not before.active:
            raise AccountError(f"no active account {username}")
        store.db.execute("UPDATE accounts SET password_hash = '', disabled_ms = ? "
                         "WHERE username = ?", (now_ms(), username))
        after = account(store, username)
        audit.record(store, actor, "account.remove", username, _summary(before),
                     _summary(after))
    assert after is not None
    return after


def provision(store: Any, usernames: list[str], role: Role | str, *, actor: str
              ) -> dict[str, str]:
    """Make sure each of ``usernames`` has an active account of ``role`` with a fresh
    password (``medge demo`` and ``medge sim`` provision their own devices and host
    account): a new account or a new password for an existing one, all in one
    transaction with their audit rows.  Returns each username's password."""
    passwords: dict[str, str] = {}
    for username in usernames:
        check_username(username)
    with transaction(store):
        for username in usernames:
            passwords[username] = _set_password(store, username, Role(role), actor)[1]
    return passwords


def incarnations(store: Any, usernames: list[str]) -> dict[str, str]:
    """The provisioned incarnation of each of ``usernames`` that has one (device
    accounts): what the device sends in every message."""
    out = {}
    for username in usernames:
        acc = account(store, username)
        if acc is not None and acc.incarnation:
            out[username] = acc.incarnation
    return out


def fingerprint(store: Any) -> str:
    """A digest of what the broker's files are made from (changes on every add, remove
    and reset): the broker polls it to know when to regenerate and reload."""
    h = hashlib.sha256()
    for acc in accounts(store):
        h.update(f"{acc.username}\0{acc.role}\0{acc.password_hash}\0{acc.disabled_ms}\n"
                 .encode())
    return h.hexdigest()
