"""Make the small int8 TFLite models that test the pure-Python engine (firmware/ml/tflite/).

Run by hand with a Python that has TensorFlow (not in the project venv)::

    /path/to/tf-venv/bin/python -m models.make_test_models [OUT_DIR]

and commit what it writes (default ``tests/data/tflite/``).  Every model is built from
``tf.function`` graphs with fixed random weights (seeded, so reruns give the same graphs;
the converter's calibration is deterministic too), converted with full-integer
post-training quantization from a representative dataset.  Together they exercise every
operator and option the engine supports:

- ``ship.tflite``: the shape the project ships: int8 beat window (1, 90, 1) ->
  Conv1D(8, 5, same, relu) -> MaxPool1D(2) -> Conv1D(12, 5, valid, relu) -> MaxPool1D(4)
  -> Flatten, concatenated with an int8 RR-feature vector (1, 8) -> Dense(32, relu) ->
  Dense(5) logits; ``ship_softmax.tflite`` the same with a softmax.
- ``conv2d.tflite``: CONV_2D with SAME/VALID padding, strides, dilation, RELU6,
  RELU_N1_TO_1 and no activation, then a depthwise conv and a dense layer;
  ``conv2d_per_tensor.tflite`` the same with per-tensor weight scales.
- ``depthwise.tflite``: DEPTHWISE_CONV_2D with depth multiplier 1 and 2, strides, dilation.
- ``pool_add.tflite``: MAX_POOL_2D / AVERAGE_POOL_2D (SAME and VALID), ADD (fused RELU,
  and a broadcast operand), CONCATENATION on the channel axis.
- ``fc_shapes.tflite``: FULLY_CONNECTED with keep_num_dims, without bias, on a batch of rows,
  RESHAPE, EXPAND_DIMS, SQUEEZE.
- ``float_io.tflite``: float32 input and output, so QUANTIZE (float -> int8) and
  DEQUANTIZE appear, plus an int8 -> int8 requantizing QUANTIZE.
- ``mean.tflite``: MEAN over the spatial axes (global average pooling).
- ``tanh.tflite`` (an int8 op the engine does not support) and ``float_only.tflite``
  (no quantization at all): for the error tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

OUT_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "tflite"
SEED = 20240611


def _w(rng: np.random.Generator, *shape: int, scale: float | None = None) -> tf.Tensor:
    """A constant weight tensor with He-like scaling (fan-in = all but the last dim)."""
    fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    s = scale if scale is not None else np.sqrt(2.0 / max(fan_in, 1))
    return tf.constant(rng.normal(0.0, s, size=shape).astype(np.float32))


def _b(rng: np.random.Generator, n: int) -> tf.Tensor:
    return tf.constant(rng.normal(0.0, 0.1, size=(n,)).astype(np.float32))


def convert(
    fn: tf.types.experimental.ConcreteFunction,
    rep: list[list[np.ndarray]],
    *,
    int8_io: bool = True,
    quantize: bool = True,
    per_tensor: bool = False,
) -> bytes:
    """Convert one concrete function; full-integer PTQ unless ``quantize`` is false."""
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    if quantize:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: iter(rep)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        if per_tensor:
            conv._experimental_disable_per_channel = True
    return conv.convert()


def rep_data(rng: np.random.Generator, shapes: list[tuple[int, ...]], n: int = 64,
             scales: list[float] | None = None) -> list[list[np.ndarray]]:
    scales = scales or [1.0] * len(shapes)
    return [
        [(rng.normal(0.0, s, size=shape)).astype(np.float32) for shape, s in zip(shapes, scales)]
        for _ in range(n)
    ]


def ship_model(rng: np.random.Generator, softmax: bool) -> tf.types.experimental.ConcreteFunction:
    """Beat window (1, 90, 1) + RR features (1, 8) -> 5 logits (or probabilities)."""
    k1, b1 = _w(rng, 5, 1, 8), _b(rng, 8)
    k2, b2 = _w(rng, 5, 8, 12), _b(rng, 12)
    w3, b3 = _w(rng, 10 * 12 + 8, 32), _b(rng, 32)
    w4, b4 = _w(rng, 32, 5), _b(rng, 5)

    @tf.function(input_signature=[tf.TensorSpec((1, 90, 1), tf.float32, name="beat"),
                                  tf.TensorSpec((1, 8), tf.float32, name="rr")])
    def f(beat, rr):
        x = tf.nn.relu(tf.nn.conv1d(beat, k1, 1, "SAME") + b1)
        x = tf.nn.max_pool1d(x, 2, 2, "VALID")
        x = tf.nn.relu(tf.nn.conv1d(x, k2, 1, "VALID") + b2)
        x = tf.nn.max_pool1d(x, 4, 4, "VALID")
        x = tf.reshape(x, (1, 10 * 12))
        x = tf.concat([x, rr], axis=1)
        x = tf.nn.relu(tf.matmul(x, w3) + b3)
        x = tf.matmul(x, w4) + b4
        return tf.nn.softmax(x) if softmax else x

    return f.get_concrete_function()


def conv2d_model(rng: np.random.Generator) -> tf.types.experimental.ConcreteFunction:
    k1, b1 = _w(rng, 3, 3, 3, 6), _b(rng, 6)
    k2, b2 = _w(rng, 3, 3, 6, 5), _b(rng, 5)
    k3, b3 = _w(rng, 1, 1, 5, 4, scale=0.3), _b(rng, 4)
    k4, b4 = _w(rng, 2, 3, 4, 3), _b(rng, 3)
    d5, b5 = _w(rng, 2, 2, 3, 1), _b(rng, 3)
    w6, b6 = _w(rng, 4 * 2 * 3, 4), _b(rng, 4)

    @tf.function(input_signature=[tf.TensorSpec((1, 11, 13, 3), tf.float32, name="image")])
    def f(x):
        x = tf.nn.relu6(tf.nn.conv2d(x, k1, 2, "SAME") + b1)  # stride 2, SAME, RELU6
        x = tf.nn.conv2d(x, k2, 1, "SAME", dilations=2) + b2  # dilation 2, no activation
        x = tf.clip_by_value(tf.nn.conv2d(x, k3, 1, "VALID") + b3, -1.0, 1.0)  # RELU_N1_TO_1
        x = tf.nn.relu(tf.nn.conv2d(x, k4, (1, 2), "VALID") + b4)  # asymmetric stride, VALID
        x = tf.nn.depthwise_conv2d(x, d5, (1, 1, 1, 1), "VALID") + b5  # (1, 4, 2, 3)
        return tf.matmul(tf.reshape(x, (1, 24)), w6) + b6

    return f.get_concrete_function()


def depthwise_model(rng: np.random.Generator) -> tf.types.experimental.ConcreteFunction:
    d1, b1 = _w(rng, 3, 3, 4, 2), _b(rng, 8)
    d2, b2 = _w(rng, 3, 3, 8, 1), _b(rng, 8)
    d3, b3 = _w(rng, 2, 2, 8, 1), _b(rng, 8)

    @tf.function(input_signature=[tf.TensorSpec((1, 10, 9, 4), tf.float32, name="image")])
    def f(x):
        x = tf.nn.relu(tf.nn.depthwise_conv2d(x, d1, (1, 1, 1, 1), "SAME") + b1)  # dm 2
        x = tf.nn.depthwise_conv2d(x, d2, (1, 2, 2, 1), "VALID") + b2  # stride 2
        x = tf.nn.relu6(tf.nn.depthwise_conv2d(x, d3, (1, 1, 1, 1), "SAME",
                                               dilations=(2, 2)) + b3)  # dilation
        return x

    return f.get_concrete_function()


def pool_add_model(rng: np.random.Generator) -> tf.types.experimental.ConcreteFunction:
    k1, b1 = _w(rng, 3, 3, 3, 4), _b(rng, 4)
    k2, b2 = _w(rng, 1, 1, 3, 4), _b(rng, 4)
    bias_map = tf.constant(rng.normal(0.0, 0.5, size=(1, 1, 1, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec((1, 9, 10, 3), tf.float32, name="image")])
    def f(x):
        a = tf.nn.conv2d(x, k1, 1, "SAME") + b1
        b = tf.nn.conv2d(x, k2, 1, "SAME") + b2
        s = tf.nn.relu(a + b)  # ADD with fused RELU
        s = s + bias_map  # ADD with a broadcast constant
        p1 = tf.nn.avg_pool2d(s, 3, 2, "SAME")  # border windows average fewer taps
        p2 = tf.nn.max_pool2d(s, 3, 2, "SAME")
        p3 = tf.nn.avg_pool2d(s, (2, 3), (2, 3), "VALID")
        p4 = tf.nn.max_pool2d(s, 2, 1, "VALID")
        c = tf.concat([p1, p2], axis=3)  # channel concat
        return c, p3, p4

    return f.get_concrete_function()


def fc_model(rng: np.random.Generator) -> tf.types.experimental.ConcreteFunction:
    w1 = _w(rng, 6, 5)
    w2, b2 = _w(rng, 20, 7), _b(rng, 7)
    w3 = _w(rng, 7, 3)

    @tf.function(input_signature=[tf.TensorSpec((1, 4, 6), tf.float32, name="rows")])
    def f(x):
        y = tf.matmul(x, w1)  # (1, 4, 5): FULLY_CONNECTED keep_num_dims, no bias
        y = tf.nn.relu(y)
        z = tf.reshape(y, (1, 20))
        z = tf.matmul(z, w2) + b2  # plain FULLY_CONNECTED with bias
        z = tf.expand_dims(z, 1)  # (1, 1, 7)
        z = tf.squeeze(z, [1])  # (1, 7)
        r = tf.matmul(tf.reshape(y, (4, 5)), tf.transpose(w1[:5, :5]))  # a batch of 4 rows
        return tf.matmul(z, w3), r

    return f.get_concrete_function()


def float_io_model(rng: np.random.Generator) -> tf.types.experimental.ConcreteFunction:
    k1, b1 = _w(rng, 3, 1, 1, 4), _b(rng, 4)
    w2, b2 = _w(rng, 16 * 4 + 3, 3), _b(rng, 3)

    w3 = _w(rng, 6, 2, scale=0.2)

    @tf.function(input_signature=[tf.TensorSpec((1, 16, 1, 1), tf.float32, name="signal"),
                                  tf.TensorSpec((1, 3), tf.float32, name="extra")])
    def f(x, e):
        x = tf.nn.relu(tf.nn.conv2d(x, k1, 1, "SAME") + b1)
        x = tf.reshape(x, (1, 64))
        big = tf.concat([x, e], axis=1)  # e is concatenated twice with tensors of very
        small = tf.concat([e, tf.constant([[-9.0, 9.0, 0.5]])], axis=1)  # ranges -> requantize
        return tf.matmul(big, w2) + b2, tf.matmul(small, w3)

    return f.get_concrete_function()


def dims_model(rng: np.random.Generator) -> tf.types.experimental.ConcreteFunction:
    """Dynamic batch and height keep SQUEEZE / EXPAND_DIMS from being folded into RESHAPE
    (the file's static shape is then (1, 1, 1, 2))."""
    k1, b1 = _w(rng, 3, 1, 2, 4), _b(rng, 4)
    w2, b2 = _w(rng, 4, 3), _b(rng, 3)

    @tf.function(input_signature=[tf.TensorSpec((None, None, 1, 2), tf.float32, name="x")])
    def f(x):
        y = tf.nn.relu(tf.nn.conv2d(x, k1, 1, "SAME") + b1)  # (n, h, 1, 4)
        y = tf.squeeze(y, [2])  # (n, h, 4)
        y = tf.expand_dims(y, 1)  # (n, 1, h, 4)
        return tf.matmul(y, w2) + b2

    return f.get_concrete_function()


def mean_model(rng: np.random.Generator) -> tf.types.experimental.ConcreteFunction:
    k1, b1 = _w(rng, 3, 3, 2, 6), _b(rng, 6)

    @tf.function(input_signature=[tf.TensorSpec((1, 7, 6, 2), tf.float32, name="image")])
    def f(x):
        x = tf.nn.relu(tf.nn.conv2d(x, k1, 1, "SAME") + b1)
        return tf.reduce_mean(x, axis=[1, 2])

    return f.get_concrete_function()


def tanh_model(rng: np.random.Generator) -> tf.types.experimental.ConcreteFunction:
    w1, b1 = _w(rng, 8, 4), _b(rng, 4)

    @tf.function(input_signature=[tf.TensorSpec((1, 8), tf.float32, name="x")])
    def f(x):
        return tf.tanh(tf.matmul(x, w1) + b1)

    return f.get_concrete_function()


def main(out_dir: Path = OUT_DIR) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tf.random.set_seed(SEED)

    def rng(k: int) -> np.random.Generator:
        return np.random.default_rng(SEED + k)

    ship_rep = rep_data(rng(100), [(1, 90, 1), (1, 8)], scales=[1.0, 0.5])
    conv_rep = rep_data(rng(102), [(1, 11, 13, 3)])
    models = {
        "ship.tflite": convert(ship_model(rng(1), False), ship_rep),
        "ship_softmax.tflite": convert(ship_model(rng(1), True), ship_rep),
                "conv2d.tflite": convert(conv2d_model(rng(2)), conv_rep),
        "conv2d_per_tensor.tflite": convert(conv2d_model(rng(2)), conv_rep, per_tensor=True),
        "depthwise.tflite": convert(depthwise_model(rng(3)), rep_data(rng(103), [(1, 10, 9, 4)])),
        "pool_add.tflite": convert(pool_add_model(rng(4)), rep_data(rng(104), [(1, 9, 10, 3)])),
        "fc_shapes.tflite": convert(fc_model(rng(5)), rep_data(rng(105), [(1, 4, 6)])),
        "float_io.tflite": convert(float_io_model(rng(6)),
                                   rep_data(rng(106), [(1, 16, 1, 1), (1, 3)]), int8_io=False),
        "dims.tflite": convert(dims_model(rng(10)), rep_data(rng(110), [(1, 6, 1, 2)])),
        "mean.tflite": convert(mean_model(rng(7)), rep_data(rng(107), [(1, 7, 6, 2)])),
        "tanh.tflite": convert(tanh_model(rng(8)), rep_data(rng(108), [(1, 8)])),
        "float_only.tflite": convert(tanh_model(rng(9)), [], quantize=False),
    }
    for name, data in models.items():
        (out_dir / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_DIR)
