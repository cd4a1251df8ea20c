"""Pure-Python int8 TFLite interpreter, bit-exact with LiteRT's reference kernels.

For boards without a TFLite runtime (MicroPython) and as a dependency-free
fallback on CPython.  It reads a ``.tflite`` file itself, with no TFLite or
flatbuffers library.  Everything is validated and precomputed in
:class:`Model`'s constructor; :meth:`Model.invoke` only runs the kernels over
activation buffers allocated once (``array('b')``).

The parts, in the order the data goes through them:

- :mod:`~firmware.ml.tflite.reader`: the flatbuffer reader and the model
  file's structure (operator codes, subgraph, tensors, quantization
  parameters, buffers); the errors :class:`TfliteError` and
  :class:`UnsupportedModelError`;
- :mod:`~firmware.ml.tflite.quant`: quantization arithmetic, exact in
  integers: requantization multipliers and shifts as TFLite computes them,
  gemmlowp rounding, requantize, the SOFTMAX fixed-point functions;
- :mod:`~firmware.ml.tflite.kernels`: the supported operators (the list is
  there), and which of them round once or twice;
- :mod:`~firmware.ml.tflite.model`: :class:`Model` (kernels in order,
  tensor buffers, arena plan, :meth:`Model.invoke`) and :class:`TensorInfo`.

Limits: one subgraph; static shapes (dynamic dimensions take the size stored
in the file, normally 1); tensors up to 4-D for the spatial operators; no
int16, uint8 or int4 tensors; no variables, no custom operators; at most
2**22 elements per tensor.  Float values (QUANTIZE inputs, DEQUANTIZE
outputs) are exact on ports with IEEE single or double floats; int8 paths are
exact everywhere (see the quant module).

Use it as ``from firmware.ml.tflite import Model`` (:mod:`firmware.ml.infer`
chooses it when LiteRT is not installed).
"""

from firmware.ml.tflite.model import Model, TensorInfo
from firmware.ml.tflite.reader import TfliteError, UnsupportedModelError

__all__ = ["Model", "TensorInfo", "TfliteError", "UnsupportedModelError"]

#: True where floats are IEEE doubles (CPython, most MicroPython ports with
#: MICROPY_FLOAT_IMPL_DOUBLE); single-precision ports take the exact integer paths.
#: The QUANTIZE kernel reads it from here when a model is built, so setting it
#: False (tests/test_tflite_engine.py does) forces those paths on CPython too.
_F64 = (1.0 + 2.0 ** -40) != 1.0
