"""The int8 operator kernels of the engine, bit-exact with LiteRT's BUILTIN_REF.

Each kernel validates its operator when it is built (shapes, types,
quantization, options; every message names the operator), precomputes what
it can (requantization constants, weights with the input offset folded into
the bias, the window gather lists of the spatial operators) and then only
runs over the activation buffers :class:`firmware.ml.tflite.model.Model`
binds to it.

Operators (int8 activations, int8 weights with per-tensor or per-channel
scales, int32 bias):

- CONV_2D, DEPTHWISE_CONV_2D (depth multiplier): padding SAME/VALID,
  strides, dilation, fused activation NONE / RELU / RELU6 / RELU_N1_TO_1;
  CONV_2D's multiply-accumulates run as one long-integer product per output
  channel (:class:`_PackedConv`, Kronecker substitution) wherever the digits
  fit, else as a loop over the taps; both give the same accumulators;
- FULLY_CONNECTED: keep_num_dims, with or without bias, any number of rows;
- MAX_POOL_2D, AVERAGE_POOL_2D (SAME/VALID, strides, fused activation);
- ADD (with NumPy-style broadcasting and fused activation);
- CONCATENATION (inputs and output must share scale and zero point, as the
  int8 reference kernel requires; anything else is rejected);
- RESHAPE, EXPAND_DIMS, SQUEEZE (no copy: the output shares the buffer; done
  by the model's buffer plan, no kernel);
- QUANTIZE (float32 -> int8, and int8 -> int8 requantization), DEQUANTIZE
  (int8 -> float32);
- SOFTMAX (int8 -> int8, the reference kernel's gemmlowp fixed-point path);
- MEAN (int8) is *not* supported; anything else raises
  :class:`UnsupportedModelError` naming the operator.

Scaling and overflow: accumulators are exact Python ints (inputs offset by
the input zero point, int8 x int8 products summed with the int32 bias); the
reference keeps them in int32, so results agree as long as the reference
does not overflow (|acc| < 2**31: fewer than about 66 000 taps per output).
The requantization constants come from :mod:`firmware.ml.tflite.quant`.
Which kernels round twice: requantization follows what LiteRT's BUILTIN_REF
kernels do, found by comparing against them bit for bit
(tests/test_tflite_engine.py): CONV_2D, DEPTHWISE_CONV_2D, ADD and the int8
QUANTIZE use gemmlowp's double rounding (``SaturatingRoundingDoublingHighMul``:
64-bit product, round half away from zero, keep the high 32 bits; then
``RoundingDivideByPOT``: round half away from zero), while FULLY_CONNECTED
rounds once, as TFLite's ``TFLITE_SINGLE_ROUNDING`` variant does
(``(acc * m + 2**(t - 1)) >> t`` with ``t = 31 - shift``); the two differ
when the first rounding lands exactly on a half.  Then the output zero point
is added and the result saturated to the fused activation's range inside
int8.  ADD rescales both inputs to a common Q(20) scale first (left shift 20,
three multipliers), as the reference does.  AVERAGE_POOL_2D divides the sum
of the taps inside the input rounding half away from zero.  QUANTIZE divides
in float32 and rounds half away from zero, saturating to int8; DEQUANTIZE
computes ``scale * (q - zero_point)`` in double and rounds to float32.
SOFTMAX is gemmlowp's fixed point throughout (input differences in Q5.26,
exponentials in Q0.31, output scale 1/256, zero point -128).  On MicroPython
every output element's 32 x 31-bit product is a long int (one small heap
allocation per output value, none per multiply-accumulate).
"""

import struct
from array import array

from firmware.hw.compat import IS_MICROPYTHON as _MPY
from firmware.ml.tflite.quant import (
    _INT32_MAX,
    _bitlen,
    _exp_on_negative_values,
    _f32,
    _f32_div_round,
    _f32_parts,
    _mbqm,
    _one_over_one_plus_x,
    _quantize_multiplier,
    _rdbpot,
    _requant_tuple,
    _round_ratio,
    _scale_multiplier,
    _srdhm,
    _wrap32,
)
from firmware.ml.tflite.reader import (
    _ACT_NAMES,
    _FLOAT32,
    _INT8,
    _INT32,
    TfliteError,
    UnsupportedModelError,
    _op_name,
    _type_name,
)

# ---------------------------------------------------------------------------
# Operator validation and window geometry


def _prod(dims):
    n = 1
    for d in dims:
        n *= d
    return n


class _Op:
    """Context of one operator while it is validated: names it in every message."""

    def __init__(self, file, index, code, inputs, outputs, opts_type, opts):
        self.file = file  # the _ModelFile
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
        return self.file.tensors[lst[k]]

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
        return self.file.fb.scalar(self.opts, i, fmt, size, default)

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
            self.bias = op.file.const_values(bias)
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


# ---------------------------------------------------------------------------
# CONV_2D as long-integer products (Kronecker substitution)

#: Bytes per packed digit, and the offset added to every digit of a product so
#: that each is non-negative and below 2**30 (a MicroPython small int).
_PACK_BYTES = 4
_PACK_OFFSET = 1 << 29


class _PackedConv:
    """A CONV_2D's multiply-accumulates as one long-integer product per output channel.

    Method (Kronecker substitution): the input, offset to ``u = x + 128`` (0..255),
    is laid out as the digits of one integer ``X`` in base ``2**32``, row by row
    with ``(kw - 1) * dw`` zero columns after each row so that no window wraps
    into the next row; output channel ``o``'s filter is the integer ``W[o]``
    with tap ``(ky, kx, c)`` at digit ``Q - ((ky * dh * Wp + kx * dw) * C + c)``.
    Digit ``((oy * sh - ph) * Wp + ox * sw - pw) * C + Q`` of ``X * W[o]`` is then
    the window's ``sum w * u`` over the taps inside the input (taps in the
    padding find no digit), computed by the interpreter's long-integer
    multiplication in C instead of one bytecode loop per tap.  The other digits
    are sums over other tap subsets, so every digit ``d`` satisfies
    ``|d| <= 255 * sum |w[o]| < 2**29`` (checked at build: :func:`pack` returns
    None otherwise, and the kernel keeps its per-tap loop); adding
    ``2**29`` to every digit (one precomputed integer) leaves each in
    ``[0, 2**30)``, so the product's little-endian bytes read as
    ``array('i')`` give the digits exactly, each a small int.  The offset of
    the input (``128 + zero_point`` per in-range tap) and ``2**29`` go into a
    bias per output channel and pixel, precomputed.  The result is the same
    integer accumulator as the tap loop's, so the requantization after it, and
    the outputs, are unchanged bit for bit.

    Scaling and overflow: ``u`` 8 bits unsigned, weights int8, digits 32 bits
    holding ``|sum| < 2**29``; the accumulator is an exact int as before.
    """

    def __init__(self, n, h, w, c, oh, ow, sh, sw, dh, dw, ph, pw, kh, kw, wts, bias,
                 in_zp):
        oc = len(wts)
        gap = (kw - 1) * dw
        wp = w + gap
        q = ((kh - 1) * dh * wp + (kw - 1) * dw) * c + c - 1
        xd = h * wp * c  # digits of X
        nd = xd + q  # digits of a product
        self.n = n
        self.h, self.w, self.c, self.wp = h, w, c, wp
        self.in_size = h * w * c
        nb = _PACK_BYTES
        self.nbytes = nd * nb
        self.ibuf = bytearray(xd * nb)
        # The digit of every output pixel, row-major.
        npos = []
        for oy in range(oh):
            for ox in range(ow):
                d = ((oy * sh - ph) * wp + ox * sw - pw) * c + q
                npos.append(d)
        self.npos = npos
        self.npix = oh * ow
        self.oc = oc
        # W[o]: tap (ky, kx, c) of the filter (OHWI order) at digit q - offset.
        self.wint = []
        for wo in wts:
            dig = [0] * (q + 1)
            t = 0
            for ky in range(kh):
                for kx in range(kw):
                    for ch in range(c):
                        dig[q - (ky * dh * wp + kx * dw) * c - ch] = wo[t]
                        t += 1
            v = 0
            for d in range(q, -1, -1):
                v = (v << (8 * nb)) + dig[d]
            self.wint.append(v)
        self.off = int.from_bytes(_PACK_OFFSET.to_bytes(nb, "little") * nd, "little")
        # Bias per output channel and pixel: bias - (128 + zp) * (sum of the
        # in-range taps' weights) - the digit offset (a bias per channel when
        # 128 + zp is 0, the usual zero point -128).
        shift = 128 + in_zp
        self.badj = []
        for o in range(oc):
            wo = wts[o]
            row = []
            for oy in range(oh):
                for ox in range(ow):
                    s = 0
                    if shift:
                        t = 0
                        for ky in range(kh):
                            y = oy * sh - ph + ky * dh
                            for kx in range(kw):
                                xx = ox * sw - pw + kx * dw
                                if 0 <= y < h and 0 <= xx < w:
                                    for ch in range(c):
                                        s += wo[t + ch]
                                t += c
                    row.append(bias[o] - shift * s - _PACK_OFFSET)
            self.badj.append(array("i", row))

    def packed_input(self, x, b):
        """Batch ``b`` of the input buffer ``x`` (int8) as the integer ``X``."""
        buf = self.ibuf
        nb = _PACK_BYTES
        c = self.c
        rowlen = self.w * c
        step = self.wp * c * nb
        s = b * self.in_size
        d0 = 0
        for _ in range(self.h):
            d = d0
            for i in range(s, s + rowlen):
                buf[d] = x[i] + 128
                d += nb
            s += rowlen
            d0 += step
        return int.from_bytes(buf, "little")


def _packs(wts, h, w, c, kh, kw, dh, dw):
    """True if :class:`_PackedConv` can run this filter exactly on this port
    (4-byte little-endian ``array('i')``, every product digit below 2**29) in
    a product no longer than a few times the input and filter (a dilated
    window far wider than the input stays on the tap loop)."""
    if not _ARRAY_I_LE32:
        return False
    wp = w + (kw - 1) * dw
    digits = h * wp * c + ((kh - 1) * dh * wp + (kw - 1) * dw) * c + c
    if digits > 4 * (h * w * c + kh * kw * c) + 64:
        return False
    for wo in wts:
        if 255 * sum([v if v > 0 else -v for v in wo]) >= _PACK_OFFSET:
            return False
    return True


def _array_i_le32():
    try:
        a = array("i", b"\x01\x00\x00\x00\x00\x00\x00\x80")
    except (TypeError, ValueError):
        return False
    return len(a) == 2 and a[0] == 1 and a[1] == -(1 << 31)


_ARRAY_I_LE32 = _array_i_le32()


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
        wts = op.file.const_values(filt)
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
        # The fast path (module docstring of _PackedConv); the tap loop below
        # is the reference it must equal, and runs where packing does not fit.
        self.packed = None
        if _packs(self.w, h, w, c, kh, kw, dh, dw):
            self.packed = _PackedConv(n, h, w, c, oh, ow, sh, sw, dh, dw, ph, pw, kh, kw,
                                      self.w, self.bias, self.in_zp)

    def bind(self, bufs):
        self.x = bufs[self.inputs[0]]
        self.y = bufs[self.outputs[0]]

    def run(self):
        if self.packed is not None:
            self._run_packed()
        else:
            self._run_taps()

    def _run_packed(self):
        p = self.packed
        x = self.x
        y = self.y
        zp = self.out_zp
        lo = self.lo
        hi = self.hi
        npos = p.npos
        npix = p.npix
        oc = p.oc
        off = p.off
        nbytes = p.nbytes
        wint = p.wint
        badjs = p.badj
        qs = self.q
        pix = range(npix)
        for b in range(p.n):
            xi = p.packed_input(x, b)
            base = b * npix * oc
            for o in range(oc):
                dig = array("i", (xi * wint[o] + off).to_bytes(nbytes, "little"))
                badj = badjs[o]
                m, ls, rs, mask, thr = qs[o]
                j = base + o
                for k in pix:
                    acc = dig[npos[k]] + badj[k]
                    # _mbqm, inlined as in _run_taps.
                    if ls:
                        acc = _wrap32(acc << ls)
                    ab = acc * m
                    if ab >= 0:
                        h = (ab + 0x40000000) >> 31
                    else:
                        h = -((0x3FFFFFFF - ab) >> 31)
                    r = h & mask
                    h >>= rs
                    if r > thr + (1 if h < 0 else 0):
                        h += 1
                    h += zp
                    y[j] = lo if h < lo else (hi if h > hi else h)
                    j += oc

    def _run_taps(self):
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
                # _mbqm, inlined: no function call per output value.
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
        wts = op.file.const_values(filt)
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
                    # _mbqm, inlined as in _Conv2D.
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
        wts = op.file.const_values(filt)
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
        taps = range(d)
        o = 0
        for row in range(self.rows):
            patch = x[row * d:(row + 1) * d] if row else x
            for w, acc, m, t, rnd in chan:
                if _MPY:
                    # MicroPython: an index loop allocates nothing (zip makes a
                    # tuple per tap); about 3x faster there, slower on CPython.
                    for j in taps:
                        acc += w[j] * patch[j]
                else:
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
            c = self.c
            if lo == -128 and hi == 127:
                # No clamp: the channel vectors of the window's taps, their
                # element-wise max in C (map over memoryview slices), one slice store.
                mv = memoryview(x)
                for pix in self.pos:
                    if len(pix) == 1:
                        i = pix[0]
                        y[o:o + c] = x[i:i + c]
                    else:
                        y[o:o + c] = array("b", map(max, *[mv[i:i + c] for i in pix]))
                    o += c
                return
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
            # The float path, chosen when the model is built: the port flag lives in
            # the package (firmware.ml.tflite._F64), so that setting it False there
            # takes the exact single-precision path on CPython too (the tests do).
            # Imported here, not at the top: the package imports this module.
            from firmware.ml import tflite
            self.f64 = tflite._F64
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
            f64 = self.f64
            for i in range(self.n):
                if f64:
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

