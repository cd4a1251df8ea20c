"""Commands from the host (``cmd`` messages) and their answers (``ack``).

The host (``medge fleet cmd``) publishes a command on the device's own
``medge/v1/dev/{id}/cmd`` topic (QoS 1, docs/protocol.md); the device answers
each command it acts on with exactly one ``ack`` carrying the same
``cmd_id`` and ``result``:

- ``ok`` (with the handler's ``data``, if any);
- ``rejected`` with a ``reason``: an unknown command name, an expired one
  (``expires_ms`` in the past by the device's clock), bad arguments (the
  handler raised ValueError: nothing was changed);
- ``failed`` with a ``reason``: the handler raised anything else.

QoS 1 may deliver a command twice, and the host may send it again after a
reconnect: the device remembers the last :data:`RECENT_IDS` command ids (saved
in its state, so a reboot does not forget them) and answers a repeated id
with nothing (counted in :attr:`Commands.duplicates`).  The id is saved
together with the ack being queued, after the handler ran: a power cut
between the two can make a command act twice, so every command is written to
be idempotent (``set_config`` sets, ``reboot`` restarts, ``ping`` reads).

A payload that is not a command for this device (not JSON, no usable
``cmd_id``, another device id, too long) cannot be answered: it is counted
in :attr:`Commands.invalid` with its reason in :attr:`Commands.last_invalid`
and dropped; the device keeps running.

Handlers are registered by name (:meth:`Commands.register`); the device's
own (``ping``, ``set_config``, ``reboot``) are in :mod:`firmware.device`.
MicroPython-clean: commands are rare, so parsing allocates freely.
"""

import json

from firmware.hw.compat import const

ACK_OK = "ok"
ACK_REJECTED = "rejected"
ACK_FAILED = "failed"

#: Command ids remembered to act once per id (and kept in the device state).
RECENT_IDS = const(16)
#: Longest command payload accepted, bytes (the host's are a few hundred).
MAX_PAYLOAD = const(4096)
#: Received messages a link keeps until the device takes them (``messages()``).
INBOX_MAX = const(32)
#: Longest ``reason`` in an ack (the ack schema's maxLength).
MAX_REASON = const(256)
_STATE_KEY = "cmd_ids"
_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


def _valid_id(cmd_id):
    if not isinstance(cmd_id, str) or not 1 <= len(cmd_id) <= 64:
        return False
    for c in cmd_id:
        if c not in _ID_CHARS:
            return False
    return True


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


class Commands:
    """Validates, de-duplicates and dispatches commands (module docstring)."""

    def __init__(self, device_id, state):
        self.device_id = device_id
        self._state = state
        recent = state.load(_STATE_KEY, [])
        if not isinstance(recent, list):
            recent = []
        self._recent = [x for x in recent if isinstance(x, str)][-RECENT_IDS:]
        self._handlers = {}
        self.received = 0  # payloads seen on the cmd topic
        self.duplicates = 0  # ids already answered: not acted on again
        self.invalid = 0  # payloads that cannot be answered
        self.last_invalid = ""
        self.answered = {ACK_OK: 0, ACK_REJECTED: 0, ACK_FAILED: 0}

    def register(self, name, handler):
        """``handler(args, cmd)`` returns a dict of data for the ack (or None);
        raises ValueError to reject (bad arguments) or anything else to fail."""
        self._handlers[name] = handler

    def names(self):
        return sorted(self._handlers)

    def _drop(self, reason):
        self.invalid += 1
        self.last_invalid = reason
        return None

    def handle(self, payload, now_ms):
        """One payload from the cmd topic: returns ``(cmd_id, result, reason,
        data)`` to answer with an ack, or None (nothing to answer: a repeated id
        or a payload that is not a command for this device).  Call
        :meth:`answered_id` once the ack is queued."""
        self.received += 1
        if len(payload) > MAX_PAYLOAD:
            return self._drop("payload longer than %d bytes" % MAX_PAYLOAD)
        try:
            cmd = json.loads(payload)
        except ValueError:
            return self._drop("not JSON")
        if not isinstance(cmd, dict):
            return self._drop("not a JSON object")
        cmd_id = cmd.get("cmd_id")
        if not _valid_id(cmd_id):
            return self._drop("no valid cmd_id")
        if cmd.get("device_id") != self.device_id:
            return self._drop("for another device")
        if cmd_id in self._recent:
            self.duplicates += 1
            return None
        return self._dispatch(cmd_id, cmd, now_ms)

    def _dispatch(self, cmd_id, cmd, now_ms):
        if cmd.get("v") != 1 or cmd.get("type") != "cmd":
            return self._answer(cmd_id, ACK_REJECTED, "not a v1 cmd message", None)
        name = cmd.get("name")
        args = cmd.get("args", {})
        if not isinstance(name, str) or not isinstance(args, dict):
            return self._answer(cmd_id, ACK_REJECTED, "name must be a str, args an object",
                                None)
        expires = cmd.get("expires_ms")
        if expires is not None:
            if not _is_int(expires):
                return self._answer(cmd_id, ACK_REJECTED, "expires_ms must be an int", None)
            if now_ms > expires:
                return self._answer(cmd_id, ACK_REJECTED, "expired %d ms ago"
                                    % (now_ms - expires), None)
        handler = self._handlers.get(name)
        if handler is None:
            return self._answer(cmd_id, ACK_REJECTED, "unknown command %r (known: %s)"
                                % (name[:32], ", ".join(self.names())), None)
        try:
            data = handler(args, cmd)
        except ValueError as exc:
            return self._answer(cmd_id, ACK_REJECTED, "bad args: %s" % exc, None)
        except Exception as exc:  # a handler's fault must not stop the device
            return self._answer(cmd_id, ACK_FAILED, "%s: %s" % (type(exc).__name__, exc),
                                None)
        return self._answer(cmd_id, ACK_OK, None, data)

    def _answer(self, cmd_id, result, reason, data):
        self.answered[result] += 1
        if reason is not None and len(reason) > MAX_REASON:
            reason = reason[:MAX_REASON]
        return (cmd_id, result, reason, data)

    def answered_id(self, cmd_id):
        """Remember ``cmd_id`` (its ack is queued): a repeat is not acted on again."""
        recent = self._recent
        recent.append(cmd_id)
        if len(recent) > RECENT_IDS:
            del recent[0]
        self._state.save(_STATE_KEY, recent)
