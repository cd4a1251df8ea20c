"""medge wire protocol v1 on the device side: topics and message builders.

The topic tree, QoS/retain rules and one JSON Schema per message type are
documented in docs/protocol.md; host/schemas/v1/ holds the schemas the host
validates against.  Everything here is plain dicts of ints and strings,
encoded by :mod:`firmware.net.wire` so CPython and MicroPython produce the same
bytes.

Topic tree (``{id}`` is the device id)::

    medge/v1/dev/{id}/status   retained, QoS 1: birth (online) / offline / last will
    medge/v1/dev/{id}/vitals   QoS 1: one message per reporting window
    medge/v1/dev/{id}/event    QoS 1: rhythm events (onset / end / report)
    medge/v1/dev/{id}/cmd      host -> device commands (firmware.net.commands)
    medge/v1/dev/{id}/ack      QoS 1: device -> host, one per command acted on
"""

from firmware.hw.compat import const

PROTOCOL_VERSION = const(1)
TOPIC_ROOT = "medge/v1"

MSG_STATUS = "status"
MSG_VITALS = "vitals"
MSG_EVENT = "event"
MSG_CMD = "cmd"
MSG_ACK = "ack"
MSG_ALERT = "alert"  # host -> device: an alert episode of the patient on the device

STATE_ONLINE = "online"
STATE_OFFLINE = "offline"

# Why a device went offline (status message ``reason``).
OFFLINE_SHUTDOWN = "shutdown"  # published by the device before a clean disconnect
OFFLINE_LOST = "lost"  # the last will: the broker lost the connection

QUALITY_GOOD = "good"  # enough clean beats for a reliable heart rate
QUALITY_UNRELIABLE = "unreliable"  # too few beats in the window: hr_bpm is null

DEVICE_ID_MAX_LEN = const(64)
_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_"
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def check_device_id(device_id):
    """Raise ValueError unless ``device_id`` is a valid device id.

    1-64 characters from ``a-z 0-9 - _``, starting with a letter or digit:
    safe in an MQTT topic level (no ``+``, ``#`` or ``/``) and in file names.
    """
    if not isinstance(device_id, str) or not 1 <= len(device_id) <= DEVICE_ID_MAX_LEN:
        raise ValueError("device id must be a str of 1-64 characters: %r" % (device_id,))
    for ch in device_id:
        if ch not in _ID_CHARS:
            raise ValueError("device id %r: character %r not in [a-z0-9-_]" % (device_id, ch))
    if device_id[0] in "-_":
        raise ValueError("device id %r must start with a letter or digit" % (device_id,))
    return device_id


def check_incarnation(incarnation):
    """Return ``incarnation`` if it is 1..64 of ``[A-Za-z0-9_-]``; ValueError otherwise."""
    if not isinstance(incarnation, str) or not 1 <= len(incarnation) <= 64:
        raise ValueError("incarnation must be a str of 1..64 characters")
    for c in incarnation:
        if c not in _ID_CHARS and c not in _UPPER:
            raise ValueError("incarnation %r: only A-Z a-z 0-9 _ -" % (incarnation,))
    return incarnation


def topic(device_id, msg_type):
    """``medge/v1/dev/{device_id}/{msg_type}``."""
    return TOPIC_ROOT + "/dev/" + device_id + "/" + msg_type


def _envelope(msg_type, device_id, seq, ts_ms):
    msg = {"v": PROTOCOL_VERSION, "type": msg_type, "device_id": device_id, "ts_ms": ts_ms}
    if seq is not None:
        msg["seq"] = seq
    return msg


def birth(device_id, seq, ts_ms, info):
    """Retained ``status`` message published right after every connect.

    ``info`` carries the device description: ``fw_version``,
    ``model_version``, ``patient_id``, ``sample_rate_hz``, ``boot_id``.
    """
    msg = _envelope(MSG_STATUS, device_id, seq, ts_ms)
    msg["state"] = STATE_ONLINE
    for key in info:
        msg[key] = info[key]
    return msg


def offline(device_id, ts_ms, reason, seq=None, boot_id=None):
    """Retained ``status`` offline message.

    Without ``seq`` it is the last will, registered at connect time and
    published by the broker when the connection is lost; with ``seq`` it is
    the device's own announcement before a clean disconnect.
    """
    msg = _envelope(MSG_STATUS, device_id, seq, ts_ms)
    msg["state"] = STATE_OFFLINE
    msg["reason"] = reason
    if boot_id is not None:
        msg["boot_id"] = boot_id
    return msg


def vitals(device_id, seq, ts_ms, window_ms, hr_bpm, beats, quality, signal=None,
           classes=None):
    """One reporting window's vital signs (``hr_bpm`` is None when unreliable).

    ``signal`` is the ECG signal-quality flag (``firmware.signal.quality``): good,
    noisy, lead_off or saturated.  ``classes`` (with a beat model) maps each
    AAMI class N S V F Q to the beats the model put in it during the window.
    """
    msg = _envelope(MSG_VITALS, device_id, seq, ts_ms)
    msg["window_ms"] = window_ms
    msg["hr_bpm"] = hr_bpm
    msg["beats"] = beats
    msg["quality"] = quality
    if signal is not None:
        msg["signal"] = signal
    if classes is not None:
        msg["classes"] = classes
    return msg


# -- vital signs beyond the ECG heart rate (optional fields of ``vitals``) -------
# Each is an integer with its unit in the name, or None (null) when withheld;
# its quality (0..100) sits beside it and the reason goes into ``withheld``.
F_PULSE = "pulse_bpm"
F_SPO2 = "spo2_pct"
F_RESP = "resp_rate_per_min"
F_TEMP = "temp_centi_c"
F_HRV_SDNN = "hrv_sdnn_ms"
F_HRV_RMSSD = "hrv_rmssd_ms"
F_PERFUSION = "perfusion_centi_pct"
F_HR_PULSE_DELTA = "hr_pulse_delta_bpm"
F_NIBP_SYS = "nibp_systolic_mmhg"
F_NIBP_DIA = "nibp_diastolic_mmhg"
F_NIBP_MAP = "nibp_map_mmhg"
F_NIBP_AGE = "nibp_age_s"
F_NIBP_LAST_FAILURE = "nibp_last_failure"
F_WITHHELD = "withheld"
F_FAULTS = "faults"
#: The quality field of each vital.
QUALITY_FIELDS = {
    F_PULSE: "pulse_quality",
    F_SPO2: "spo2_quality",
    F_RESP: "resp_quality",
    F_TEMP: "temp_quality",
    F_HRV_SDNN: "hrv_quality",
}
REASON_UNRELIABLE = "unreliable"


def add_vital(msg, withheld, name, value, quality, reason):
    """Put vital ``name`` (an int or None) and its quality (0..100) into ``msg``;
    a None value's ``reason`` (or ``unreliable``) goes into ``withheld[name]``."""
    msg[name] = value
    msg[QUALITY_FIELDS[name]] = quality if value is not None else 0
    if value is None:
        withheld[name] = reason or REASON_UNRELIABLE


def event(device_id, seq, ts_ms, kind, phase, start_ms, end_ms, evidence):
    """One rhythm event (``firmware.rhythm.monitor.RhythmEvent``): ``kind``
    (AFIB, VT, PAUSE, ASYSTOLE, BRADY, TACHY, BIGEMINY, TRIGEMINY, BURDEN,
    SIGNAL), ``phase`` (onset, end, report), the episode's ``start_ms`` and
    ``end_ms`` (epoch ms; ``end_ms`` None at onset) and its ``evidence``
    (rate, irregularity statistic, beat counts: a dict of ints, and the
    ``reason`` string of a SIGNAL event)."""
    msg = _envelope(MSG_EVENT, device_id, seq, ts_ms)
    msg["kind"] = kind
    msg["phase"] = phase
    msg["start_ms"] = start_ms
    msg["end_ms"] = end_ms
    msg["evidence"] = evidence
    return msg


def ack(device_id, seq, ts_ms, cmd_id, result, reason=None, data=None):
    """The answer to command ``cmd_id`` (:mod:`firmware.net.commands`):
    ``result`` ok, rejected or failed, with a ``reason`` unless ok and the
    handler's ``data`` (a dict) when it has any."""
    msg = _envelope(MSG_ACK, device_id, seq, ts_ms)
    msg["cmd_id"] = cmd_id
    msg["result"] = result
    if reason is not None:
        msg["reason"] = reason
    if data is not None:
        msg["data"] = data
    return msg
