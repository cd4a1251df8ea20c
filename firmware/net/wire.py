"""Canonical JSON encoding of device messages, identical on CPython and MicroPython.

``json.dumps`` differs between the two (key order, spacing, non-ASCII and
float formatting), and the protocol promises the same bytes for the same
message on every platform.  This encoder writes:

- object keys sorted, no whitespace (``{"a":1,"b":[true,null]}``);
- strings with ``"``, ``\\`` and control characters escaped and every
  non-ASCII character as ``\\uXXXX`` (so the bytes are pure ASCII);
- integers in decimal.  Floats are refused: every value a device puts on the
  wire is an integer in a unit named by its key (``hr_bpm``,
  ``temp_centi_c``), so no platform's float printing can change a payload.
"""

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}
_HEX = "0123456789abcdef"


def _encode_str(s, out):
    out.append('"')
    for ch in s:
        code = ord(ch)
        if 0x20 <= code < 0x7F and ch != '"' and ch != "\\":
            out.append(ch)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code > 0xFFFF:  # outside the BMP: UTF-16 surrogate pair, as JSON requires
            code -= 0x10000
            _encode_u(0xD800 | (code >> 10), out)
            _encode_u(0xDC00 | (code & 0x3FF), out)
        else:
            _encode_u(code, out)
    out.append('"')


def _encode_u(code, out):
    out.append(
        "\\u"
        + _HEX[(code >> 12) & 15]
        + _HEX[(code >> 8) & 15]
        + _HEX[(code >> 4) & 15]
        + _HEX[code & 15]
    )


def _encode(obj, out):
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, int):
        out.append(str(obj))
    elif isinstance(obj, str):
        _encode_str(obj, out)
    elif isinstance(obj, dict):
        out.append("{")
        first = True
        for key in sorted(obj):
            if not isinstance(key, str):
                raise ValueError("wire: object keys must be str, got %r" % (key,))
            if not first:
                out.append(",")
            first = False
            _encode_str(key, out)
            out.append(":")
            _encode(obj[key], out)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        out.append("[")
        for i, item in enumerate(obj):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise ValueError("wire: cannot encode %s (integers only, no floats)" % type(obj).__name__)


def encode(obj):
    """Return the canonical JSON text of ``obj`` as ASCII ``bytes``."""
    out = []
    _encode(obj, out)
    return "".join(out).encode()
