"""Quantization arithmetic of the int8 engine, exact in integers.

Requantization constants, computed as TFLite computes them, and the
fixed-point primitives the kernels (:mod:`firmware.ml.tflite.kernels`) are
built from: gemmlowp's ``SaturatingRoundingDoublingHighMul`` and
``RoundingDivideByPOT``, TFLite's ``MultiplyByQuantizedMultiplier``, and the
gemmlowp fixed-point ``exp`` and reciprocal of the int8 SOFTMAX.

Scaling and overflow: the requantization constants are computed as TFLite
computes them (``input_scale * filter_scale / output_scale`` in double from
the float32 scales, ``QuantizeMultiplier``: frexp, round half away from zero,
Q31 significand and a power-of-two shift), but by exact integer emulation of
that IEEE double arithmetic from the float32 bit patterns, so the constants
are identical on ports whose floats are single precision.  A constant is
``(multiplier, left_shift, right_shift, mask, threshold)``
(:func:`_requant_tuple`).  :func:`_mbqm` applies it with gemmlowp's double
rounding: left shift (wrapping to int32 as the reference does), 64-bit product,
round half away from zero and keep the high 32 bits (``_srdhm``), then divide
by a power of two rounding half away from zero (``_rdbpot``); the kernels say
which of them round this way and which round once (kernels module docstring).
The fixed-point SOFTMAX helpers work on int32 raw values (Q0.31, Q5.26) and
saturate where gemmlowp saturates (``_sat_mul_pot``).

Float values: the integer paths here (``_f32_div_round``) give the float32
results on any port; the QUANTIZE kernel uses the faster float path where
floats are IEEE doubles (``firmware.ml.tflite._F64``).  Values are exact on
ports with IEEE single or double floats, not on ports whose floats drop
mantissa bits (MICROPY_OBJ_REPR_C); int8 paths are exact everywhere.
"""

import struct

from firmware.ml.tflite.reader import TfliteError

_INT32_MIN = -2147483648
_INT32_MAX = 2147483647

# ---------------------------------------------------------------------------
# Exact IEEE arithmetic on float32 / double values, in integers, and requantization


def _bitlen(x):
    n = 0
    while x >= 0x100000000:
        x >>= 32
        n += 32
    while x:
        x >>= 1
        n += 1
    return n


def _f32_parts(bits, what):
    """float32 bit pattern -> ``(sign, mantissa, exponent)``: value = sign * m * 2**e."""
    e = (bits >> 23) & 0xFF
    m = bits & 0x7FFFFF
    if e == 0xFF:
        raise TfliteError("%s is not finite" % what)
    if e:
        m |= 0x800000
    else:
        e = 1
    return (-1 if bits >> 31 else 1), m, e - 150


def _round_ratio(n, d, bits):
    """Round ``n / d`` (positive ints) to ``bits`` significant bits, ties to even.

    Returns ``(m, k)`` with ``2**(bits-1) <= m < 2**bits`` and ``m * 2**k`` the
    correctly rounded value (the IEEE rounding of a quotient or product,
    ignoring exponent range; the scales here are far from it).
    """
    k = _bitlen(n) - _bitlen(d) - bits
    top = 1 << bits
    while True:
        if k >= 0:
            num, den = n, d << k
        else:
            num, den = n << -k, d
        q, r = divmod(num, den)
        if q >= top:
            k += 1
        elif q < top >> 1:
            k -= 1
        else:
            break
    r2 = 2 * r
    if r2 > den or (r2 == den and q & 1):
        q += 1
        if q == top:
            q >>= 1
            k += 1
    return q, k


def _round_half_away(m, k):
    """Round the non-negative ``m * 2**k`` to an int, halves away from zero."""
    if k >= 0:
        return m << k
    return (m + (1 << (-k - 1))) >> -k


def _quantize_multiplier(m, k):
    """TFLite ``QuantizeMultiplier`` of the double ``m * 2**k`` (m a 53-bit significand,
    or 0): returns ``(q31_multiplier, shift)``."""
    if m == 0:
        return 0, 0
    shift = k + 53  # frexp: m * 2**k = (m / 2**53) * 2**shift, fraction in [0.5, 1)
    q = (m + (1 << 21)) >> 22  # round(fraction * 2**31), half away from zero
    if q == 1 << 31:
        q >>= 1
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def _scale_multiplier(num_bits, den_bits, what, float32_product=False):
    """``QuantizeMultiplier(prod(num) / prod(den))`` with every factor a float32 scale
    (bit patterns) and the arithmetic that of C doubles: the product of two float32
    values is exact in double; ``float32_product`` rounds it to float32 first (TFLite's
    ``GetQuantizedConvolutionMultipler`` multiplies the scales in float)."""
    n, d, e = 1, 1, 0
    for b in num_bits:
        s, m, k = _f32_parts(b, what)
        if s < 0 or m == 0:
            raise TfliteError("%s: scale must be positive" % what)
        n *= m
        e += k
    if float32_product and len(num_bits) == 2:
        n, k = _round_ratio(n, 1, 24)
        e += k
    for b in den_bits:
        s, m, k = _f32_parts(b, what)
        if s < 0 or m == 0:
            raise TfliteError("%s: scale must be positive" % what)
        d *= m
        e -= k
    q, k = _round_ratio(n, d, 53)
    return _quantize_multiplier(q, k + e)


def _f32_div_round(num, bits):
    """``TfLiteRound(num / scale)`` in float32 (C ``roundf`` of a float32 quotient), for the
    float ``num`` (exactly representable in float32) and the float32 scale ``bits``."""
    if num == 0:
        return 0
    s1, m1, k1 = _f32_parts(struct.unpack("<I", struct.pack("<f", num))[0], "value")
    s2, m2, k2 = _f32_parts(bits, "scale")
    q, k = _round_ratio(m1, m2, 24)
    v = _round_half_away(q, k + k1 - k2)
    return v if s1 * s2 > 0 else -v


def _f32(bits):
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _requant_tuple(mult, shift):
    """Precomputed MultiplyByQuantizedMultiplier constants:
    ``(multiplier, left_shift, right_shift, mask, threshold)``."""
    ls = shift if shift > 0 else 0
    rs = -shift if shift < 0 else 0
    mask = (1 << rs) - 1
    return (mult, ls, rs, mask, mask >> 1)


def _wrap32(x):
    return ((x + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def _srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values."""
    if a == _INT32_MIN and b == _INT32_MIN:
        return _INT32_MAX
    ab = a * b
    if ab >= 0:
        return (ab + 0x40000000) >> 31
    return -((0x3FFFFFFF - ab) >> 31)


def _rdbpot(x, e):
    """gemmlowp RoundingDivideByPOT: ``x / 2**e`` rounded half away from zero."""
    mask = (1 << e) - 1
    th = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if (x & mask) > th else 0)


def _mbqm(x, q):
    """TFLite MultiplyByQuantizedMultiplier (double rounding) with constants ``q``."""
    if q[1]:
        x = _wrap32(x << q[1])
    ab = x * q[0]
    if ab >= 0:
        h = (ab + 0x40000000) >> 31
    else:
        h = -((0x3FFFFFFF - ab) >> 31)
    r = h & q[3]
    h >>= q[2]
    if r > q[4] + (1 if h < 0 else 0):
        h += 1
    return h


# ---------------------------------------------------------------------------
# gemmlowp fixed-point helpers for SOFTMAX (int32 raw values)


def _sat_mul_pot(x, e):
    """gemmlowp SaturatingRoundingMultiplyByPOT<e> for int32 ``x``."""
    if e < 0:
        return _rdbpot(x, -e)
    if e == 0:
        return x
    th = (1 << (31 - e)) - 1
    if x > th:
        return _INT32_MAX
    if x < -th:
        return _INT32_MIN
    return x << e


def _exp_on_interval(a):
    """exp_on_interval_between_negative_one_quarter_and_0_excl, Q0.31 in and out."""
    x = a + (1 << 28)
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    x4_over_4 = _rdbpot(x4, 2)
    t = _sat_mul_pot(_srdhm(x4_over_4 + x3, 715827883) + x2, -1)
    return 1895147668 + _srdhm(1895147668, x + t)


_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))


def _exp_on_negative_values(a):
    """gemmlowp exp_on_negative_values for a Q5.26 input <= 0; Q0.31 result."""
    quarter = 1 << 24
    a_mod = (a & (quarter - 1)) - quarter
    result = _exp_on_interval(_sat_mul_pot(a_mod, 5))
    remainder = a_mod - a
    for exponent, mult in _EXP_BARREL:
        if remainder & (1 << (26 + exponent)):
            result = _srdhm(result, mult)
    if a == 0:
        result = _INT32_MAX
    return result


def _one_over_one_plus_x(a):
    """gemmlowp one_over_one_plus_x_for_x_in_0_1, Q0.31 in and out."""
    s = a + _INT32_MAX
    half_den = (s + (1 if s >= 0 else -1))
    half_den = half_den // 2 if half_den >= 0 else -((-half_den) // 2)
    x = 1515870810 + _srdhm(half_den, -1010580540)
    for _ in range(3):
        hdx = _srdhm(half_den, x)
        one_minus = (1 << 29) - hdx
        x = x + _sat_mul_pot(_srdhm(x, one_minus), 2)
    return _sat_mul_pot(x, 1)
