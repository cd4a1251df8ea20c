"""The model: the parsed file, one kernel per operator, the tensor buffers and invoke.

:class:`Model` ties the parts together: :class:`~firmware.ml.tflite.reader._ModelFile`
reads and checks the file; each operator becomes a kernel of
:mod:`firmware.ml.tflite.kernels`, validated and precomputed when it is
built; RESHAPE / EXPAND_DIMS / SQUEEZE make their output an alias of their
input's buffer (no copy); every activation tensor gets one buffer
(``array('b')``, ``array('f')`` for float32, plus the sentinel slots the
convolutions read for padding taps), allocated once, when the model is built.
:meth:`Model.invoke` checks and copies the inputs in, runs the kernels in
order and returns copies of the outputs.

``arena_bytes`` is what one static tensor arena would need: the activation
tensors placed greedily, largest first, at the lowest offset free during
their lifetime (first writer to last reader), in the manner of TFLite Micro's
greedy memory planner.  The engine itself keeps one buffer per tensor.
"""

import struct
from array import array

from firmware.ml.tflite.kernels import (
    _Add,
    _Concat,
    _Conv2D,
    _ConvBase,
    _DepthwiseConv2D,
    _Dequantize,
    _FullyConnected,
    _Op,
    _Pool,
    _Quantize,
    _Softmax,
)
from firmware.ml.tflite.quant import _f32
from firmware.ml.tflite.reader import (
    _FLOAT32,
    _INT8,
    _OP_ADD,
    _OP_AVERAGE_POOL_2D,
    _OP_CONCATENATION,
    _OP_CONV_2D,
    _OP_CUSTOM,
    _OP_DEPTHWISE_CONV_2D,
    _OP_DEQUANTIZE,
    _OP_EXPAND_DIMS,
    _OP_FULLY_CONNECTED,
    _OP_MAX_POOL_2D,
    _OP_QUANTIZE,
    _OP_RESHAPE,
    _OP_SOFTMAX,
    _OP_SQUEEZE,
    TfliteError,
    UnsupportedModelError,
    _ModelFile,
    _op_name,
    _type_name,
)


class TensorInfo:
    """A model input or output: ``name``, ``shape`` (tuple), ``size`` (its number
    of elements), ``dtype`` ("int8" or "float32"), ``scale`` (float; 0.0 for
    float tensors) and ``zero_point``."""

    def __init__(self, name, shape, dtype, scale, zero_point):
        self.name = name
        self.shape = shape
        size = 1
        for d in shape:
            size *= d
        self.size = size
        self.dtype = dtype
        self.scale = scale
        self.zero_point = zero_point

    def __repr__(self):
        return "TensorInfo(name=%r, shape=%r, dtype=%r, scale=%r, zero_point=%r)" % (
            self.name, self.shape, self.dtype, self.scale, self.zero_point)



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
        f = self._file = _ModelFile(buf)
        self._tensors = f.tensors
        self._in_idx = f.in_idx
        self._out_idx = f.out_idx
        self._build(f)

    # -- building -------------------------------------------------------------

    def _build(self, f):
        """One kernel per operator, in order; reshapes become buffer aliases."""
        nt = len(self._tensors)
        kernels = []
        alias = list(range(nt))
        macs = 0
        weight_bufs = {}
        for k, t in enumerate(f.operators()):
            code, custom, ins, outs, opts_type, opts = f.operator(k, t)
            op = _Op(f, k, code, ins, outs, opts_type, opts)
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
                    vals = struct.unpack_from("<%d%s" % (t.size, code), self._file.fb.b,
                                            t.data[0])
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
