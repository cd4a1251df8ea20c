"""Platform adapter: the int8 model on LiteRT (a Raspberry Pi, any CPython).

``ai_edge_litert`` (the maintained successor of ``tflite-runtime``) or, on
older Raspberry Pi OS, ``tflite_runtime``: the same Interpreter API.  Used by
:func:`firmware.ml.infer.open_runtime`; MicroPython never imports it (it falls
back to the pure-Python engine, :mod:`firmware.ml.tflite`).
"""


def _interpreter():
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        return Interpreter, OpResolverType, "litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter, OpResolverType

        return Interpreter, OpResolverType, "tflite-runtime"
    except ImportError:
        return None, None, None


def available():
    """True when a LiteRT interpreter can be imported."""
    return _interpreter()[0] is not None


class _Tensor:
    def __init__(self, d):
        self.name = d["name"]
        self.shape = tuple(int(v) for v in d["shape"])
        self.scale, self.zero_point = d["quantization"]


class LiteRtRuntime:
    """LiteRT's Interpreter on one model; ``reference=True`` selects the
    reference kernels (``OpResolverType.BUILTIN_REF``), which the pure-Python
    engine equals bit for bit.  Raises ValueError/RuntimeError from LiteRT on a
    model it cannot load."""

    def __init__(self, model_bytes, reference=False):
        interpreter, resolver, name = _interpreter()
        if interpreter is None:
            raise RuntimeError("LiteRT is not installed (pip install ai-edge-litert)")
        self.name = name + ("-ref" if reference else "")
        kwargs = {"model_content": bytes(model_bytes)}
        if reference:
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_REF
        it = interpreter(**kwargs)
        it.allocate_tensors()
        self._it = it
        self._in = it.get_input_details()
        self._out = it.get_output_details()
        self.inputs = [_Tensor(d) for d in self._in]
        self.outputs = [_Tensor(d) for d in self._out]

    def invoke(self, inputs):
        """One int8 sequence per input (model input order); one flat int8 array per output.

        No numpy import here: ``get_tensor`` hands back a copy of the input
        tensor (an int8 array of the right shape, from LiteRT's own numpy),
        which is filled and set."""
        it = self._it
        for d, data in zip(self._in, inputs):
            arr = it.get_tensor(d["index"])
            flat = arr.reshape(-1)
            if len(data) != len(flat):
                raise ValueError("input %s needs %d values, got %d"
                                 % (d["name"], len(flat), len(data)))
            flat[:] = data
            it.set_tensor(d["index"], arr)
        it.invoke()
        return [self._it.get_tensor(d["index"]).reshape(-1) for d in self._out]
