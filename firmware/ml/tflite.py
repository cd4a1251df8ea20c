"""Pure-Python int8 TFLite interpreter, bit-exact with LiteRT's reference kernels.

For boards without a TFLite runtime (MicroPython) and as a dependency-free
fallback on CPython.  It reads a ``.tflite`` file itself: a minimal flatbuffer
reader (root table, vtables, tables, vectors, strings, unions; little-endian
through ``struct``; every offset bounds-checked) walks the TFLite schema
(version 3): operator codes, one subgraph, tensors, quantization parameters,
buffers, builtin options.  Everything is validated and precomputed in
:class:`Model`'s constructor; :meth:`Model.invoke` only runs the kernels over
activation buffers allocated once (``array('b')``).

Operators (int8 activations, int8 weights with per-tensor or per-channel
scales, int32 bias):

- CONV_2D, DEPTHWISE_CONV_2D (depth multiplier): padding SAME/VALID,
  strides, dilation, fused activation NONE / RELU / RELU6 / RELU_N1_TO_1;
- FULLY_CONNECTED: keep_num_dims, with or without bias, any number of rows;
- MAX_POOL_2D, AVERAGE_POOL_2D (SAME/VALID, strides, fused activation);
- ADD (with NumPy-style broadcasting and fused activation);
- CONCATENATION (inputs and output must share scale and zero point, as the
  int8 reference kernel requires; anything else is rejected);
- RESHAPE, EXPAND_DIMS, SQUEEZE (no copy: the output shares the buffer);
- QUANTIZE (float32 -> int8, and int8 -> int8 requantization), DEQUANTIZE
  (int8 -> float32);
- SOFTMAX (int8 -> int8, the reference kernel's gemmlowp fixed-point path);
- MEAN (int8) is *not* supported; anything else raises
  :class:`UnsupportedModelError` naming the operator.

Scaling and overflow: the requantization constants are computed as TFLite
computes them (``input_scale * filter_scale / output_scale`` in double from
the float32 scales, ``QuantizeMultiplier``: frexp, round half away from zero,
Q31 significand and a power-of-two shift), but by exact integer emulation of
that IEEE double arithmetic from the float32 bit patterns, so the constants
are identical on ports whose floats are single precision.  Accumulators are
exact Python ints (inputs offset by the input zero point, int8 x int8
products summed with the int32 bias); the reference keeps them in int32, so
results agree as long as the reference does not overflow (|acc| < 2**31:
fewer than about 66 000 taps per output).  Requantization follows what
LiteRT's BUILTIN_REF kernels do, found by comparing against them bit for bit
(tests/test_tflite_engine.py): CONV_2D, DEPTHWISE_CONV_2D, ADD and the int8
QUANTIZE use gemmlowp's double rounding (``SaturatingRoundingDoublingHighMul``:
64-bit product, round half away from zero, keep the high 32 bits; then
``RoundingDivideByPOT``: round half away from zero), while FULLY_CONNECTED
rounds once, as TFLite's ``TFLITE_SINGLE_ROUNDING`` variant does
(``(acc * m + 2**(t - 1)) >> t`` with ``t = 31 - shift``); the two differ
when the first rounding lands exactly on a half.  Then the output zero point
is added and the result saturated to the fused activation's range inside
int8.  ADD rescales both inputs to a common Q(20) scale first (left shift 20,
three multipliers), as the reference does.  QUANTIZE divides in float32 and
rounds half away from zero, saturating to int8; DEQUANTIZE computes
``scale * (q - zero_point)`` in double and rounds to float32.

Limits: one subgraph; static shapes (dynamic dimensions take the size stored
in the file, normally 1); tensors up to 4-D for the spatial operators; no
int16, uint8 or int4 tensors; no variables, no custom operators; at most
2**22 elements per tensor.  Float values (QUANTIZE inputs, DEQUANTIZE
outputs) are exact on ports with IEEE single or double floats, not on ports
whose floats drop mantissa bits (MICROPY_OBJ_REPR_C); int8 paths are exact
everywhere.  On MicroPython every output element's 32 x 31-bit product is a
long int (one small heap allocation per output value, none per
multiply-accumulate).
"""

import struct
from array import array

_TFL_IDENT = b"TFL3"

# TensorType (schema.fbs).
_TYPE_NAMES = (
    "FLOAT32 FLOAT16 INT32 UINT8 INT64 STRING BOOL INT16 COMPLEX64 INT8 FLOAT64 "
    "COMPLEX128 UINT64 RESOURCE VARIANT UINT32 UINT16 INT4 BFLOAT16 INT2 UINT4"
)
_FLOAT32 = 0
_INT32 = 2
_INT8 = 9

# BuiltinOperator codes (schema.fbs), names used only in error messages.
_OP_NAMES = (
    "ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE "
    "EMBEDDING_LOOKUP FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D "
    "LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU "
    "RELU_N1_TO_1 RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH "
    "CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD "
    "UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN "
    "SUB DIV SQUEEZE UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN "
    "EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM "
    "ARG_MAX MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN "
    "TRANSPOSE_CONV SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT "
    "SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND "
    "LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD "
    "RANGE RESIZE_NEAREST_NEIGHBOR LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V "
    "UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND COS WHERE RANK ELU REVERSE_SEQUENCE MATRIX_DIAG "
    "QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE NON_MAX_SUPPRESSION_V4 "
    "NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL "
    "PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG REAL "
    "COMPLEX_ABS HASHTABLE HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL "
    "CONV_3D_TRANSPOSE VAR_HANDLE READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS "
    "RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU DYNAMIC_UPDATE_SLICE "
    "RELU_0_TO_1 UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2 "
    "UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR RIGHT_SHIFT"
)
_OP_ADD = 0
_OP_AVERAGE_POOL_2D = 1
_OP_CONCATENATION = 2
_OP_CONV_2D = 3
_OP_DEPTHWISE_CONV_2D = 4
_OP_DEQUANTIZE = 6
_OP_FULLY_CONNECTED = 9
_OP_MAX_POOL_2D = 17
_OP_RESHAPE = 22
_OP_SOFTMAX = 25
_OP_CUSTOM = 32
_OP_SQUEEZE = 43
_OP_EXPAND_DIMS = 70
_OP_QUANTIZE = 114

# Fused activation functions.
_ACT_NAMES = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT")

#: Largest tensor accepted (elements); a corrupt shape fails cleanly instead of exhausting RAM.
_MAX_TENSOR_ELEMENTS = 1 << 22
_INT32_MIN = -2147483648
_INT32_MAX = 2147483647
# True where floats are IEEE doubles (CPython, most MicroPython ports with
# MICROPY_FLOAT_IMPL_DOUBLE); single-precision ports take the exact integer paths.
_F64 = (1.0 + 2.0 ** -40) != 1.0


class TfliteError(ValueError):
    """The buffer is not a valid TFLite model this engine can run; the message says why."""


class UnsupportedModelError(TfliteError):
    """A valid model that uses an operator, type or option this engine does not implement."""


def _op_name(code):
    names = _OP_NAMES.split()
    return names[code] if 0 <= code < len(names) else "BUILTIN_%d" % code


def _type_name(code):
    names = _TYPE_NAMES.split()
    return names[code] if 0 <= code < len(names) else "TYPE_%d" % code


# ---------------------------------------------------------------------------
# Flatbuffer reader


class _Fb:
    """Bounds-checked little-endian flatbuffer access over the whole file."""

    def __init__(self, buf):
        self.b = buf
        self.n = len(buf)

    def need(self, pos, size, what):
        if pos < 0 or pos + size > self.n:
            raise TfliteError("truncated: %s ends at byte %d of %d" % (what, pos + size, self.n))

    def u8(self, pos, what):
        self.need(pos, 1, what)
        return self.b[pos]

    def u16(self, pos, what):
        self.need(pos, 2, what)
        return struct.unpack_from("<H", self.b, pos)[0]

    def u32(self, pos, what):
        self.need(pos, 4, what)
        return struct.unpack_from("<I", self.b, pos)[0]

    def i32(self, pos, what):
        self.need(pos, 4, what)
        return struct.unpack_from("<i", self.b, pos)[0]

    def table(self, pos, what):
        """A table at ``pos``: returns ``(pos, vtable_pos, vtable_len, table_len)``."""
        vt = pos - self.i32(pos, what)
        vtlen = self.u16(vt, "vtable of " + what)
        tlen = self.u16(vt + 2, "vtable of " + what)
        if vtlen < 4 or vtlen & 1:
            raise TfliteError("bad vtable of %s (length %d)" % (what, vtlen))
        self.need(vt, vtlen, "vtable of " + what)
        self.need(pos, tlen, what)
        return (pos, vt, vtlen, tlen, what)

    def field(self, t, i):
        """Absolute position of field ``i`` of table ``t``, or 0 if absent."""
        o = 4 + 2 * i
        if o >= t[2]:
            return 0
        off = struct.unpack_from("<H", self.b, t[1] + o)[0]
        if off == 0:
            return 0
        if off >= t[3]:
            raise TfliteError("bad field %d of %s (offset %d beyond the table)" % (i, t[4], off))
        return t[0] + off

    def scalar(self, t, i, fmt, size, default):
        p = self.field(t, i)
        if not p:
            return default
        self.need(p, size, "field %d of %s" % (i, t[4]))
        return struct.unpack_from(fmt, self.b, p)[0]

    def ref(self, t, i, what):
        """Target position of the offset stored in field ``i``, or None if absent."""
        p = self.field(t, i)
        if not p:
            return None
        target = p + self.u32(p, what)
        self.need(target, 4, what)
        return target

    def subtable(self, t, i, what):
        p = self.ref(t, i, what)
        return None if p is None else self.table(p, what)

    def vector(self, t, i, elem_size, what):
        """``(start, length)`` of the vector in field ``i`` (``(0, 0)`` if absent)."""
        p = self.ref(t, i, what)
        if p is None:
            return 0, 0
        n = self.u32(p, what)
        self.need(p + 4, n * elem_size, what)
        return p + 4, n

    def scalars(self, t, i, code, size, what):
        start, n = self.vector(t, i, size, what)
        if n == 0:
            return ()
        return struct.unpack_from("<%d%s" % (n, code), self.b, start)

    def tables(self, t, i, what):
        start, n = self.vector(t, i, 4, what)
        out = []
        for j in range(n):
            e = start + 4 * j
            name = "%s %d" % (what, j)
            out.append(self.table(e + self.u32(e, name), name))
        return out

    def string(self, t, i, what):
        start, n = self.vector(t, i, 1, what)
        if n == 0:
            return ""
        try:
            return bytes(self.b[start:start + n]).decode("utf-8")
        except UnicodeError:
            raise TfliteError("%s is not valid UTF-8" % what) from None


# ---------------------------------------------------------------------------
# Exact IEEE arithmetic on float32 / double values, in integers


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
# Model description


class TensorInfo:
    """A model input or output: ``name``, ``shape`` (tuple), ``dtype`` ("int8" or
    "float32"), ``scale`` (float; 0.0 for float tensors) and ``zero_point``."""

    def __init__(self, name, shape, dtype, scale, zero_point):
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.scale = scale
        self.zero_point = zero_point

    def __repr__(self):
        return "TensorInfo(name=%r, shape=%r, dtype=%r, scale=%r, zero_point=%r)" % (
            self.name, self.shape, self.dtype, self.scale, self.zero_point)


class _Tensor:
    def __init__(self, index, name, shape, ttype, data, scales, zps, qdim):
        self.index = index
        self.name = name
        self.shape = shape
        self.type = ttype
        self.data = data  # (start, length) of the constant buffer, or None
        self.scales = scales  # float32 bit patterns
        self.zps = zps
        self.qdim = qdim
        n = 1
        for d in shape:
            n *= d
        self.size = n

    def zp(self):
        return self.zps[0] if self.zps else 0


def _prod(dims):
    n = 1
    for d in dims:
        n *= d
    return n


class _Op:
    """Context of one operator while it is validated: names it in every message."""

    def __init__(self, model, index, code, inputs, outputs, opts_type, opts):
        self.model = model
        self.index = index
        self.code = code
        self.name = _op_name(code)
        self.inputs = inputs
        self.outputs = outputs
        self.opts_type = opts_type
        self.opts = opts

    def where(self):
        return "%s (op %d)" % (self.name, self.index)

    def fail(self, msg):
        raise TfliteError("%s: %s" % (self.where(), msg))

    def tensor(self, k, kind="input", optional=False):
        lst = self.inputs if kind == "input" else self.outputs
        if k >= len(lst) or lst[k] < 0:
            if optional:
                return None
            self.fail("missing %s %d" % (kind, k))
        return self.model._tensors[lst[k]]

    def check_type(self, t, types, role):
        if t.type not in types:
            raise UnsupportedModelError("unsupported tensor type %s for %s of %s" % (
                _type_name(t.type), role, self.where()))

    def act(self, t, role):
        """Validate an int8 activation tensor with per-tensor quantization."""
        self.check_type(t, (_INT8,), role)
        if len(t.scales) != 1 or len(t.zps) != 1:
            self.fail("%s %r needs one scale and zero point (has %d)" % (
                role, t.name, len(t.scales)))
        if not -128 <= t.zps[0] <= 127:
            self.fail("%s %r zero point %d is outside int8" % (role, t.name, t.zps[0]))
        _f32_parts(t.scales[0], "%s scale of %s" % (role, self.where()))
        return t

    def const(self, t, role):
        if t.data is None:
            raise UnsupportedModelError("%s of %s must be a constant tensor" % (
                role, self.where()))
        return t

    def opt(self, i, fmt, size, default):
        if self.opts is None:
            return default
        return self.model._fb.scalar(self.opts, i, fmt, size, default)

    def activation_range(self, act, out):
        """TFLite CalculateActivationRangeQuantized for an int8 output."""
        if act not in (0, 1, 2, 3):
            raise UnsupportedModelError("unsupported fused activation %s in %s" % (
                _ACT_NAMES[act] if act < len(_ACT_NAMES) else act, self.where()))
        zp = out.zp()
        lo, hi = -128, 127
        if act == 1:
            lo = max(lo, zp)
        elif act == 3:
            lo = max(lo, zp)
            hi = min(hi, zp + _f32_div_round(6.0, out.scales[0]))
        elif act == 2:
            lo = max(lo, zp + _f32_div_round(-1.0, out.scales[0]))
            hi = min(hi, zp + _f32_div_round(1.0, out.scales[0]))
        return lo, hi


def _out_size(padding, size, k, stride, dil):
    eff = (k - 1) * dil + 1
    if padding == 0:  # SAME
        return (size + stride - 1) // stride
    return (size + stride - eff) // stride


def _pad_amount(stride, dil, size, k, out):
    eff = (k - 1) * dil + 1
    p = ((out - 1) * stride + eff - size) // 2
    return p if p > 0 else 0


def _shape4(op, t, role):
    if len(t.shape) != 4:
        op.fail("%s %r must be 4-D (NHWC), has shape %r" % (role, t.name, t.shape))
    return t.shape


def _spatial(op, inp, out, kh, kw, padding_opt=0, stride_opt=(1, 2), dil_opt=None):
    """Padding/stride/dilation of a windowed op; checks the output shape."""
    padding = op.opt(padding_opt, "<b", 1, 0)
    if padding not in (0, 1):
        raise UnsupportedModelError("unsupported padding %d in %s" % (padding, op.where()))
    sw = op.opt(stride_opt[0], "<i", 4, 0)
    sh = op.opt(stride_opt[1], "<i", 4, 0)
    dw = dh = 1
    if dil_opt is not None:
        dw = op.opt(dil_opt[0], "<i", 4, 1)
        dh = op.opt(dil_opt[1], "<i", 4, 1)
    if sw < 1 or sh < 1 or dw < 1 or dh < 1:
        op.fail("strides and dilations must be >= 1 (got %d, %d, %d, %d)" % (sh, sw, dh, dw))
    n, h, w, _ = inp.shape
    oh = _out_size(padding, h, kh, sh, dh)
    ow = _out_size(padding, w, kw, sw, dw)
    if out.shape[0] != n or out.shape[1] != oh or out.shape[2] != ow:
        op.fail("output shape %r does not match the computed (%d, %d, %d, ...)" % (
            out.shape, n, oh, ow))
    ph = _pad_amount(sh, dh, h, kh, oh)
    pw = _pad_amount(sw, dw, w, kw, ow)
    return sh, sw, dh, dw, ph, pw, oh, ow


# ---------------------------------------------------------------------------
# Kernels.  Each has ``inputs`` / ``outputs`` (tensor indices), ``extra`` (tensor
# index -> sentinel slots it needs after the data), ``macs``, ``bind(bufs)`` and
# ``run()``.


class _Kernel:
    macs = 0
    extra = None

    def __init__(self, op):
        self.inputs = [i for i in op.inputs if i >= 0]
        self.outputs = list(op.outputs)


def _conv_positions(n, h, w, c, oh, ow, sh, sw, dh, dw, ph, pw, kh, kw, sentinel, per_pixel):
    """Window gather lists: one ``(base, rel)`` per output pixel.

    ``rel`` lists the offsets of the window's taps (``kh * kw`` taps, times ``c``
    channels unless ``per_pixel``); interior windows share one list, border windows
    get their own absolute list where a tap outside the input points at ``sentinel``
    (``base`` is then 0).
    """
    chans = (0,) if per_pixel else range(c)
    rel = []
    for ky in range(kh):
        for kx in range(kw):
            for ch in chans:
                rel.append((ky * dh * w + kx * dw) * c + ch)
    positions = []
    for b in range(n):
        for oy in range(oh):
            y0 = oy * sh - ph
            for ox in range(ow):
                x0 = ox * sw - pw
                if y0 >= 0 and x0 >= 0 and y0 + (kh - 1) * dh < h and x0 + (kw - 1) * dw < w:
                    positions.append((((b * h + y0) * w + x0) * c, rel))
                    continue
                lst = []
                for ky in range(kh):
                    y = y0 + ky * dh
                    for kx in range(kw):
                        x = x0 + kx * dw
                        inside = 0 <= y < h and 0 <= x < w
                        for ch in chans:
                            lst.append(((b * h + y) * w + x) * c + ch if inside else sentinel)
                positions.append((0, lst))
    return positions


class _ConvBase(_Kernel):
    def _quant(self, op, inp, filt, bias, out, oc, act):
        op.act(inp, "input 0")
        op.act(out, "output 0")
        op.check_type(filt, (_INT8,), "input 1")
        op.const(filt, "filter")
        ns = len(filt.scales)
        if ns not in (1, oc):
            op.fail("filter has %d scales for %d output channels" % (ns, oc))
        for z in filt.zps:
            if z != 0:
                op.fail("filter zero point %d (int8 weights must be symmetric)" % z)
        if bias is not None:
            op.check_type(bias, (_INT32,), "input 2")
            op.const(bias, "bias")
            if bias.size != oc:
                op.fail("bias has %d values for %d output channels" % (bias.size, oc))
            self.bias = op.model._const_values(bias)
        else:
            self.bias = [0] * oc
        what = "scales of " + op.where()
        self.q = []
        for ch in range(oc):
            fs = filt.scales[ch if ns > 1 else 0]
            m, s = _scale_multiplier((inp.scales[0], fs), (out.scales[0],), what)
            self.q.append(_requant_tuple(m, s))
        self.in_zp = inp.zp()
        self.out_zp = out.zp()
        self.lo, self.hi = op.activation_range(act, out)


class _Conv2D(_ConvBase):
    def __init__(self, op):
        _Kernel.__init__(self, op)
        inp = op.tensor(0)
        filt = op.tensor(1)
        bias = op.tensor(2, optional=True)
        out = op.tensor(0, "output")
        n, h, w, c = _shape4(op, inp, "input 0")
        oc, kh, kw, fc = _shape4(op, filt, "filter")
        _shape4(op, out, "output 0")
        if fc != c:
            raise UnsupportedModelError("%s: grouped convolution (filter depth %d, input "
                                        "depth %d)" % (op.where(), fc, c))
        if out.shape[3] != oc:
            op.fail("output depth %d != filter count %d" % (out.shape[3], oc))
        if kh < 1 or kw < 1 or c < 1:
            op.fail("empty filter %r" % (filt.shape,))
        act = op.opt(3, "<b", 1, 0)
        sh, sw, dh, dw, ph, pw, oh, ow = _spatial(op, inp, out, kh, kw, 0, (1, 2), (4, 5))
        self._quant(op, inp, filt, bias, out, oc, act)
        wts = op.model._const_values(filt)
        k = kh * kw * c
        self.w = [list(wts[o * k:(o + 1) * k]) for o in range(oc)]
        # Fold the input offset into the bias: sum w * (x - zp) = sum w * x - zp * sum w;
        # padding taps read a sentinel equal to zp, so they contribute exactly 0.
        self.badj = [self.bias[o] - self.in_zp * sum(self.w[o]) for o in range(oc)]
        self.sentinel = inp.size
        self.pos = _conv_positions(n, h, w, c, oh, ow, sh, sw, dh, dw, ph, pw, kh, kw,
                                   self.sentinel, False)
        self.extra = {self.inputs[0]: 1}
        self.macs = n * oh * ow * oc * k
        self.chan = list(zip(self.w, self.badj, self.q))

    def bind(self, bufs):
        self.x = bufs[self.inputs[0]]
        self.y = bufs[self.outputs[0]]

    def run(self):
        x = self.x
        y = self.y
        x[self.sentinel] = self.in_zp
        zp = self.out_zp
        lo = self.lo
        hi = self.hi
        chan = self.chan
        o = 0
        for base, rel in self.pos:
            if base:
                patch = [x[base + r] for r in rel]
            else:
                patch = [x[r] for r in rel]
            for w, acc, q in chan:
                acc += sum([a * b for a, b in zip(w, patch)])
                if q[1]:
                    acc = _wrap32(acc << q[1])
                ab = acc * q[0]
                if ab >= 0:
                    h = (ab + 0x40000000) >> 31
                else:
                    h = -((0x3FFFFFFF - ab) >> 31)
                r = h & q[3]
                h >>= q[2]
                if r > q[4] + (1 if h < 0 else 0):
                    h += 1
                h += zp
                y[o] = lo if h < lo else (hi if h > hi else h)
                o += 1


class _DepthwiseConv2D(_ConvBase):
    def __init__(self, op):
        _Kernel.__init__(self, op)
        inp = op.tensor(0)
        filt = op.tensor(1)
        bias = op.tensor(2, optional=True)
        out = op.tensor(0, "output")
        n, h, w, c = _shape4(op, inp, "input 0")
        one, kh, kw, oc = _shape4(op, filt, "filter")
        _shape4(op, out, "output 0")
        dm = op.opt(3, "<i", 4, 0)
        if dm < 1:
            dm = oc // c if c and oc % c == 0 else 0
        if one != 1 or oc != c * dm or out.shape[3] != oc:
            op.fail("filter shape %r does not fit input depth %d x depth multiplier %d" % (
                filt.shape, c, dm))
        if kh < 1 or kw < 1 or c < 1:
            op.fail("empty filter %r" % (filt.shape,))
        act = op.opt(4, "<b", 1, 0)
        sh, sw, dh, dw, ph, pw, oh, ow = _spatial(op, inp, out, kh, kw, 0, (1, 2), (5, 6))
        self._quant(op, inp, filt, bias, out, oc, act)
        wts = op.model._const_values(filt)
        taps = kh * kw
        self.w = [[wts[t * oc + o] for t in range(taps)] for o in range(oc)]
        self.badj = [self.bias[o] - self.in_zp * sum(self.w[o]) for o in range(oc)]
        self.sentinel = inp.size
        self.pos = _conv_positions(n, h, w, c, oh, ow, sh, sw, dh, dw, ph, pw, kh, kw,
                                   self.sentinel, True)
        self.c = c
        self.extra = {self.inputs[0]: c}
        self.macs = n * oh * ow * oc * taps
        # Per input channel: the (weights, bias, requant) of its dm output channels.
        self.groups = [list(zip(self.w[ic * dm:(ic + 1) * dm], self.badj[ic * dm:(ic + 1) * dm],
                                self.q[ic * dm:(ic + 1) * dm])) for ic in range(c)]

    def bind(self, bufs):
        self.x = bufs[self.inputs[0]]
        self.y = bufs[self.outputs[0]]

    def run(self):
        x = self.x
        y = self.y
        s = self.sentinel
        for i in range(self.c):
            x[s + i] = self.in_zp
        zp = self.out_zp
        lo = self.lo
        hi = self.hi
        groups = self.groups
        o = 0
        for base, rel in self.pos:
            ic = base
            for grp in groups:
                patch = [x[ic + r] for r in rel]
                ic += 1
                for w, acc, q in grp:
                    acc += sum([a * b for a, b in zip(w, patch)])
                    if q[1]:
                        acc = _wrap32(acc << q[1])
                    ab = acc * q[0]
                    if ab >= 0:
                        h = (ab + 0x40000000) >> 31
                    else:
                        h = -((0x3FFFFFFF - ab) >> 31)
                    r = h & q[3]
                    h >>= q[2]
                    if r > q[4] + (1 if h < 0 else 0):
                        h += 1
                    h += zp
                    y[o] = lo if h < lo else (hi if h > hi else h)
                    o += 1


class _FullyConnected(_ConvBase):
    def __init__(self, op):
        _Kernel.__init__(self, op)
        inp = op.tensor(0)
        filt = op.tensor(1)
        bias = op.tensor(2, optional=True)
        out = op.tensor(0, "output")
        if len(filt.shape) != 2:
            op.fail("weights must be 2-D, have shape %r" % (filt.shape,))
        units, depth = filt.shape
        if depth < 1 or inp.size % depth:
            op.fail("input size %d is not a multiple of the weights' depth %d" % (
                inp.size, depth))
        rows = inp.size // depth
        if out.size != rows * units:
            op.fail("output shape %r does not hold %d rows of %d" % (out.shape, rows, units))
        act = op.opt(0, "<b", 1, 0)
        fmt = op.opt(1, "<b", 1, 0)
        if fmt != 0:
            raise UnsupportedModelError("unsupported weights format %d in %s" % (
                fmt, op.where()))
        if len(filt.scales) > 1:
            self._quant(op, inp, filt, bias, out, units, act)
        else:
            # Per-tensor: TFLite's GetQuantizedConvolutionMultipler multiplies the two
            # scales in float32 before dividing in double.
            self._quant(op, inp, filt, bias, out, units, act)
            m, s = _scale_multiplier((inp.scales[0], filt.scales[0]), (out.scales[0],),
                                     "scales of " + op.where(), float32_product=True)
            self.q = [_requant_tuple(m, s)] * units
        wts = op.model._const_values(filt)
        self.w = [list(wts[u * depth:(u + 1) * depth]) for u in range(units)]
        self.badj = [self.bias[u] - self.in_zp * sum(self.w[u]) for u in range(units)]
        self.rows = rows
        self.depth = depth
        self.macs = rows * units * depth
        # LiteRT's int8 FULLY_CONNECTED rounds once (TFLITE_SINGLE_ROUNDING's
        # MultiplyByQuantizedMultiplier: (acc * m + 2**(t - 1)) >> t, t = 31 - shift),
        # unlike its CONV_2D; verified bit for bit against BUILTIN_REF by the tests.
        self.chan = []
        for w, badj, q in zip(self.w, self.badj, self.q):
            t = 31 + q[2] - q[1]
            self.chan.append((w, badj, q[0], t, 1 << (t - 1)))

    def bind(self, bufs):
        self.x = bufs[self.inputs[0]]
        self.y = bufs[self.outputs[0]]

    def run(self):
        x = self.x
        y = self.y
        zp = self.out_zp
        lo = self.lo
        hi = self.hi
        chan = self.chan
        d = self.depth
        o = 0
        for row in range(self.rows):
            patch = x[row * d:(row + 1) * d] if row else x
            for w, acc, m, t, rnd in chan:
                acc += sum([a * b for a, b in zip(w, patch)])
                h = (acc * m + rnd) >> t
                h += zp
                y[o] = lo if h < lo else (hi if h > hi else h)
                o += 1


class _Pool(_Kernel):
    def __init__(self, op, is_max):
        _Kernel.__init__(self, op)
        inp = op.act(op.tensor(0), "input 0")
        out = op.act(op.tensor(0, "output"), "output 0")
        n, h, w, c = _shape4(op, inp, "input 0")
        _shape4(op, out, "output 0")
        if out.shape[3] != c:
            op.fail("output depth %d != input depth %d" % (out.shape[3], c))
        kw = op.opt(3, "<i", 4, 0)
        kh = op.opt(4, "<i", 4, 0)
        if kw < 1 or kh < 1:
            op.fail("filter size must be >= 1 (got %d x %d)" % (kh, kw))
        act = op.opt(5, "<b", 1, 0)
        sh, sw, _, _, ph, pw, oh, ow = _spatial(op, inp, out, kh, kw, 0, (1, 2))
        self.lo, self.hi = op.activation_range(act, out)
        self.is_max = is_max
        self.c = c
        self.pos = []
        for b in range(n):
            for oy in range(oh):
                y0 = oy * sh - ph
                for ox in range(ow):
                    x0 = ox * sw - pw
                    pix = []
                    # Only the taps inside the input (the reference clips the window).
                    for y in range(max(y0, 0), min(y0 + kh, h)):
                        for x in range(max(x0, 0), min(x0 + kw, w)):
                            pix.append(((b * h + y) * w + x) * c)
                    if not pix:
                        op.fail("a pooling window lies entirely in the padding")
                    self.pos.append(pix)

    def bind(self, bufs):
        self.x = bufs[self.inputs[0]]
        self.y = bufs[self.outputs[0]]

    def run(self):
        x = self.x
        y = self.y
        lo = self.lo
        hi = self.hi
        chans = range(self.c)
        o = 0
        if self.is_max:
            for pix in self.pos:
                for ch in chans:
                    v = max([x[i + ch] for i in pix])
                    y[o] = lo if v < lo else (hi if v > hi else v)
                    o += 1
            return
        for pix in self.pos:
            cnt = len(pix)
            half = cnt // 2
            for ch in chans:
                acc = sum([x[i + ch] for i in pix])
                if acc > 0:
                    v = (acc + half) // cnt
                else:
                    v = -((half - acc) // cnt)
                y[o] = lo if v < lo else (hi if v > hi else v)
                o += 1


def _broadcast_index(out_shape, in_shape):
    """For each flat output index, the flat index into an input broadcast to it."""
    rank = len(out_shape)
    shape = (1,) * (rank - len(in_shape)) + tuple(in_shape)
    strides = [0] * rank
    s = 1
    for d in range(rank - 1, -1, -1):
        strides[d] = s if shape[d] != 1 else 0
        s *= shape[d]
    idx = [0]
    for d in range(rank):
        nxt = []
        for base in idx:
            for j in range(out_shape[d]):
                nxt.append(base + j * strides[d])
        idx = nxt
    return idx


class _Add(_Kernel):
    def __init__(self, op):
        _Kernel.__init__(self, op)
        a = op.act(op.tensor(0), "input 0")
        b = op.act(op.tensor(1), "input 1")
        out = op.act(op.tensor(0, "output"), "output 0")
        act = op.opt(0, "<b", 1, 0)
        self.lo, self.hi = op.activation_range(act, out)
        for t in (a, b):
            if len(t.shape) > len(out.shape):
                op.fail("input %r has more dimensions than the output" % t.name)
            pad = (1,) * (len(out.shape) - len(t.shape)) + tuple(t.shape)
            for di, do in zip(pad, out.shape):
                if di != do and di != 1:
                    op.fail("input shape %r does not broadcast to %r" % (t.shape, out.shape))
        n = out.size
        self.ia = None if a.size == n else _broadcast_index(out.shape, a.shape)
        self.ib = None if b.size == n else _broadcast_index(out.shape, b.shape)
        self.n = n
        # TFLite add.cc: left_shift 20; twice_max = 2 * max(s1, s2) (float, exact);
        # in multipliers s_i / twice_max and out twice_max / (2**20 * s_out), in double.
        sa, sb, so = a.scales[0], b.scales[0], out.scales[0]
        smax = sa if _f32(sa) >= _f32(sb) else sb
        twice = smax + (1 << 23)  # float32 bits of 2 * smax: exponent + 1
        two20 = so + (20 << 23)  # float32 bits of 2**20 * s_out
        what = "scales of " + op.where()
        if (smax >> 23) & 0xFF >= 0xFE or (so >> 23) & 0xFF >= 0xEB or not (so >> 23) & 0xFF:
            op.fail("scales out of range")
        self.qa = _requant_tuple(*_scale_multiplier((sa,), (twice,), what))
        self.qb = _requant_tuple(*_scale_multiplier((sb,), (twice,), what))
        self.qo = _requant_tuple(*_scale_multiplier((twice,), (two20,), what))
        self.za = -a.zp()
        self.zb = -b.zp()
        self.zo = out.zp()

    def bind(self, bufs):
        self.a = bufs[self.inputs[0]]
        self.b = bufs[self.inputs[1]]
        self.y = bufs[self.outputs[0]]

    def run(self):
        a = self.a
        b = self.b
        y = self.y
        ia = self.ia
        ib = self.ib
        qa = self.qa
        qb = self.qb
        qo = self.qo
        za = self.za
        zb = self.zb
        zo = self.zo
        lo = self.lo
        hi = self.hi
        for i in range(self.n):
            va = a[ia[i] if ia else i] + za
            vb = b[ib[i] if ib else i] + zb
            s = _mbqm(va << 20, qa) + _mbqm(vb << 20, qb)
            v = _mbqm(s, qo) + zo
            y[i] = lo if v < lo else (hi if v > hi else v)


class _Concat(_Kernel):
    def __init__(self, op):
        _Kernel.__init__(self, op)
        out = op.act(op.tensor(0, "output"), "output 0")
        rank = len(out.shape)
        axis = op.opt(0, "<i", 4, 0)
        if axis < 0:
            axis += rank
        if not 0 <= axis < rank:
            op.fail("axis %d out of range for rank %d" % (axis, rank))
        if op.opt(1, "<b", 1, 0) != 0:
            raise UnsupportedModelError("fused activation in %s" % op.where())
        outer = _prod(out.shape[:axis])
        total = 0
        self.copies = []
        chunks = []
        for k in range(len(op.inputs)):
            t = op.act(op.tensor(k), "input %d" % k)
            if t.scales[0] != out.scales[0] or t.zp() != out.zp():
                raise UnsupportedModelError(
                    "%s: input %d scale/zero point (%r, %d) differ from the output's (%r, %d); "
                    "the int8 reference kernel requires them equal" % (
                        op.where(), k, _f32(t.scales[0]), t.zp(), _f32(out.scales[0]),
                        out.zp()))
            if len(t.shape) != rank:
                op.fail("input %d has rank %d, output %d" % (k, len(t.shape), rank))
            for d in range(rank):
                if d != axis and t.shape[d] != out.shape[d]:
                    op.fail("input %d shape %r does not fit output %r" % (k, t.shape, out.shape))
            chunks.append(_prod(t.shape[axis:]))
            total += t.shape[axis]
        if total != out.shape[axis]:
            op.fail("inputs add up to %d along axis %d, output has %d" % (
                total, axis, out.shape[axis]))
        dst = 0
        for o in range(outer):
            for k, ch in enumerate(chunks):
                self.copies.append((k, o * ch, dst, ch))
                dst += ch

    def bind(self, bufs):
        self.srcs = [bufs[i] for i in self.inputs]
        self.y = bufs[self.outputs[0]]

    def run(self):
        y = self.y
        srcs = self.srcs
        for k, s, d, n in self.copies:
            src = srcs[k]
            for j in range(n):
                y[d + j] = src[s + j]


class _Quantize(_Kernel):
    def __init__(self, op):
        _Kernel.__init__(self, op)
        inp = op.tensor(0)
        out = op.act(op.tensor(0, "output"), "output 0")
        op.check_type(inp, (_FLOAT32, _INT8), "input 0")
        if inp.size != out.size:
            op.fail("input and output sizes differ")
        self.n = out.size
        self.zo = out.zp()
        self.from_float = inp.type == _FLOAT32
        if self.from_float:
            self.bits = out.scales[0]
            self.scale = _f32(out.scales[0])
        else:
            op.act(inp, "input 0")
            m, s = _scale_multiplier((inp.scales[0],), (out.scales[0],),
                                     "scales of " + op.where())
            self.q = _requant_tuple(m, s)
            self.zi = inp.zp()

    def bind(self, bufs):
        self.x = bufs[self.inputs[0]]
        self.y = bufs[self.outputs[0]]

    def run(self):
        x = self.x
        y = self.y
        zo = self.zo
        if self.from_float:
            s = self.scale
            for i in range(self.n):
                if _F64:
                    # float32 quotient: the double quotient of two float32 values rounded
                    # to float32 is the correctly rounded float32 quotient.
                    f = struct.unpack("<f", struct.pack("<f", x[i] / s))[0]
                    v = int(f + 0.5) if f >= 0 else -int(0.5 - f)
                else:
                    v = _f32_div_round(x[i], self.bits)
                v += zo
                y[i] = -128 if v < -128 else (127 if v > 127 else v)
            return
        q = self.q
        zi = self.zi
        for i in range(self.n):
            v = _mbqm(x[i] - zi, q) + zo
            y[i] = -128 if v < -128 else (127 if v > 127 else v)


class _Dequantize(_Kernel):
    def __init__(self, op):
        _Kernel.__init__(self, op)
        inp = op.act(op.tensor(0), "input 0")
        out = op.tensor(0, "output")
        op.check_type(out, (_FLOAT32,), "output 0")
        if inp.size != out.size:
            op.fail("input and output sizes differ")
        self.n = out.size
        self.scale = _f32(inp.scales[0])
        self.zp = inp.zp()

    def bind(self, bufs):
        self.x = bufs[self.inputs[0]]
        self.y = bufs[self.outputs[0]]

    def run(self):
        x = self.x
        y = self.y
        s = self.scale
        zp = self.zp
        for i in range(self.n):
            y[i] = s * (x[i] - zp)  # exact in double; the array store rounds to float32


# gemmlowp fixed-point helpers for SOFTMAX (int32 raw values).


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


class _Softmax(_Kernel):
    def __init__(self, op):
        _Kernel.__init__(self, op)
        inp = op.act(op.tensor(0), "input 0")
        out = op.act(op.tensor(0, "output"), "output 0")
        if out.zp() != -128 or out.scales[0] != 0x3B800000:  # 1 / 256
            op.fail("int8 output must have scale 1/256 and zero point -128")
        if inp.size != out.size or not inp.shape or inp.shape[-1] < 1:
            op.fail("input and output shapes differ or are empty")
        beta_bits = op.opt(0, "<I", 4, 0)
        # PreprocessSoftmaxScaling(beta, input_scale, 5): min(beta * s * 2**26, 2**31 - 1)
        # as a double, then QuantizeMultiplierGreaterThanOne.
        s1, m1, k1 = _f32_parts(beta_bits, "softmax beta")
        _, m2, k2 = _f32_parts(inp.scales[0], "softmax input scale")
        if s1 < 0 or m1 == 0:
            op.fail("beta must be positive")
        m, k = _round_ratio(m1 * m2, 1, 53)
        k += k1 + k2 + 26
        if (m << k if k >= 0 else m) >= (_INT32_MAX if k >= 0 else _INT32_MAX << -k):
            m, k = _round_ratio(_INT32_MAX, 1, 53)
        self.mult, self.shift = _quantize_multiplier(m, k)
        if self.shift < 0:
            op.fail("softmax input scale too small")
        # CalculateInputRadius(5, shift): floor(31 * 2**26 / 2**shift).
        self.diff_min = -((31 << 26) >> self.shift)
        self.depth = inp.shape[-1]
        self.outer = inp.size // self.depth

    def bind(self, bufs):
        self.x = bufs[self.inputs[0]]
        self.y = bufs[self.outputs[0]]

    def run(self):
        x = self.x
        y = self.y
        d = self.depth
        mult = self.mult
        shift = self.shift
        dmin = self.diff_min
        for row in range(self.outer):
            base = row * d
            vals = [x[base + c] for c in range(d)]
            mx = max(vals)
            exps = []
            total = 0
            for v in vals:
                diff = v - mx
                if diff >= dmin:
                    e = _exp_on_negative_values(_srdhm(diff << shift, mult))
                    exps.append(e)
                    total += _rdbpot(e, 12)
                else:
                    exps.append(None)
            # GetReciprocal(total, 12)
            total &= 0xFFFFFFFF
            lz = 32 - _bitlen(total)
            over = 12 - lz
            shifted = ((total << lz) & 0xFFFFFFFF) - (1 << 31)
            shifted = _wrap32(shifted)
            scale = _one_over_one_plus_x(shifted)
            for c in range(d):
                e = exps[c]
                if e is None:
                    y[base + c] = -128
                    continue
                v = _rdbpot(_srdhm(scale, e), over + 31 - 8) - 128
                y[base + c] = -128 if v < -128 else (127 if v > 127 else v)


# ---------------------------------------------------------------------------
# The model


_RESHAPES = (_OP_RESHAPE, _OP_EXPAND_DIMS, _OP_SQUEEZE)


class Model:
    """An int8 TFLite model, parsed, validated and ready to :meth:`invoke`.

    ``buf``: the whole ``.tflite`` file (bytes, bytearray or memoryview).
    Raises :class:`TfliteError` (a ValueError) naming the problem for anything
    malformed, and :class:`UnsupportedModelError` for operators, types or options
    this engine does not implement.

    Attributes: ``inputs`` / ``outputs`` (lists of :class:`TensorInfo`),
    ``arena_bytes`` (peak bytes of simultaneously live activation tensors under a
    greedy first-fit lifetime plan), ``macs`` (multiply-accumulates per invoke in
    conv / depthwise / fully-connected) and ``weights_bytes`` (bytes of constant
    tensors the operators use).
    """

    def __init__(self, buf):
        if not isinstance(buf, (bytes, bytearray, memoryview)):
            raise TfliteError("model must be bytes, bytearray or memoryview, got %s" % (
                type(buf).__name__,))
        fb = self._fb = _Fb(buf)
        if fb.n < 8:
            raise TfliteError("truncated: the file has %d bytes, a TFLite model needs at "
                              "least 8" % fb.n)
        ident = bytes(buf[4:8])
        if ident != _TFL_IDENT:
            raise TfliteError("not a TFLite model (file identifier %r, expected %r)" % (
                ident, _TFL_IDENT))
        root = fb.table(fb.u32(0, "root offset"), "model")
        version = fb.scalar(root, 0, "<I", 4, 0)
        if version != 3:
            raise TfliteError("unsupported schema version %d (expected 3)" % version)
        self._opcodes = []
        for t in fb.tables(root, 1, "operator code"):
            dep = fb.scalar(t, 0, "<b", 1, 0)
            code = fb.scalar(t, 3, "<i", 4, 0)
            code = max(code, dep)
            custom = fb.string(t, 1, "custom code") if code == _OP_CUSTOM else ""
            self._opcodes.append((code, custom))
        subgraphs = fb.tables(root, 2, "subgraph")
        if len(subgraphs) != 1:
            raise UnsupportedModelError("the model has %d subgraphs; exactly one is supported"
                                        % len(subgraphs))
        sg = subgraphs[0]
        self._buffers = []
        for k, t in enumerate(fb.tables(root, 4, "buffer")):
            start, n = fb.vector(t, 0, 1, "buffer %d" % k)
            off = fb.scalar(t, 1, "<Q", 8, 0)
            if off > 1:
                size = fb.scalar(t, 2, "<Q", 8, 0)
                fb.need(off, size, "buffer %d" % k)
                start, n = off, size
            self._buffers.append((start, n))
        self._tensors = []
        for k, t in enumerate(fb.tables(sg, 0, "tensor")):
            self._tensors.append(self._parse_tensor(k, t))
        nt = len(self._tensors)
        self._in_idx = list(fb.scalars(sg, 1, "i", 4, "subgraph inputs"))
        self._out_idx = list(fb.scalars(sg, 2, "i", 4, "subgraph outputs"))
        for role, lst in (("input", self._in_idx), ("output", self._out_idx)):
            for i in lst:
                if not 0 <= i < nt:
                    raise TfliteError("model %s tensor index %d out of range (%d tensors)" % (
                        role, i, nt))
        if not self._in_idx or not self._out_idx:
            raise TfliteError("the model has no inputs or no outputs")
        self._build(fb, sg, nt)

    # -- parsing --------------------------------------------------------------

    def _parse_tensor(self, k, t):
        fb = self._fb
        what = "tensor %d" % k
        shape = tuple(fb.scalars(t, 0, "i", 4, what + " shape"))
        ttype = fb.scalar(t, 1, "<b", 1, 0)
        bidx = fb.scalar(t, 2, "<I", 4, 0)
        name = fb.string(t, 3, what + " name")
        for d in shape:
            if d < 0:
                raise TfliteError("%s %r has a negative dimension %r" % (what, name, shape))
        if not 0 <= bidx < max(len(self._buffers), 1):
            raise TfliteError("%s %r refers to buffer %d of %d" % (
                what, name, bidx, len(self._buffers)))
        data = None
        if self._buffers and self._buffers[bidx][1]:
            data = self._buffers[bidx]
        scales = ()
        zps = ()
        qdim = 0
        q = fb.subtable(t, 4, what + " quantization")
        if q is not None:
            scales = fb.scalars(q, 2, "I", 4, what + " scales")
            zps = fb.scalars(q, 3, "q", 8, what + " zero points")
            qdim = fb.scalar(q, 6, "<i", 4, 0)
            if fb.scalar(q, 4, "<B", 1, 0):
                raise UnsupportedModelError("%s %r uses custom quantization" % (what, name))
            if zps and len(zps) != len(scales):
                raise TfliteError("%s %r has %d scales but %d zero points" % (
                    what, name, len(scales), len(zps)))
            if not zps and scales:
                zps = (0,) * len(scales)
        tensor = _Tensor(k, name, shape, ttype, data, scales, zps, qdim)
        if tensor.size > _MAX_TENSOR_ELEMENTS:
            raise UnsupportedModelError("%s %r has %d elements (shape %r); the limit is %d" % (
                what, name, tensor.size, shape, _MAX_TENSOR_ELEMENTS))
        if data is not None:
            sizes = {_FLOAT32: 4, _INT32: 4, _INT8: 1}
            es = sizes.get(ttype)
            if es is not None and data[1] < tensor.size * es:
                raise TfliteError("truncated: buffer %d of %s %r holds %d bytes, shape %r "
                                  "needs %d" % (bidx, what, name, data[1], shape,
                                                tensor.size * es))
        return tensor

    def _const_values(self, t):
        start = t.data[0]
        if t.type == _INT8:
            return struct.unpack_from("<%db" % t.size, self._fb.b, start)
        if t.type == _INT32:
            return struct.unpack_from("<%di" % t.size, self._fb.b, start)
        raise UnsupportedModelError("unsupported constant tensor type %s (%r)" % (
            _type_name(t.type), t.name))

    def _build(self, fb, sg, nt):
        kernels = []
        alias = list(range(nt))
        macs = 0
        weight_bufs = {}
        for k, t in enumerate(fb.tables(sg, 3, "operator")):
            oi = fb.scalar(t, 0, "<I", 4, 0)
            if oi >= len(self._opcodes):
                raise TfliteError("operator %d uses opcode %d of %d" % (
                    k, oi, len(self._opcodes)))
            code, custom = self._opcodes[oi]
            ins = list(fb.scalars(t, 1, "i", 4, "operator %d inputs" % k))
            outs = list(fb.scalars(t, 2, "i", 4, "operator %d outputs" % k))
            for i in ins + outs:
                if not -1 <= i < nt:
                    raise TfliteError("operator %d refers to tensor %d of %d" % (k, i, nt))
            if not outs:
                raise TfliteError("operator %d has no outputs" % k)
            opts_type = fb.scalar(t, 3, "<B", 1, 0)
            opts = fb.subtable(t, 4, "options of operator %d" % k)
            op = _Op(self, k, code, ins, outs, opts_type, opts)
            if code == _OP_CUSTOM:
                raise UnsupportedModelError("unsupported operator CUSTOM %r (op %d)" % (
                    custom, k))
            if code in _RESHAPES:
                src = op.tensor(0)
                dst = op.tensor(0, "output")
                op.check_type(src, (_INT8, _FLOAT32), "input 0")
                if dst.type != src.type or dst.size != src.size:
                    op.fail("output %r (%s, %d values) does not match input %r (%s, %d)" % (
                        dst.name, _type_name(dst.type), dst.size, src.name,
                        _type_name(src.type), src.size))
                if dst.index in self._in_idx:
                    op.fail("writes a model input")
                alias[dst.index] = alias[src.index]
                continue
            if code == _OP_CONV_2D:
                kern = _Conv2D(op)
            elif code == _OP_DEPTHWISE_CONV_2D:
                kern = _DepthwiseConv2D(op)
            elif code == _OP_FULLY_CONNECTED:
                kern = _FullyConnected(op)
            elif code == _OP_MAX_POOL_2D:
                kern = _Pool(op, True)
            elif code == _OP_AVERAGE_POOL_2D:
                kern = _Pool(op, False)
            elif code == _OP_ADD:
                kern = _Add(op)
            elif code == _OP_CONCATENATION:
                kern = _Concat(op)
            elif code == _OP_QUANTIZE:
                kern = _Quantize(op)
            elif code == _OP_DEQUANTIZE:
                kern = _Dequantize(op)
            elif code == _OP_SOFTMAX:
                kern = _Softmax(op)
            else:
                raise UnsupportedModelError("unsupported operator %s (op %d)" % (
                    _op_name(code), k))
            if len(outs) != 1:
                op.fail("expected one output, got %d" % len(outs))
            out = self._tensors[outs[0]]
            if out.data is not None or outs[0] in self._in_idx:
                op.fail("output %r is a constant or a model input" % out.name)
            macs += kern.macs
            kern.step = len(kernels)
            kernels.append(kern)
            if code in (_OP_CONV_2D, _OP_DEPTHWISE_CONV_2D, _OP_FULLY_CONNECTED):
                for i in ins[1:]:
                    if i >= 0:
                        tt = self._tensors[i]
                        weight_bufs[tt.data] = tt.data[1]
        self._kernels = kernels
        self.macs = macs
        self.weights_bytes = sum(weight_bufs.values())
        self._allocate(kernels, alias, nt)

    def _allocate(self, kernels, alias, nt):
        """One buffer per alias root; lifetimes and the greedy arena plan."""

        def root(i):
            while alias[i] != i:
                i = alias[i]
            return i

        data_inputs = set()
        extra = {}
        first = {}
        last = {}
        end = len(kernels)
        for i in self._in_idx:
            r = root(i)
            first[r] = -1
        for kern in kernels:
            ins = kern.inputs
            if isinstance(kern, _ConvBase):
                ins = ins[:1]
            data_inputs.update(ins)
            for i in ins:
                r = root(i)
                last[r] = max(last.get(r, -1), kern.step)
            for i in kern.outputs:
                r = root(i)
                if r in first:
                    raise TfliteError("tensor %r is written twice" % self._tensors[r].name)
                first[r] = kern.step
            for i, n in (kern.extra or {}).items():
                r = root(i)
                extra[r] = max(extra.get(r, 0), n)
        for i in self._out_idx:
            last[root(i)] = end
        bufs = [None] * nt
        arena = []
        for i in range(nt):
            r = root(i)
            if bufs[r] is None and (r in first or r in last or i in data_inputs):
                t = self._tensors[r]
                if t.type not in (_INT8, _FLOAT32):
                    raise UnsupportedModelError("unsupported tensor type %s for %r" % (
                        _type_name(t.type), t.name))
                code = "b" if t.type == _INT8 else "f"
                if t.data is not None:
                    vals = struct.unpack_from("<%d%s" % (t.size, code), self._fb.b, t.data[0])
                    b = array(code, vals)
                    for _ in range(extra.get(r, 0)):
                        b.append(0)
                else:
                    if r not in first:
                        raise TfliteError("tensor %r is read before anything writes it" %
                                          t.name)
                    b = array(code, bytes(t.size + extra.get(r, 0))) if code == "b" else \
                        array(code, [0.0] * (t.size + extra.get(r, 0)))
                    arena.append((t.size * (1 if code == "b" else 4), first[r],
                                  last.get(r, first[r])))
                bufs[r] = b
            if bufs[r] is not None:
                bufs[i] = bufs[r]
        for kern in kernels:
            kern.bind(bufs)
        self._bufs = bufs
        self.arena_bytes = _greedy_arena(arena)
        self.inputs = [self._info(i) for i in self._in_idx]
        self.outputs = [self._info(i) for i in self._out_idx]

    def _info(self, i):
        t = self._tensors[i]
        if t.type == _INT8:
            if len(t.scales) != 1:
                raise TfliteError("model input/output %r needs one scale" % t.name)
            return TensorInfo(t.name, t.shape, "int8", _f32(t.scales[0]), t.zp())
        if t.type == _FLOAT32:
            return TensorInfo(t.name, t.shape, "float32", 0.0, 0)
        raise UnsupportedModelError("unsupported tensor type %s for model input/output %r" % (
            _type_name(t.type), t.name))

    # -- running --------------------------------------------------------------

    def invoke(self, inputs):
        """Run the model once.

        ``inputs``: one flat (row-major) sequence per model input: ints in -128..127
        for int8 inputs, numbers for float32 inputs.  Returns one new flat
        ``array('b')`` (``array('f')`` for a float32 output) per model output.
        Raises ValueError naming the input for a wrong count, length or value.
        """
        if len(inputs) != len(self._in_idx):
            raise ValueError("the model has %d inputs, got %d" % (
                len(self._in_idx), len(inputs)))
        for k, i in enumerate(self._in_idx):
            t = self._tensors[i]
            data = inputs[k]
            n = len(data)
            if n != t.size:
                raise ValueError("input %d has shape %r but the data has %d values" % (
                    k, t.shape, n))
            buf = self._bufs[i]
            if t.type == _INT8:
                if n:
                    lo = min(data)
                    hi = max(data)
                    if lo < -128 or hi > 127:
                        bad = lo if lo < -128 else hi
                        raise ValueError("input %d (%r) value %r is outside int8 -128..127" % (
                            k, t.name, bad))
                try:
                    for j in range(n):
                        v = data[j]
                        if v != int(v):
                            raise TypeError
                        buf[j] = int(v)
                except (TypeError, ValueError, OverflowError):
                    raise ValueError("input %d (%r) must hold ints in -128..127, got %r" % (
                        k, t.name, data[j])) from None
            else:
                for j in range(n):
                    v = data[j]
                    if v != v or v in (float("inf"), float("-inf")):
                        raise ValueError("input %d (%r) value %r is not finite" % (
                            k, t.name, v))
                    buf[j] = v
        for kern in self._kernels:
            kern.run()
        res = []
        for i in self._out_idx:
            t = self._tensors[i]
            res.append(self._bufs[i][:t.size])
        return res


def _greedy_arena(items):
    """Greedy first-fit placement, largest tensor first; ``items`` are
    ``(bytes, first_step, last_step)``.  Returns the peak offset."""
    order = sorted(items, key=lambda it: -it[0])
    placed = []
    peak = 0
    for size, a, b in order:
        offset = 0
        clashes = sorted([(o, o + s) for o, s, pa, pb in placed if not (pb < a or b < pa)])
        for lo, hi in clashes:
            if offset + size <= lo:
                break
            if hi > offset:
                offset = hi
        placed.append((offset, size, a, b))
        if offset + size > peak:
            peak = offset + size
    return peak
