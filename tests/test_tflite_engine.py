"""firmware/ml/tflite/ against LiteRT's reference kernels, bit for bit.

Every committed test model (tests/data/tflite/, made by models/make_test_models.py)
runs on thousands of random int8 inputs (plus the extremes -128 / 127 and
constant, alternating and saturating patterns) in the pure-Python engine and in
LiteRT with ``OpResolverType.BUILTIN_REF``; every output element must be equal.
Float-input models get random, huge (saturating) and exactly-half-way values.
Then the error paths: truncated and corrupt files, a wrong file identifier,
unsupported operators and types, bad invoke arguments, each with the message
checked, and a mutation fuzz that may only ever raise TfliteError.
"""

from __future__ import annotations

import random
import struct
from array import array
from pathlib import Path

import numpy as np
import pytest

from firmware.ml.tflite import Model, TensorInfo, TfliteError, UnsupportedModelError

ai_edge_litert = pytest.importorskip("ai_edge_litert.interpreter")
Interpreter = ai_edge_litert.Interpreter
OpResolverType = ai_edge_litert.OpResolverType

DATA = Path(__file__).resolve().parent / "data" / "tflite"

# model -> number of random inputs (sized so the whole file runs in well under 30 s).
CASES = {
    "ship.tflite": 2000,
    "ship_softmax.tflite": 1000,
    "conv2d.tflite": 1000,
    "conv2d_per_tensor.tflite": 1000,
    "depthwise.tflite": 1000,
    "pool_add.tflite": 1000,
    "fc_shapes.tflite": 3000,
    "float_io.tflite": 3000,
    "dims.tflite": 3000,
}


def reference(buf: bytes) -> Interpreter:
    it = Interpreter(model_content=buf, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    return it


def int8_input(rng: np.random.Generator, shape: tuple[int, ...], k: int) -> np.ndarray:
    """Random int8 data; every few cases an extreme pattern."""
    pattern = k % 16
    if pattern == 0:
        return np.full(shape, -128, np.int8)
    if pattern == 1:
        return np.full(shape, 127, np.int8)
    if pattern == 2:
        return np.resize(np.array([-128, 127], np.int8), shape)
    if pattern == 3:
        return rng.choice(np.array([-128, 127], np.int8), size=shape)
    if pattern == 4:
        return rng.integers(-8, 8, size=shape, dtype=np.int8)
    return rng.integers(-128, 128, size=shape, dtype=np.int8)


def float_input(rng: np.random.Generator, shape: tuple[int, ...], k: int,
                scale: float) -> np.ndarray:
    pattern = k % 8
    if pattern == 0:
        return (rng.normal(0.0, 100.0, size=shape)).astype(np.float32)  # saturates
    if pattern == 1 and scale:
        # Exactly half-way between two quantization steps (where rounding matters).
        return ((rng.integers(-130, 130, size=shape) + 0.5) * np.float32(scale)).astype(
            np.float32)
    if pattern == 2:
        return np.zeros(shape, np.float32)
    return rng.normal(0.0, 2.0, size=shape).astype(np.float32)


def quantize_scale(it: Interpreter, input_index: int) -> float:
    """Scale of the QUANTIZE op that reads a float model input (0.0 if none)."""
    for op in it._get_ops_details():
        if op["op_name"] == "QUANTIZE" and input_index in list(op["inputs"]):
            return float(it._get_tensor_details(op["outputs"][0], 0)["quantization"][0])
    return 0.0


@pytest.mark.parametrize("name", sorted(CASES))
def test_bit_exact_with_litert_builtin_ref(name: str) -> None:
    buf = (DATA / name).read_bytes()
    model = Model(buf)
    it = reference(buf)
    in_details = it.get_input_details()
    out_details = it.get_output_details()
    assert [i.name for i in model.inputs] == [d["name"] for d in in_details]
    assert [i.shape for i in model.inputs] == [tuple(d["shape"]) for d in in_details]
    assert [o.shape for o in model.outputs] == [tuple(d["shape"]) for d in out_details]
    scales = [quantize_scale(it, d["index"]) for d in in_details]
    rng = np.random.default_rng(len(buf))
    compared = 0
    for k in range(CASES[name]):
        inputs = []
        for d, info, scale in zip(in_details, model.inputs, scales):
            shape = tuple(d["shape"])
            if info.dtype == "int8":
                a = int8_input(rng, shape, k)
            else:
                a = float_input(rng, shape, k, scale)
            inputs.append(a)
            it.set_tensor(d["index"], a)
        it.invoke()
        got = model.invoke([a.ravel().tolist() for a in inputs])
        for d, g in zip(out_details, got):
            want = it.get_tensor(d["index"]).ravel()
            mine = np.frombuffer(g, dtype=want.dtype) if isinstance(g, array) else np.array(g)
            if not np.array_equal(want, mine):
                bad = np.nonzero(want != mine)[0]
                raise AssertionError(
                    f"{name} case {k} output {d['name']}: {len(bad)} elements differ, "
                    f"first at {bad[0]}: LiteRT {want[bad[0]]} engine {mine[bad[0]]}")
            compared += want.size
    assert compared >= CASES[name]


def test_tensor_info_and_sizes_of_the_ship_shaped_model() -> None:
    model = Model((DATA / "ship.tflite").read_bytes())
    beat, rr = model.inputs
    assert isinstance(beat, TensorInfo)
    assert (beat.name, beat.shape, beat.dtype) == ("beat", (1, 90, 1), "int8")
    assert (rr.name, rr.shape, rr.dtype) == ("rr", (1, 8), "int8")
    it = reference((DATA / "ship.tflite").read_bytes())
    for info, d in zip(model.inputs + model.outputs,
                       it.get_input_details() + it.get_output_details()):
        scale, zp = d["quantization"]
        assert info.scale == pytest.approx(scale, rel=1e-7) and info.zero_point == zp
    assert model.outputs[0].shape == (1, 5)
    # conv 90*8*5 + conv 41*12*5*8 + dense 128*32 + dense 32*5
    assert model.macs == 3600 + 19680 + 4096 + 160
    weights = 8 * 5 + 8 * 4 + 12 * 5 * 8 + 12 * 4 + 128 * 32 + 32 * 4 + 32 * 5 + 5 * 4
    assert model.weights_bytes == weights
    # The largest live pair: the first conv's output (720) with its pooled output (360).
    assert 720 + 360 <= model.arena_bytes <= 720 + 360 + 90 + 8
    out = model.invoke([[0] * 90, [0] * 8])
    assert isinstance(out[0], array) and out[0].typecode == "b" and len(out[0]) == 5


def test_invoke_results_are_independent_copies() -> None:
    model = Model((DATA / "ship.tflite").read_bytes())
    first = model.invoke([[5] * 90, [1] * 8])[0]
    kept = array("b", first)
    model.invoke([[-100] * 90, [90] * 8])
    assert first == kept


def test_float_io_model_reports_float_tensors() -> None:
    model = Model((DATA / "float_io.tflite").read_bytes())
    assert [i.dtype for i in model.inputs] == ["float32", "float32"]
    assert [o.dtype for o in model.outputs] == ["float32", "float32"]
    out = model.invoke([[0.25] * 16, [1.0, -2.0, 3.0]])
    assert out[0].typecode == "f"


# --- errors -----------------------------------------------------------------


def ship_bytes() -> bytes:
    return (DATA / "ship.tflite").read_bytes()


def test_truncated_file_names_what_is_cut() -> None:
    buf = ship_bytes()
    with pytest.raises(TfliteError, match=r"^truncated: .* ends at byte \d+ of 6000$"):
        Model(buf[:6000])
    with pytest.raises(TfliteError, match="truncated: the file has 5 bytes"):
        Model(buf[:5])


def test_every_truncation_fails_cleanly() -> None:
    buf = ship_bytes()
    for n in list(range(0, 64)) + list(range(64, len(buf), 97)):
        with pytest.raises(TfliteError):
            Model(buf[:n])


def test_wrong_file_identifier() -> None:
    buf = bytearray(ship_bytes())
    buf[4:8] = b"XXXX"
    with pytest.raises(TfliteError) as exc:
        Model(bytes(buf))
    assert str(exc.value) == "not a TFLite model (file identifier b'XXXX', expected b'TFL3')"
    with pytest.raises(TfliteError, match="not a TFLite model"):
        Model(b"PK\x03\x04" + bytes(100))


def test_not_bytes() -> None:
    with pytest.raises(TfliteError, match="model must be bytes"):
        Model("ship.tflite")  # type: ignore[arg-type]


def test_unsupported_operator_is_named() -> None:
    with pytest.raises(UnsupportedModelError) as exc:
        Model((DATA / "tanh.tflite").read_bytes())
    assert str(exc.value) == "unsupported operator TANH (op 1)"
    with pytest.raises(UnsupportedModelError, match=r"unsupported operator MEAN \(op 1\)"):
        Model((DATA / "mean.tflite").read_bytes())


def test_float_model_is_rejected_with_the_type() -> None:
    with pytest.raises(UnsupportedModelError) as exc:
        Model((DATA / "float_only.tflite").read_bytes())
    assert str(exc.value) == (
        "unsupported tensor type FLOAT32 for input 0 of FULLY_CONNECTED (op 0)")
    assert isinstance(exc.value, ValueError)


def _set_schema_version(buf: bytes, version: int) -> bytes:
    root = struct.unpack_from("<I", buf, 0)[0]
    vt = root - struct.unpack_from("<i", buf, root)[0]
    off = struct.unpack_from("<H", buf, vt + 4)[0]
    out = bytearray(buf)
    struct.pack_into("<I", out, root + off, version)
    return bytes(out)


def test_wrong_schema_version() -> None:
    with pytest.raises(TfliteError, match=r"unsupported schema version 2 \(expected 3\)"):
        Model(_set_schema_version(ship_bytes(), 2))


def test_invoke_checks_its_arguments() -> None:
    model = Model(ship_bytes())
    with pytest.raises(ValueError, match="the model has 2 inputs, got 1"):
        model.invoke([[0] * 90])
    with pytest.raises(ValueError) as exc:
        model.invoke([[0] * 89, [0] * 8])
    assert str(exc.value) == "input 0 has shape (1, 90, 1) but the data has 89 values"
    with pytest.raises(ValueError, match=r"input 1 \('rr'\) value 128 is outside int8"):
        model.invoke([[0] * 90, [0] * 7 + [128]])
    with pytest.raises(ValueError, match=r"input 0 \('beat'\) value -129 is outside int8"):
        model.invoke([[-129] + [0] * 89, [0] * 8])
    with pytest.raises(ValueError, match=r"input 1 \('rr'\) must hold ints"):
        model.invoke([[0] * 90, [0.5] * 8])
    fmodel = Model((DATA / "float_io.tflite").read_bytes())
    with pytest.raises(ValueError, match=r"input 1 .* is not finite"):
        fmodel.invoke([[0.0] * 16, [0.0, float("nan"), 0.0]])
    # The model still works after rejected calls.
    assert len(model.invoke([[1] * 90, [2] * 8])[0]) == 5


def test_mutated_models_only_ever_raise_tflite_error() -> None:
    """Random byte corruption: the engine either rejects the file with TfliteError or
    builds a model that runs; never IndexError, struct.error, MemoryError ..."""
    rnd = random.Random(7)
    sources = [ship_bytes(), (DATA / "pool_add.tflite").read_bytes(),
               (DATA / "float_io.tflite").read_bytes()]
    accepted = 0
    for trial in range(1500):
        buf = bytearray(sources[trial % len(sources)])
        for _ in range(rnd.choice((1, 2, 4))):
            pos = rnd.randrange(len(buf))
            buf[pos] = rnd.randrange(256) if trial % 2 else buf[pos] ^ (1 << rnd.randrange(8))
        try:
            model = Model(bytes(buf))
        except TfliteError:
            continue
        accepted += 1
        inputs = [[0.0] * i.size if i.dtype == "float32" else [0] * i.size
                  for i in model.inputs]
        model.invoke(inputs)
    assert accepted > 0  # (many flips land in weights, which stay valid models)


def test_single_precision_port_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where floats are single precision, QUANTIZE takes the exact integer path
    (``_f32_div_round``); it must give what LiteRT gives, half-way values included."""
    import firmware.ml.tflite as engine

    monkeypatch.setattr(engine, "_F64", False)
    buf = (DATA / "float_io.tflite").read_bytes()
    model = Model(buf)
    it = reference(buf)
    in_details = it.get_input_details()
    scales = [quantize_scale(it, d["index"]) for d in in_details]
    rng = np.random.default_rng(11)
    for k in range(400):
        inputs = [float_input(rng, tuple(d["shape"]), k, s) for d, s in zip(in_details, scales)]
        for d, a in zip(in_details, inputs):
            it.set_tensor(d["index"], a)
        it.invoke()
        got = model.invoke([a.ravel().tolist() for a in inputs])
        for d, g in zip(it.get_output_details(), got):
            assert np.array_equal(it.get_tensor(d["index"]).ravel(), np.frombuffer(g, np.float32))


@pytest.mark.parametrize("name", ["conv2d.tflite", "conv2d_per_tensor.tflite", "pool_add.tflite",
                                  "ship.tflite", "dims.tflite"])
def test_packed_conv_equals_the_tap_loop(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """CONV_2D as long-integer products (kernels._PackedConv) gives the tap loop's
    outputs exactly; every convolution of these models takes the packed path, and
    with packing off (a port without 4-byte little-endian array('i')) every one
    takes the tap loop."""
    from firmware.ml.tflite import kernels

    buf = (DATA / name).read_bytes()
    packed = Model(buf)
    convs = [k for k in packed._kernels if isinstance(k, kernels._Conv2D)]
    assert convs and all(k.packed is not None for k in convs)
    monkeypatch.setattr(kernels, "_ARRAY_I_LE32", False)
    taps = Model(buf)
    assert all(k.packed is None for k in taps._kernels if isinstance(k, kernels._Conv2D))
    rng = np.random.default_rng(5)
    for k in range(100):
        inputs = [int8_input(rng, i.shape, k).ravel().tolist() for i in packed.inputs]
        assert [bytes(o) for o in packed.invoke(inputs)] == [bytes(o) for o in taps.invoke(inputs)]


def test_packing_refuses_what_it_cannot_hold() -> None:
    """A filter whose product digits could reach 2**29, or a window dilated far
    beyond its input, stays on the tap loop."""
    from firmware.ml.tflite import kernels

    assert kernels._packs([[127] * 16000], 1, 90, 16000, 1, 1, 1, 1)
    assert not kernels._packs([[127] * 17000], 1, 90, 17000, 1, 1, 1, 1)
    assert not kernels._packs([[1] * 9], 9, 10, 3, 3, 3, 1 << 24, 1)
