"""Per-invoke latency of the pure-Python int8 engine (firmware/ml/tflite/) and of LiteRT.

For one ``.tflite`` file: milliseconds per invoke of

- ``engine_ms``: :class:`firmware.ml.tflite.Model` in this CPython;
- ``litert_ms``: LiteRT with its default (optimized) kernels, one thread;
- ``litert_ref_ms``: LiteRT with ``OpResolverType.BUILTIN_REF``, the reference
  kernels the engine is bit-exact with;

each the median over several timed batches of random int8 inputs (one thread,
inputs generated before timing), plus the model's ``macs``, ``arena_bytes`` and
``weights_bytes`` as the engine counts them and ``bit_exact`` (the engine's
outputs equal BUILTIN_REF's on every timed input);

- ``engine_mpy_ms``: the same engine inside the real MicroPython VM
  (tests/mpyvm.py, timed in the VM with ``time.ticks_ms``, best of 3 batches),
  and ``engine_mpy_taps_ms`` with its CONV_2D long-integer products turned
  off (the per-tap loop every convolution ran before; the figure the packing
  is measured against).  Both are per invoke, i.e. per beat.

    .venv/bin/python -m models.bench_tflite FILE.tflite [--invokes N] [--skip-micropython]
        [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from firmware.ml.tflite import Model


def _random_inputs(model: Model, count: int, seed: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        case = []
        for info in model.inputs:
            if info.dtype == "int8":
                case.append(rng.integers(-128, 128, size=info.shape, dtype=np.int8))
            else:
                case.append(rng.normal(0.0, 1.0, size=info.shape).astype(np.float32))
        cases.append(case)
    return cases


def _median_ms(run: Callable[[], None], count: int, batches: int = 5) -> float:
    """Median over ``batches`` of (batch time / count), in milliseconds."""
    run()  # warm-up
    times = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(count):
            run()
        times.append((time.perf_counter() - t0) / count * 1000.0)
    return statistics.median(times)


def _litert(buf: bytes, reference: bool) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs: dict[str, Any] = {"model_content": buf, "num_threads": 1}
    if reference:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_REF
    it = Interpreter(**kwargs)
    it.allocate_tensors()
    return it


def bench(model_path: str | Path, invokes: int = 200) -> dict[str, Any]:
    """Latency (ms per invoke) of the engine, LiteRT and LiteRT BUILTIN_REF on one model,
    plus its macs / arena_bytes / weights_bytes; see the module docstring."""
    path = Path(model_path)
    buf = path.read_bytes()
    t0 = time.perf_counter()
    model = Model(buf)
    build_ms = (time.perf_counter() - t0) * 1000.0
    cases = _random_inputs(model, invokes, seed=len(buf))
    flat = [[a.ravel().tolist() for a in case] for case in cases]

    state = {"k": 0}

    def engine_run() -> None:
        model.invoke(flat[state["k"] % invokes])
        state["k"] += 1

    result: dict[str, Any] = {
        "model": path.name,
        "engine_ms": _median_ms(engine_run, invokes),
        "engine_build_ms": build_ms,
        "macs": model.macs,
        "arena_bytes": model.arena_bytes,
        "weights_bytes": model.weights_bytes,
        "file_bytes": len(buf),
    }
    for key, reference in (("litert_ms", False), ("litert_ref_ms", True)):
        it = _litert(buf, reference)
        ins = it.get_input_details()

        def lite_run(it: Any = it, ins: Any = ins) -> None:
            case = cases[state["k"] % invokes]
            for d, a in zip(ins, case):
                it.set_tensor(d["index"], a)
            it.invoke()
            state["k"] += 1

        result[key] = _median_ms(lite_run, invokes)

    ref = _litert(buf, True)
    exact = True
    for case, inputs in zip(cases, flat):
        for d, a in zip(ref.get_input_details(), case):
            ref.set_tensor(d["index"], a)
        ref.invoke()
        for d, got in zip(ref.get_output_details(), model.invoke(inputs)):
            want = ref.get_tensor(d["index"]).ravel()
            exact = exact and bool(np.array_equal(want, np.frombuffer(got, dtype=want.dtype)))
    result["bit_exact"] = exact
    result["invokes"] = invokes
    return result


#: Runs in the VM: ``/data/model.tflite`` and ``/data/inputs.bin`` (int8 cases).
MPY_SCRIPT = """
import time
from firmware.ml.tflite import Model, kernels
def main():
    buf = open("/data/model.tflite", "rb").read()
    blob = open("/data/inputs.bin", "rb").read()
    for packed in (True, False):
        kernels._ARRAY_I_LE32 = packed and kernels._array_i_le32()
        model = Model(buf)
        sizes = [info.size for info in model.inputs]
        step = sum(sizes)
        cases = []
        for pos in range(0, len(blob) - step + 1, step):
            case = []
            for n in sizes:
                case.append([b - 256 if b > 127 else b for b in blob[pos:pos + n]])
                pos += n
            cases.append(case)
        model.invoke(cases[0])
        best = -1
        for _ in range(%(batches)d):
            t0 = time.ticks_ms()
            for case in cases:
                model.invoke(case)
            ms = time.ticks_diff(time.ticks_ms(), t0)
            if best < 0 or ms < best:
                best = ms
        print("RESULT", "packed" if packed else "taps", len(cases), best)
main()
"""


def bench_micropython(model_path: str | Path, invokes: int = 20,
                      batches: int = 3) -> dict[str, float]:
    """ms per invoke of the engine in the MicroPython VM: ``engine_mpy_ms`` (as
    shipped) and ``engine_mpy_taps_ms`` (CONV_2D on the per-tap loop)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import mpyvm

    buf = Path(model_path).read_bytes()
    cases = _random_inputs(Model(buf), invokes, seed=len(buf))
    blob = b"".join(a.astype(np.int8).tobytes() for case in cases for a in case)
    out = mpyvm.run_micropython(MPY_SCRIPT % {"batches": batches},
                                extra_files={"/data/model.tflite": buf,
                                             "/data/inputs.bin": blob}, timeout_s=900)
    res = {}
    for line in out.splitlines():
        if line.startswith("RESULT"):
            _, kind, n, ms = line.split()
            res["engine_mpy_ms" if kind == "packed" else "engine_mpy_taps_ms"] = int(ms) / int(n)
    if len(res) != 2:
        raise RuntimeError(f"no result in {out!r}")
    return res


def add_micropython(res: dict[str, Any], model_path: str | Path) -> None:
    """:func:`bench_micropython` into ``res`` (or ``engine_mpy_error``: VM missing)."""
    try:
        res.update(bench_micropython(model_path))
    except Exception as exc:  # VM missing or failing: still report CPython
        res["engine_mpy_error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def print_result(res: dict[str, Any]) -> None:
    print(f"{res['model']}: {res['macs']} MACs, arena {res['arena_bytes']} B, "
          f"weights {res['weights_bytes']} B, file {res['file_bytes']} B")
    print(f"  pure-Python engine (CPython) {res['engine_ms']:8.3f} ms/invoke"
          f"   (build {res['engine_build_ms']:.1f} ms)")
    print(f"  LiteRT optimized kernels     {res['litert_ms']:8.3f} ms/invoke")
    print(f"  LiteRT BUILTIN_REF           {res['litert_ref_ms']:8.3f} ms/invoke")
    print(f"  engine == BUILTIN_REF on all {res['invokes']} inputs: {res['bit_exact']}")
    if "engine_mpy_ms" in res:
        print(f"  pure-Python engine (MicroPython VM) {res['engine_mpy_ms']:8.2f} ms/invoke"
              f"   (per-tap CONV_2D loop: {res['engine_mpy_taps_ms']:.2f} ms)")
    elif "engine_mpy_error" in res:
        print(f"  MicroPython VM: not run ({res['engine_mpy_error']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a .tflite file")
    parser.add_argument("--invokes", type=int, default=200, help="invokes per timed batch")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--skip-micropython", action="store_true")
    args = parser.parse_args(argv)
    res = bench(args.model, args.invokes)
    if not args.skip_micropython:
        add_micropython(res, args.model)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print_result(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
