"""Validation of incoming messages: every malformed kind gets its own reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.net import protocol
from firmware.net.wire import encode
from host.services import messages
from host.services.messages import Accepted, Ignored, Reason, Rejected


def vitals_doc(device_id: str = "dev-1", **overrides: object) -> dict:
    doc = protocol.vitals(device_id, 7, 1_700_000_000_000, 1000, 72, 1, protocol.QUALITY_GOOD)
    doc.update(overrides)
    return doc


def topic(kind: str, device_id: str = "dev-1") -> str:
    return protocol.topic(device_id, kind)


def test_valid_vitals_birth_offline_and_will_are_accepted() -> None:
    birth = protocol.birth(
        "dev-1",
        0,
        1_700_000_000_000,
        {
            "fw_version": "0.1.0",
            "model_version": "none",
            "patient_id": "p-1",
            "sample_rate_hz": 250,
            "boot_id": 1,
        },
    )
    will = protocol.offline("dev-1", 1_700_000_000_000, protocol.OFFLINE_LOST, boot_id=1)
    bye = protocol.offline("dev-1", 1_700_000_000_000, protocol.OFFLINE_SHUTDOWN, seq=9, boot_id=1)
    for kind, doc in (
        ("vitals", vitals_doc()),
        ("status", birth),
        ("status", will),
        ("status", bye),
    ):
        result = messages.check(topic(kind), encode(doc))
        assert isinstance(result, Accepted), result
        assert result.payload == doc


@pytest.mark.parametrize(
    ("topic_", "payload", "reason"),
    [
        (topic("vitals"), b"{" + b" " * messages.MAX_PAYLOAD_BYTES + b"}", Reason.OVERSIZED),
        (topic("vitals"), b"not json at all", Reason.NOT_JSON),
        (topic("vitals"), b"\xff\xfe", Reason.NOT_JSON),
        (topic("vitals"), b"[1, 2]", Reason.NOT_JSON),
        (topic("vitals"), b'{"hr_bpm": NaN}', Reason.NOT_JSON),
        (topic("vitals"), json.dumps(vitals_doc(hr_bpm="72")).encode(), Reason.SCHEMA),
        (topic("vitals"), json.dumps(vitals_doc(hr_bpm=1000)).encode(), Reason.SCHEMA),
        (topic("vitals"), json.dumps(vitals_doc(extra=1)).encode(), Reason.SCHEMA),
        (
            topic("vitals"),
            json.dumps({k: v for k, v in vitals_doc().items() if k != "seq"}).encode(),
            Reason.SCHEMA,
        ),
        (topic("vitals"), json.dumps(vitals_doc(v=2)).encode(), Reason.SCHEMA),
        (
            topic("vitals", "dev-2"),
            json.dumps(vitals_doc("dev-1")).encode(),
            Reason.DEVICE_MISMATCH,
        ),
        (topic("status"), json.dumps(vitals_doc()).encode(), Reason.TYPE_MISMATCH),
        (topic("telemetry"), json.dumps(vitals_doc()).encode(), Reason.UNKNOWN_TYPE),
        ("medge/v1/dev/dev-1", json.dumps(vitals_doc()).encode(), Reason.BAD_TOPIC),
        ("medge/v1/dev/Dev+1/vitals", json.dumps(vitals_doc()).encode(), Reason.BAD_TOPIC),
        ("other/v1/dev/dev-1/vitals", json.dumps(vitals_doc()).encode(), Reason.BAD_TOPIC),
    ],
)
def test_malformed_messages_are_rejected_with_their_reason(
    topic_: str, payload: bytes, reason: Reason
) -> None:
    result = messages.check(topic_, payload)
    assert isinstance(result, Rejected)
    assert result.reason is reason
    assert result.detail


def test_schema_rejection_names_the_field() -> None:
    result = messages.check(topic("vitals"), json.dumps(vitals_doc(hr_bpm="72")).encode())
    assert isinstance(result, Rejected)
    assert "hr_bpm" in result.detail


def test_commands_are_ignored_not_rejected() -> None:
    cmd = {
        "v": 1,
        "type": "cmd",
        "device_id": "dev-1",
        "cmd_id": "c1",
        "ts_ms": 1,
        "name": "reboot",
        "args": {},
    }
    assert messages.check(topic("cmd"), json.dumps(cmd).encode()) == Ignored("cmd")


@pytest.mark.parametrize("msg_type", messages.ALL_TYPES)
def test_every_message_type_has_a_valid_schema_file(msg_type: str) -> None:
    # check_schema runs inside validator(); a broken schema file raises here.
    assert messages.validator(msg_type).schema["properties"]["type"]["const"] == msg_type


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=5),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.binary(max_size=300))
def test_check_never_raises_on_arbitrary_bytes(topic_: str, payload: bytes) -> None:
    assert isinstance(messages.check(topic_, payload), (Accepted, Rejected, Ignored))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["vitals", "status", "ack"]), json_like)
def test_check_never_raises_on_arbitrary_json(kind: str, doc: object) -> None:
    if isinstance(doc, dict):
        doc = {**vitals_doc(), **doc}
    result = messages.check(topic(kind), json.dumps(doc).encode())
    assert isinstance(result, (Accepted, Rejected))


def test_vitals_with_beat_classes_are_accepted_and_bad_classes_rejected() -> None:
    classes = {"N": 3, "S": 0, "V": 1, "F": 0, "Q": 0}
    doc = protocol.vitals("dev-1", 7, 1_700_000_000_000, 1000, 72, 4, protocol.QUALITY_GOOD,
                          "good", classes)
    got = messages.check(topic("vitals"), encode(doc))
    assert isinstance(got, Accepted) and got.payload["classes"] == classes
    for bad in ({**classes, "X": 1}, {"N": 3}, {**classes, "V": -1}):
        doc["classes"] = bad
        got = messages.check(topic("vitals"), encode(doc))
        assert isinstance(got, Rejected) and got.reason is Reason.SCHEMA
        assert "classes" in got.detail
