"""Platform adapter: the int8 model on LiteRT (a Raspberry Pi, any CPython).

``ai_edge_litert`` (the maintained successor of ``tflite-runtime``) or, on
older Raspberry Pi OS, ``tflite_runtime``: the same Interpreter API.  Used by
:func:`firmware.infer.open_runtime`; MicroPython never imports it (it falls
back to the pure-Python engine, :mod:`firmware.tflite`).
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
        import numpy as np

        interpreter, resolver, name = _interpreter()
        if interpreter is None:
            raise RuntimeError("LiteRT is not installed (pip install ai-edge-litert)")
        self.name = name + ("-ref" if reference else "")
        kwargs = {"model_content": bytes(model_bytes)}
        if reference:
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_REF
        it = interpreter(**kwargs)
        it.allocate_tensors()
        self._np = np
        self._it = it
        self._in = it.get_input_details()
        self._out = it.get_output_details()
        self.inputs = [_Tensor(d) for d in self._in]
        self.outputs = [_Tensor(d) for d in self._out]

    def invoke(self, inputs):
        """One int8 sequence per input (model input order); one flat int8 array per output."""
        np = self._np
        for d, data in zip(self._in, inputs):
            self._it.set_tensor(d["index"], np.asarray(data, dtype=np.int8).reshape(d["shape"]))
        self._it.invoke()
        return [self._it.get_tensor(d["index"]).reshape(-1) for d in self._out]
