"""Reading a ``.tflite`` file: a minimal flatbuffer reader and the model's parts.

A minimal flatbuffer reader (root table, vtables, tables, vectors, strings,
unions; little-endian through ``struct``; every offset bounds-checked) walks
the TFLite schema (version 3): operator codes, one subgraph, tensors,
quantization parameters, buffers, builtin options.  :class:`_ModelFile`
checks the file's structure (identifier, schema version, one subgraph, every
tensor, buffer and operator index in range, every buffer large enough for its
tensor) and holds what it found; the kernels (:mod:`firmware.ml.tflite.kernels`)
validate each operator's shapes, types and options.

Also the home of the engine's errors (:class:`TfliteError`,
:class:`UnsupportedModelError`) and of the schema's type and operator codes,
which every other module of the engine uses.
"""

import struct

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



class _ModelFile:
    """A ``.tflite`` file, its structure checked: ``fb`` (the reader), ``opcodes``
    (``(code, custom_name)`` per operator code), ``buffers`` (``(start, length)``
    of each buffer's data), ``subgraph`` (the one subgraph's table), ``tensors``
    (:class:`_Tensor` list) and ``in_idx`` / ``out_idx`` (the model's input and
    output tensor indices).  Raises :class:`TfliteError` naming the problem."""

    def __init__(self, buf):
        if not isinstance(buf, (bytes, bytearray, memoryview)):
            raise TfliteError("model must be bytes, bytearray or memoryview, got %s" % (
                type(buf).__name__,))
        fb = self.fb = _Fb(buf)
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
        self.opcodes = []
        for t in fb.tables(root, 1, "operator code"):
            dep = fb.scalar(t, 0, "<b", 1, 0)
            code = fb.scalar(t, 3, "<i", 4, 0)
            code = max(code, dep)
            custom = fb.string(t, 1, "custom code") if code == _OP_CUSTOM else ""
            self.opcodes.append((code, custom))
        subgraphs = fb.tables(root, 2, "subgraph")
        if len(subgraphs) != 1:
            raise UnsupportedModelError("the model has %d subgraphs; exactly one is supported"
                                        % len(subgraphs))
        sg = self.subgraph = subgraphs[0]
        self.buffers = []
        for k, t in enumerate(fb.tables(root, 4, "buffer")):
            start, n = fb.vector(t, 0, 1, "buffer %d" % k)
            off = fb.scalar(t, 1, "<Q", 8, 0)
            if off > 1:
                size = fb.scalar(t, 2, "<Q", 8, 0)
                fb.need(off, size, "buffer %d" % k)
                start, n = off, size
            self.buffers.append((start, n))
        self.tensors = []
        for k, t in enumerate(fb.tables(sg, 0, "tensor")):
            self.tensors.append(self._parse_tensor(k, t))
        nt = len(self.tensors)
        self.in_idx = list(fb.scalars(sg, 1, "i", 4, "subgraph inputs"))
        self.out_idx = list(fb.scalars(sg, 2, "i", 4, "subgraph outputs"))
        for role, lst in (("input", self.in_idx), ("output", self.out_idx)):
            for i in lst:
                if not 0 <= i < nt:
                    raise TfliteError("model %s tensor index %d out of range (%d tensors)" % (
                        role, i, nt))
        if not self.in_idx or not self.out_idx:
            raise TfliteError("the model has no inputs or no outputs")

    def _parse_tensor(self, k, t):
        fb = self.fb
        what = "tensor %d" % k
        shape = tuple(fb.scalars(t, 0, "i", 4, what + " shape"))
        ttype = fb.scalar(t, 1, "<b", 1, 0)
        bidx = fb.scalar(t, 2, "<I", 4, 0)
        name = fb.string(t, 3, what + " name")
        for d in shape:
            if d < 0:
                raise TfliteError("%s %r has a negative dimension %r" % (what, name, shape))
        if not 0 <= bidx < max(len(self.buffers), 1):
            raise TfliteError("%s %r refers to buffer %d of %d" % (
                what, name, bidx, len(self.buffers)))
        data = None
        if self.buffers and self.buffers[bidx][1]:
            data = self.buffers[bidx]
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

    def const_values(self, t):
        """The values of the constant int8 or int32 tensor ``t`` (a tuple of ints)."""
        start = t.data[0]
        if t.type == _INT8:
            return struct.unpack_from("<%db" % t.size, self.fb.b, start)
        if t.type == _INT32:
            return struct.unpack_from("<%di" % t.size, self.fb.b, start)
        raise UnsupportedModelError("unsupported constant tensor type %s (%r)" % (
            _type_name(t.type), t.name))

    def operators(self):
        """The subgraph's operator tables, in execution order."""
        return self.fb.tables(self.subgraph, 3, "operator")

    def operator(self, k, t):
        """Operator ``k`` (table ``t``): ``(code, custom_name, inputs, outputs,
        options_type, options_table)``, its tensor indices checked."""
        fb = self.fb
        nt = len(self.tensors)
        oi = fb.scalar(t, 0, "<I", 4, 0)
        if oi >= len(self.opcodes):
            raise TfliteError("operator %d uses opcode %d of %d" % (
                k, oi, len(self.opcodes)))
        code, custom = self.opcodes[oi]
        ins = list(fb.scalars(t, 1, "i", 4, "operator %d inputs" % k))
        outs = list(fb.scalars(t, 2, "i", 4, "operator %d outputs" % k))
        for i in ins + outs:
            if not -1 <= i < nt:
                raise TfliteError("operator %d refers to tensor %d of %d" % (k, i, nt))
        if not outs:
            raise TfliteError("operator %d has no outputs" % k)
        opts_type = fb.scalar(t, 3, "<B", 1, 0)
        opts = fb.subtable(t, 4, "options of operator %d" % k)
        return code, custom, ins, outs, opts_type, opts
