"""The fast schema predicate (host.services.messages.fast_accepts) never changes a
decision: whatever it accepts jsonschema accepts, and ``check`` gives the same
result (outcome, reason, detail) as the jsonschema-only path, on many mutated
messages of every device type."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.net import protocol
from firmware.net.wire import encode
from host.services import messages

VITALS = protocol.vitals("dev-1", 7, 1_700_000_000_000, 1000, 72, 4, "good", "good",
                         {"N": 3, "S": 0, "V": 1, "F": 0, "Q": 0})
ACK = {"v": 1, "type": "ack", "device_id": "dev-1", "seq": 3, "ts_ms": 1_700_000_000_000,
       "cmd_id": "c-1", "result": "ok", "reason": "fine", "data": {"x": [1]}}
STATUS = protocol.birth("dev-1", 0, 1_700_000_000_000, {
    "fw_version": "0.1.0", "model_version": "none", "patient_id": "p-1",
    "sample_rate_hz": 250, "boot_id": 1})
BASE = {"vitals": VITALS, "ack": ACK, "status": STATUS}

# Values near every bound and type edge the v1 schemas have.
edge_ints = st.sampled_from([-1, 0, 1, 9, 10, 99, 100, 350, 351, 100_000, 100_001, 3_600_000,
                             3_600_001, 2**53 - 1, 2**53, 32503680000000, 32503680000001,
                             2**64])
scalars = (st.none() | st.booleans() | edge_ints | st.integers()
           | st.floats(allow_nan=False) | st.sampled_from([1.0, 0.0, 72.0, 1e300, -0.0])
           | st.sampled_from(["", "good", "unreliable", "noisy", "lead_off", "ok", "failed",
                              "dev-1", "dev-1\n", "Dev-1", "-dev", "a" * 64, "a" * 65,
                              "vitals", "ack", "status", "online", "offline", "lost", "x" * 257])
           | st.text(max_size=8))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3)
                      | st.dictionaries(st.sampled_from(["N", "S", "V", "F", "Q", "X", "x"]), c,
                                        max_size=6), max_leaves=8)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, dict]:
    kind = draw(st.sampled_from(sorted(BASE)))
    doc = json.loads(json.dumps(BASE[kind]))
    keys = sorted(set(doc) | {"signal", "classes", "incarnation", "extra", "hr_bpm", "reason"})
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(keys))
        if draw(st.booleans()) and key in doc:
            del doc[key]
        else:
            doc[key] = draw(values)
    if draw(st.booleans()) and isinstance(doc.get("classes"), dict):
        doc["classes"][draw(st.sampled_from(["N", "S", "V", "F", "Q", "X"]))] = draw(values)
    return kind, doc


def reference_check(topic: str, payload: bytes, monkeypatch: pytest.MonkeyPatch) -> object:
    with monkeypatch.context() as m:
        m.setattr(messages, "fast_accepts", lambda msg_type: None)  # jsonschema only
        return messages.check(topic, payload)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(mutated())
def test_fast_path_decides_exactly_as_jsonschema(monkeypatch: pytest.MonkeyPatch,
                                                 case: tuple[str, dict]) -> None:
    kind, doc = case
    fast = messages.fast_accepts(kind)
    valid = not list(messages.validator(kind).iter_errors(doc))
    if fast is not None and fast(doc):
        assert valid, doc  # soundness: the fast path never accepts what jsonschema refuses
    payload = json.dumps(doc).encode()
    topic = protocol.topic("dev-1", kind)
    assert messages.check(topic, payload) == reference_check(topic, payload, monkeypatch)


@pytest.mark.parametrize("doc", [
    VITALS, {**VITALS, "hr_bpm": None, "quality": "unreliable"},
    protocol.vitals("dev-1", 0, 0, 100, 10, 0, "good"),
    {**VITALS, "incarnation": "A-b_9"}, ACK,
])
def test_valid_hot_messages_take_the_fast_path(doc: dict) -> None:
    assert messages.fast_accepts(doc["type"])(doc)


def test_status_goes_through_jsonschema() -> None:
    # status uses allOf / if / $ref: no fast predicate, jsonschema decides
    assert messages.fast_accepts("status") is None
    assert isinstance(messages.check(protocol.topic("dev-1", "status"), encode(STATUS)),
                      messages.Accepted)
