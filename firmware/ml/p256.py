"""ECDSA P-256 signature verification in plain Python integers (CPython and MicroPython).

A model update is accepted only with a signature by the fleet's update key
(:mod:`firmware.ml.update`); the host signs with the ``cryptography`` package
(``medge fleet ota``), the device verifies here.  P-256 because it needs only
SHA-256, which every MicroPython port's ``hashlib`` has (Ed25519 needs SHA-512,
which most ports lack).

The curve and the algorithm are those of FIPS 186-4 / SEC 1 v2 (section 4.1.4,
ECDSA verification): ``e`` = the SHA-256 of the message as an integer (256
bits: no truncation for P-256), ``w = s^-1 mod n``, ``u1 = e w``, ``u2 = r w``,
``X = u1 G + u2 Q`` (one pass over both scalars' bits, Shamir's trick, in
Jacobian coordinates: formulas dbl-2001-b for a = -3 and add-2007-bl of the
Explicit-Formulas Database), valid iff ``X`` is not the point at infinity and
``X.x mod n == r``.  The public key must be on the curve (checked).

Only verification, of public data: no secret is handled, so constant time does
not matter.  Speed (``make bench``, host/bench_ota.py, this machine): 9 ms per check
on CPython, 25x ``cryptography``'s OpenSSL in the same run, and 130 ms in the
MicroPython VM; once per update.  Cross-checked against ``cryptography``'s signatures and in
the VM by tests/test_model_update.py.

Encodings: the public key is SEC 1 uncompressed, ``04 || X || Y`` (65 bytes);
the signature is ``r || s`` (64 bytes, big-endian), the IEEE P1363 form.
"""

import hashlib

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5


def _int(data):
    """Big-endian bytes to int (``int.from_bytes`` with positional arguments,
    which MicroPython accepts)."""
    return int.from_bytes(data, "big")


def on_curve(x, y):
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x - 3 * x + B)) % P == 0


def public_key(data):
    """``(x, y)`` of a SEC 1 uncompressed key (65 bytes); ValueError if it is not
    one, or not a point of P-256."""
    if len(data) != 65 or data[0] != 4:
        raise ValueError("the public key must be 65 bytes, 04 || X || Y")
    x, y = _int(data[1:33]), _int(data[33:65])
    if not on_curve(x, y):
        raise ValueError("the public key is not a point of P-256")
    return x, y


def _double(pt):
    x1, y1, z1 = pt
    if not y1 or not z1:
        return (1, 1, 0)
    delta = z1 * z1 % P
    gamma = y1 * y1 % P
    beta = x1 * gamma % P
    alpha = 3 * (x1 - delta) * (x1 + delta) % P
    x3 = (alpha * alpha - 8 * beta) % P
    z3 = ((y1 + z1) * (y1 + z1) - gamma - delta) % P
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % P
    return (x3, y3, z3)


def _add(p1, p2):
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    if not z1:
        return p2
    if not z2:
        return p1
    z1z1 = z1 * z1 % P
    z2z2 = z2 * z2 % P
    u1 = x1 * z2z2 % P
    u2 = x2 * z1z1 % P
    s1 = y1 * z2 * z2z2 % P
    s2 = y2 * z1 * z1z1 % P
    if u1 == u2:
        return _double(p1) if s1 == s2 else (1, 1, 0)
    h = (u2 - u1) % P
    i = 4 * h * h % P
    j = h * i % P
    r = 2 * (s2 - s1) % P
    v = u1 * i % P
    x3 = (r * r - j - 2 * v) % P
    y3 = (r * (v - x3) - 2 * s1 * j) % P
    z3 = ((z1 + z2) * (z1 + z2) - z1z1 - z2z2) * h % P
    return (x3, y3, z3)


def verify(key, digest, signature):
    """True iff ``signature`` (64 bytes ``r || s``) is a valid ECDSA P-256
    signature of the SHA-256 ``digest`` (32 bytes) under ``key`` (from
    :func:`public_key`)."""
    if len(digest) != 32 or len(signature) != 64:
        return False
    r, s = _int(signature[:32]), _int(signature[32:])
    if not (0 < r < N and 0 < s < N):
        return False
    w = pow(s, N - 2, N)
    u1 = _int(digest) * w % N
    u2 = r * w % N
    g = (GX, GY, 1)
    q = (key[0], key[1], 1)
    both = _add(g, q)
    acc = (1, 1, 0)
    for bit in range(255, -1, -1):
        acc = _double(acc)
        b1 = (u1 >> bit) & 1
        b2 = (u2 >> bit) & 1
        if b1 and b2:
            acc = _add(acc, both)
        elif b1:
            acc = _add(acc, g)
        elif b2:
            acc = _add(acc, q)
    x, _, z = acc
    if not z:
        return False
    zinv = pow(z, P - 2, P)
    return x * zinv * zinv % P % N == r


def verify_message(key, message, signature):
    """:func:`verify` of ``message``'s SHA-256."""
    return verify(key, hashlib.sha256(message).digest(), signature)
