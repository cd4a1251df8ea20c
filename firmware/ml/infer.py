"""The beat classifier on the device: model checks and the int8 runtime adapter.

A model is two files: ``<name>.tflite`` (int8, made by ``models/train.py``)
and ``<name>.json``, its metadata (``"format": "medge-model/1"``: labels,
input layout and quantization, window, sha256, validation figures).
:class:`BeatClassifier` accepts a model only if

* the metadata is well formed, its labels are the AAMI classes N S V F Q, its
  window and RR layout are this firmware's (``firmware.signal.beats`` constants), and
  both inputs are int8 with scale 1/32 and zero point 0 (the device's int8
  features are the inputs as they are);
* the sha256 of the ``.tflite`` bytes equals the metadata's;
* the runtime parses the model and finds the inputs and output the metadata
  describes (tensor names, shapes, quantization).

Anything else raises :class:`ModelError` naming the problem.  :class:`ModelSlot`
holds the model in use: a new one replaces it only when it passes every check,
so a bad download or a model for other firmware leaves the device running
with the previous model (counted in ``ModelSlot.rejected``).

Runtimes (``runtime=``): ``"auto"`` takes LiteRT (``ai_edge_litert``, or the
older ``tflite_runtime``) with its reference kernels when it is installed (a
Raspberry Pi), else the pure-Python int8 engine :mod:`firmware.ml.tflite`
(MicroPython); ``"litert-ref"``, ``"litert"`` (LiteRT's optimized kernels and
XNNPACK) and ``"python"`` choose one.  The engine equals LiteRT's reference
kernels bit for bit, so with ``"auto"`` the class of a beat does not depend on
the platform.  The optimized kernels round differently here and there (a
logit off by one, now and then a different class on a near tie): they are
about 8x faster (0.007 vs 0.06 ms a beat here), a saving no device needs.
"""

import binascii
import hashlib
import json

from firmware.params import (
    BEAT_CHANNELS,
    BEAT_WINDOW_AFTER_MS,
    BEAT_WINDOW_BEFORE_MS,
    BEAT_WINDOW_POINTS,
    INPUT_SCALE_INV,
    RR_FEATURES,
)

#: The AAMI EC57 beat classes, in the model's output order.
AAMI_LABELS = ("N", "S", "V", "F", "Q")
META_FORMAT = "medge-model/1"
RUNTIMES = ("auto", "litert", "litert-ref", "python")

_INPUT_SIZES = {"beat": BEAT_WINDOW_POINTS * BEAT_CHANNELS, "rr": RR_FEATURES}


class ModelError(ValueError):
    """A model the device refuses; the message says why."""


def sha256_hex(data):
    return binascii.hexlify(hashlib.sha256(data).digest()).decode()


def _size(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def _field(meta, path):
    """``meta`` at the dotted ``path``; ModelError naming the path if absent."""
    cur = meta
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise ModelError("model metadata: missing field %s" % path)
        cur = cur[part]
    return cur


def _expect(meta, path, want):
    got = _field(meta, path)
    if got != want:
        raise ModelError("model metadata: %s is %r, this firmware needs %r" % (path, got, want))


def check_metadata(meta, model_bytes):
    """Validate ``meta`` (a dict) against this firmware and ``model_bytes``."""
    if not isinstance(meta, dict):
        raise ModelError("model metadata must be a JSON object")
    _expect(meta, "format", META_FORMAT)
    labels = _field(meta, "labels")
    if not isinstance(labels, list) or tuple(labels) != AAMI_LABELS:
        raise ModelError("model metadata: labels are %r, expected %r" % (labels, list(AAMI_LABELS)))
    _expect(meta, "window.before_ms", BEAT_WINDOW_BEFORE_MS)
    _expect(meta, "window.after_ms", BEAT_WINDOW_AFTER_MS)
    _expect(meta, "window.points", BEAT_WINDOW_POINTS)
    _expect(meta, "window.channels", BEAT_CHANNELS)
    _expect(meta, "rr_features", RR_FEATURES)
    version = _field(meta, "version")
    if not isinstance(version, str) or not version:
        raise ModelError("model metadata: version must be a non-empty string")
    inputs = _field(meta, "inputs")
    if not isinstance(inputs, list) or sorted(i.get("name") for i in inputs
                                              if isinstance(i, dict)) != ["beat", "rr"]:
        raise ModelError("model metadata: inputs must be 'beat' and 'rr'")
    for i, inp in enumerate(inputs):
        name = inp["name"]
        shape = inp.get("shape")
        if not isinstance(shape, list) or _size(shape) != _INPUT_SIZES[name]:
            raise ModelError("model metadata: input %s has shape %r, %d values needed"
                             % (name, shape, _INPUT_SIZES[name]))
        if inp.get("dtype") != "int8" or inp.get("zero_point") != 0 or not _same_scale(
            inp.get("scale"), 1.0 / INPUT_SCALE_INV
        ):
            raise ModelError("model metadata: input %s must be int8 with scale 1/%d and "
                             "zero point 0" % (name, INPUT_SCALE_INV))
        if not isinstance(inp.get("tensor"), str):
            raise ModelError("model metadata: inputs[%d].tensor must be a string" % i)
    out = _field(meta, "output")
    if not isinstance(out, dict) or _size(out.get("shape") or [0]) != len(AAMI_LABELS):
        raise ModelError("model metadata: output must have %d values" % len(AAMI_LABELS))
    digest = _field(meta, "sha256")
    actual = sha256_hex(model_bytes)
    if digest != actual:
        raise ModelError("model sha256 mismatch: metadata says %s, the file is %s"
                         % (digest, actual))


def _same_scale(a, b):
    return isinstance(a, (int, float)) and abs(a - b) <= 1e-6 * b


# ---------------------------------------------------------------- runtimes


class PythonRuntime:
    """The pure-Python int8 engine (:mod:`firmware.ml.tflite`)."""

    name = "python"

    def __init__(self, model_bytes):
        from firmware.ml import tflite

        try:
            self._model = tflite.Model(model_bytes)
        except tflite.TfliteError as exc:
            raise ModelError("model rejected by the int8 engine: %s" % exc) from exc
        self.inputs = self._model.inputs  # TensorInfo: name, shape, scale, zero_point
        self.outputs = self._model.outputs

    def invoke(self, inputs):
        return self._model.invoke(inputs)


def open_runtime(model_bytes, runtime="auto"):
    """A runtime for ``model_bytes``: see the module docstring for the choices."""
    if runtime not in RUNTIMES:
        raise ValueError("runtime must be one of %s, got %r" % (", ".join(RUNTIMES), runtime))
    if runtime == "python":
        return PythonRuntime(model_bytes)
    try:
        from firmware.ml import litert  # the platform adapter (CPython with LiteRT)
    except ImportError:
        litert = None
    if litert is None or not litert.available():
        if runtime == "auto":
            return PythonRuntime(model_bytes)
        raise ModelError("LiteRT is not installed (pip install ai-edge-litert)")
    try:
        return litert.LiteRtRuntime(model_bytes, reference=runtime != "litert")
    except (ValueError, RuntimeError) as exc:
        raise ModelError("model rejected by LiteRT: %s" % exc) from exc


# -------------------------------------------------------------- classifier


class BeatClassifier:
    """A verified model and its runtime: ``classify(beat, rr)`` -> class index."""

    def __init__(self, model_bytes, meta, runtime="auto"):
        if isinstance(meta, (str, bytes)):
            try:
                meta = json.loads(meta)
            except ValueError as exc:
                raise ModelError("model metadata is not valid JSON: %s" % exc) from exc
        check_metadata(meta, model_bytes)
        rt = open_runtime(model_bytes, runtime)
        by_tensor = {}
        for inp in meta["inputs"]:
            by_tensor[inp["tensor"]] = inp
        order = []
        if len(rt.inputs) != len(by_tensor):
            raise ModelError("the model has %d inputs, the metadata describes %d"
                             % (len(rt.inputs), len(by_tensor)))
        for t in rt.inputs:
            inp = by_tensor.get(t.name)
            if inp is None:
                raise ModelError("model input %r is not in the metadata" % t.name)
            if list(t.shape) != list(inp["shape"]):
                raise ModelError("model input %s has shape %r, the metadata says %r"
                                 % (inp["name"], list(t.shape), inp["shape"]))
            if not _same_scale(t.scale, inp["scale"]) or t.zero_point != inp["zero_point"]:
                raise ModelError("model input %s quantization (%r, %r) differs from the "
                                 "metadata" % (inp["name"], t.scale, t.zero_point))
            order.append(inp["name"])
        if len(rt.outputs) != 1 or _size(rt.outputs[0].shape) != len(AAMI_LABELS):
            raise ModelError("the model must have one output of %d values" % len(AAMI_LABELS))
        self.meta = meta
        self.version = meta["version"]
        self.runtime = rt
        self._beat_first = order[0] == "beat"
        self.inferences = 0

    def logits(self, beat, rr):
        """The int8 output (one value per class) for one beat's features."""
        ins = [beat, rr] if self._beat_first else [rr, beat]
        self.inferences += 1
        return self.runtime.invoke(ins)[0]

    def classify(self, beat, rr):
        """The class index (0..4, ``AAMI_LABELS``) of the largest logit (first on ties)."""
        out = self.logits(beat, rr)
        best = 0
        for i in range(1, len(AAMI_LABELS)):
            if out[i] > out[best]:
                best = i
        return best


class ModelSlot:
    """The device's model in use; :meth:`install` replaces it only with a model
    that passes every check, else keeps the old one and counts the rejection."""

    def __init__(self, runtime="auto"):
        self.runtime = runtime
        self.classifier = None
        self.rejected = 0
        self.last_error = None

    @property
    def version(self):
        return self.classifier.version if self.classifier else None

    def install(self, model_bytes, meta):
        """Try a new model; True if it is now in use."""
        try:
            clf = BeatClassifier(model_bytes, meta, self.runtime)
        except ModelError as exc:
            self.rejected += 1
            self.last_error = str(exc)
            return False
        self.classifier = clf
        self.last_error = None
        return True

    def install_files(self, tflite_path, meta_path):
        """:meth:`install` from files; a missing file is a rejection too."""
        try:
            with open(tflite_path, "rb") as f:
                model = f.read()
            with open(meta_path) as f:
                meta = f.read()
        except OSError as exc:
            self.rejected += 1
            self.last_error = "cannot read the model: %s" % exc
            return False
        return self.install(model, meta)
