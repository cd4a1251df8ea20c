"""Validation of incoming device messages against the v1 JSON Schemas.

Every MQTT message the ingest service receives goes through :func:`check`,
which returns either an :class:`Accepted` message or a :class:`Rejected` one
with a :class:`Reason` and a human-readable detail.  Nothing here raises on
bad input: a rejection is a value to log and count, never a crash.

The checks run cheapest first: size, topic shape, message type, JSON nesting
depth (counted on the bytes before parsing, so a payload nested 5,000 deep never
reaches the recursive parser), JSON, schema, with the payload's type checked
against the topic before the schema and its device id after.

Integers are integers: the schemas' ``"integer"`` means a JSON number written
without a fraction or exponent (``5.0``, ``1e300`` and booleans are refused,
unlike JSON Schema's default, which calls ``5.0`` an integer), and every
numeric field in the v1 schemas has a minimum and a maximum.

Speed (ingest's hot path, ``make bench``): jsonschema takes ~100 us per vitals
message.  Each schema is therefore also compiled into a plain-Python predicate
(:func:`fast_accepts`) that answers only "certainly valid": it implements the
keywords the v1 schemas use (``type``, ``const``, ``enum``, ``minimum``,
``maximum``, ``pattern``, ``minLength``, ``maxLength``, ``required``,
``properties``, ``additionalProperties``) as strictly as or more strictly than
jsonschema.  A document it accepts skips jsonschema; anything else (including
every invalid document, and every schema that uses another keyword, e.g.
status's ``allOf``/``$ref``) goes through the jsonschema validator as before,
so the accept/reject decisions and every rejection's reason and detail are
jsonschema's (cross-checked in tests/test_messages_fast.py).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from enum import Enum
from functools import cache
from importlib import resources
from typing import Any, Callable, Optional

from jsonschema import Draft202012Validator, ValidationError, validators

from firmware.net import protocol

#: Largest payload accepted, in bytes.  Device messages are a few hundred bytes.
MAX_PAYLOAD_BYTES = 16 * 1024

#: Deepest JSON nesting accepted (objects and arrays; device messages use 2).
MAX_JSON_DEPTH = 16

#: Message types a device sends (host -> device types are ignored by ingest).
DEVICE_TYPES = (protocol.MSG_STATUS, protocol.MSG_VITALS, protocol.MSG_ACK, protocol.MSG_EVENT)
HOST_TYPES = (protocol.MSG_CMD, protocol.MSG_ALERT)
ALL_TYPES = DEVICE_TYPES + HOST_TYPES

_TOPIC_PREFIX = protocol.TOPIC_ROOT + "/dev/"


class Reason(str, Enum):
    """Why a message was rejected (the ``reason`` counted by ingest)."""

    OVERSIZED = "oversized"
    BAD_TOPIC = "bad_topic"
    UNKNOWN_TYPE = "unknown_type"
    NOT_JSON = "not_json"
    SCHEMA = "schema"
    DEVICE_MISMATCH = "device_mismatch"
    TYPE_MISMATCH = "type_mismatch"
    TOO_DEEP = "too_deep"  # JSON nested deeper than MAX_JSON_DEPTH
    INTERNAL = "internal"  # an unexpected exception while handling (ingest's guard)


@dataclass(frozen=True)
class Accepted:
    msg_type: str
    device_id: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Rejected:
    reason: Reason
    detail: str


@dataclass(frozen=True)
class Ignored:
    """Valid traffic that is not for ingest (host -> device commands)."""

    msg_type: str


def schema_path(msg_type: str) -> str:
    """Where the schema of ``msg_type`` lives in the installed package."""
    return str(resources.files("host") / "schemas" / "v1" / f"{msg_type}.schema.json")


def _is_strict_integer(checker: object, instance: object) -> bool:
    return type(instance) is int  # not bool, not a float with a zero fraction


def _same(a: Any, b: Any) -> bool:
    """JSON equality with types kept apart: 1.0 is not 1, true is not 1."""
    return type(a) is type(b) and a == b


def _strict_const(validator: Any, const: Any, instance: Any, schema: Any) -> Any:
    if not _same(instance, const):
        yield ValidationError(f"{const!r} was expected")


def _strict_enum(validator: Any, enums: Any, instance: Any, schema: Any) -> Any:
    if not any(_same(instance, member) for member in enums):
        yield ValidationError(f"{instance!r} is not one of {enums!r}")


def ecma_pattern(pattern: str) -> str:
    """``pattern`` with JSON Schema's (ECMA 262) end anchor: an unescaped ``$``
    outside a character class becomes ``\\Z``, because Python's ``$`` also
    matches before a final newline (so ``^[a-z]+$`` would accept ``"abc\\n"``)."""
    out: list[str] = []
    escaped = in_class = False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "$":
            out.append(r"\Z")
            continue
        out.append(ch)
    return "".join(out)


@cache
def _pattern_search(pattern: str) -> Callable[[str], Any]:
    return re.compile(ecma_pattern(pattern)).search


def _strict_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    if validator.is_type(instance, "string") and not _pattern_search(pattern)(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_StrictValidator = validators.extend(
    Draft202012Validator,
    validators={"const": _strict_const, "enum": _strict_enum, "pattern": _strict_pattern},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_strict_integer),
)


@cache
def validator(msg_type: str) -> Draft202012Validator:
    with open(schema_path(msg_type), encoding="utf-8") as f:
        schema = json.load(f)
    Draft202012Validator.check_schema(schema)
    return _StrictValidator(schema)


class _Unsupported(Exception):
    """The schema uses a keyword the fast predicate does not implement."""


#: Keywords that do not constrain an instance.
_ANNOTATIONS = frozenset({"$schema", "$id", "title", "description", "$comment", "examples",
                          "default"})
_NONE = type(None)
#: JSON Schema type -> the Python types json.loads makes for it (integers strict).
_PY_TYPES: dict[str, frozenset[type]] = {
    "integer": frozenset({int}), "number": frozenset({int, float}),
    "string": frozenset({str}), "null": frozenset({_NONE}), "boolean": frozenset({bool}),
    "object": frozenset({dict}), "array": frozenset({list}),
}
_SCALARS = (str, int, float, bool, _NONE)
_Pred = Callable[[Any], bool]


def _compile(schema: Any) -> _Pred:
    """A predicate that is True only for instances ``schema`` certainly accepts
    (False: ask jsonschema).  Raises :class:`_Unsupported` for other keywords."""
    if not isinstance(schema, dict):
        raise _Unsupported(f"schema {schema!r}")
    unknown = set(schema) - _ANNOTATIONS - {
        "type", "const", "enum", "minimum", "maximum", "pattern", "minLength", "maxLength",
        "required", "properties", "additionalProperties"}
    if unknown:
        raise _Unsupported(", ".join(sorted(unknown)))
    preds: list[_Pred] = []
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        allowed = frozenset().union(*(_PY_TYPES[name] for name in names))
        preds.append(lambda x: type(x) in allowed)
    if "const" in schema:
        const = schema["const"]
        if type(const) not in _SCALARS:
            raise _Unsupported("const of a container")
        ctype = type(const)
        preds.append(lambda x: type(x) is ctype and x == const)
    if "enum" in schema:
        if not all(type(v) in _SCALARS for v in schema["enum"]):
            raise _Unsupported("enum of containers")
        members = frozenset((type(v), v) for v in schema["enum"])
        preds.append(lambda x: type(x) in _SCALARS and (type(x), x) in members)
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None or hi is not None:
        lo_ = -math.inf if lo is None else lo
        hi_ = math.inf if hi is None else hi
        preds.append(lambda x: (type(x) is not int and type(x) is not float)
                     or lo_ <= x <= hi_)
    if "pattern" in schema:
        search = _pattern_search(schema["pattern"])  # re.search, ECMA's end anchor
        preds.append(lambda x: type(x) is not str or search(x) is not None)
    if "minLength" in schema or "maxLength" in schema:
        min_len, max_len = schema.get("minLength", 0), schema.get("maxLength", math.inf)
        preds.append(lambda x: type(x) is not str or min_len <= len(x) <= max_len)
    if {"required", "properties", "additionalProperties"} & set(schema):
        additional = schema.get("additionalProperties", True)
        if additional not in (True, False):
            raise _Unsupported("additionalProperties schema")
        required = tuple(schema.get("required", ()))
        props = {key: _compile(sub) for key, sub in schema.get("properties", {}).items()}

        def obj(x: Any) -> bool:
            if type(x) is not dict:
                return True  # object keywords do not apply to other types
            for key in required:
                if key not in x:
                    return False
            for key, value in x.items():
                pred = props.get(key)
                if pred is None:
                    if not additional:
                        return False
                elif not pred(value):
                    return False
            return True

        preds.append(obj)
    if not preds:
        return lambda x: True
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        first, second = preds
        return lambda x: first(x) and second(x)
    return lambda x: all(pred(x) for pred in preds)


@cache
def fast_accepts(msg_type: str) -> Optional[_Pred]:
    """The fast "certainly valid" predicate of ``msg_type``'s schema, or None when
    its schema uses keywords it does not implement (module docstring)."""
    try:
        return _compile(validator(msg_type).schema)
    except _Unsupported:
        return None


def schema_error(msg_type: str, doc: Any) -> Optional[str]:
    """The rejection detail of ``doc`` against ``msg_type``'s schema (jsonschema's
    first error), or None if it is valid."""
    fast = fast_accepts(msg_type)
    if fast is not None and fast(doc):
        return None
    error = next(iter(validator(msg_type).iter_errors(doc)), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{msg_type} at {where}: {error.message}"[:300]


def json_depth_exceeds(payload: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if ``payload`` nests objects/arrays deeper than ``limit`` (brackets in
    strings do not count).  Linear in the payload, no recursion; payloads are
    already bounded by :data:`MAX_PAYLOAD_BYTES`."""
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return False  # the common case: too few brackets to be too deep
    depth = 0
    in_string = escaped = False
    for byte in payload:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


def _encodable(value: Any) -> bool:
    """True if every string in ``value`` (keys too) is valid Unicode text: JSON's
    ``\\uD800`` escapes can make lone surrogates that no store can encode."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_topic(topic: str) -> tuple[str, str] | None:
    """``medge/v1/dev/{id}/{type}`` -> (id, type), else None."""
    if not topic.startswith(_TOPIC_PREFIX):
        return None
    parts = topic[len(_TOPIC_PREFIX) :].split("/")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    try:
        protocol.check_device_id(parts[0])
    except ValueError:
        return None
    return parts[0], parts[1]


def check(topic: str, payload: bytes) -> Accepted | Rejected | Ignored:
    """Validate one MQTT message; never raises on bad input."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Rejected(Reason.OVERSIZED, f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    parsed = parse_topic(topic)
    if parsed is None:
        return Rejected(
            Reason.BAD_TOPIC, f"topic {topic[:200]!r} is not {_TOPIC_PREFIX}<id>/<type>"
        )
    device_id, msg_type = parsed
    if msg_type not in ALL_TYPES:
        return Rejected(
            Reason.UNKNOWN_TYPE, f"message type {msg_type[:64]!r} is not one of {ALL_TYPES}"
        )
    if msg_type in HOST_TYPES:
        return Ignored(msg_type)
    if json_depth_exceeds(payload):
        return Rejected(Reason.TOO_DEEP, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        doc = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return Rejected(Reason.NOT_JSON, str(exc)[:200])
    if not isinstance(doc, dict):
        return Rejected(Reason.NOT_JSON, f"top level is {type(doc).__name__}, not an object")
    if b"\\u" in payload and not _encodable(doc):  # escapes only: raw bytes decoded above
        return Rejected(Reason.NOT_JSON, "a string holds a lone UTF-16 surrogate (\\uD800-\\uDFFF)")
    if doc.get("type") != msg_type:
        return Rejected(
            Reason.TYPE_MISMATCH,
            f"topic type {msg_type!r} != payload type {doc.get('type')!r}"[:200],
        )
    error = schema_error(msg_type, doc)
    if error is not None:
        return Rejected(Reason.SCHEMA, error)
    if doc["device_id"] != device_id:
        return Rejected(
            Reason.DEVICE_MISMATCH,
            f"topic device {device_id!r} != payload device_id {doc['device_id']!r}",
        )
    return Accepted(msg_type, device_id, doc)
