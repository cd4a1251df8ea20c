"""firmware/ml/tflite/ inside the real MicroPython VM equals LiteRT BUILTIN_REF bit for bit.

The .tflite bytes and a block of random int8 inputs (with the -128 / 127 extremes)
go into the VM's file system; the script builds the model, runs every input and
prints each output as hex.  CPython computes the same inputs with LiteRT's
reference kernels; the two must agree exactly.
"""

from __future__ import annotations

import binascii
from pathlib import Path

import numpy as np
import pytest

ai_edge_litert = pytest.importorskip("ai_edge_litert.interpreter")

DATA = Path(__file__).resolve().parent / "data" / "tflite"

SCRIPT = """
import binascii
from firmware.ml.tflite import Model

with open('/data/model.tflite', 'rb') as f:
    model = Model(f.read())
sizes = [info.size for info in model.inputs]
with open('/data/inputs.bin', 'rb') as f:
    blob = f.read()
step = sum(sizes)
for case in range(len(blob) // step):
    pos = case * step
    inputs = []
    for n in sizes:
        inputs.append([b - 256 if b > 127 else b for b in blob[pos:pos + n]])
        pos += n
    outs = model.invoke(inputs)
    print(' '.join(binascii.hexlify(bytes(o)).decode() for o in outs))
"""


def random_inputs(shapes: list[tuple[int, ...]], count: int, seed: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    cases = []
    for k in range(count):
        case = []
        for shape in shapes:
            if k % 10 == 0:
                a = np.full(shape, -128 if k % 20 else 127, np.int8)
            elif k % 10 == 1:
                a = rng.choice(np.array([-128, 127], np.int8), size=shape)
            else:
                a = rng.integers(-128, 128, size=shape, dtype=np.int8)
            case.append(a)
        cases.append(case)
    return cases


def litert_outputs(buf: bytes, cases: list[list[np.ndarray]]) -> list[str]:
    it = ai_edge_litert.Interpreter(
        model_content=buf, experimental_op_resolver_type=ai_edge_litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    lines = []
    for case in cases:
        for d, a in zip(it.get_input_details(), case):
            it.set_tensor(d["index"], a)
        it.invoke()
        lines.append(" ".join(
            binascii.hexlify(it.get_tensor(d["index"]).astype(np.int8).tobytes()).decode()
            for d in it.get_output_details()))
    return lines


@pytest.mark.parametrize(("name", "count"), [
    ("ship.tflite", 250),  # two int8 inputs: beat window + RR features
    ("conv2d.tflite", 100),  # per-channel CONV_2D: strides, dilation, RELU6, RELU_N1_TO_1
    ("ship_softmax.tflite", 40),  # the gemmlowp fixed-point softmax
    ("pool_add.tflite", 40),  # max pool on memoryview slices, average pool, ADD
])
def test_micropython_engine_matches_litert_reference(micropython, name: str, count: int) -> None:
    buf = (DATA / name).read_bytes()
    it = ai_edge_litert.Interpreter(model_content=buf)
    shapes = [tuple(d["shape"]) for d in it.get_input_details()]
    cases = random_inputs(shapes, count, seed=len(buf))
    blob = b"".join(a.tobytes() for case in cases for a in case)
    out = micropython(SCRIPT, extra_files={"/data/model.tflite": buf, "/data/inputs.bin": blob},
                      timeout_s=120)
    got = out.splitlines()
    want = litert_outputs(buf, cases)
    assert len(got) == count
    mismatches = [k for k, (g, w) in enumerate(zip(got, want)) if g != w]
    assert not mismatches, (
        f"{len(mismatches)} of {count} cases differ; first {mismatches[0]}: "
        f"VM {got[mismatches[0]]} LiteRT {want[mismatches[0]]}")
