"""The MicroPython test harness (tests/mpyvm.py) is real and honest.

Every test here runs code in the actual MicroPython VM (WebAssembly port, via Node.js);
none is skipped when the VM is missing: that is an error telling what to install.
"""

from __future__ import annotations

import binascii
import shutil
from pathlib import Path
from typing import Callable

import mpyvm
import pytest
from mpyvm import MicroPythonError, MicroPythonUnavailable, package_files

RunMpy = Callable[..., str]

Q15_SOURCE = '''
Q15_MAX = 32767
Q15_MIN = -32768


def q15_mul(a, b):
    """Q15 x Q15 -> Q15, rounded half up, saturated."""
    p = (a * b + (1 << 14)) >> 15
    if p > Q15_MAX:
        return Q15_MAX
    if p < Q15_MIN:
        return Q15_MIN
    return p


def q15_dot(xs, ys):
    """Q30 accumulator: grows past 31 bits, i.e. past MicroPython's small ints."""
    acc = 0
    for x, y in zip(xs, ys):
        acc += x * y
    return acc
'''

Q15_SAMPLES = [-32768, -32767, -16384, -1, 0, 1, 3, 12345, 16384, 32767]


def q15_results(q15_mul: Callable[[int, int], int], q15_dot: Callable[..., int]) -> list[int]:
    """What both interpreters must compute (same expression on each side)."""
    products = [q15_mul(a, b) for a in Q15_SAMPLES for b in Q15_SAMPLES]
    return [*products, q15_dot([-32768] * 4096, [-32768] * 4096)]


def test_runs_inside_real_micropython(micropython: RunMpy) -> None:
    out = micropython(
        "import sys, micropython\n"
        "print(sys.implementation.name)\n"
        "print(*sys.implementation.version[:3])\n"
        "print(sys.platform)\n"
    )
    name, version, platform = out.splitlines()
    assert name == "micropython"
    assert tuple(map(int, version.split())) >= (1, 22)
    assert platform == "webassembly"


def test_temporary_package_matches_cpython_integers(micropython: RunMpy) -> None:
    script = (
        "from mpyvm_tmp_q15.fixed import q15_mul, q15_dot\n"
        f"Q15_SAMPLES = {Q15_SAMPLES!r}\n"
        "products = [q15_mul(a, b) for a in Q15_SAMPLES for b in Q15_SAMPLES]\n"
        "results = products + [q15_dot([-32768] * 4096, [-32768] * 4096)]\n"
        "print(' '.join(str(r) for r in results))\n"
    )
    out = micropython(
        script,
        packages=(),
        extra_files={
            "/lib/mpyvm_tmp_q15/__init__.py": "",
            "/lib/mpyvm_tmp_q15/fixed.py": Q15_SOURCE,
        },
    )
    namespace: dict[str, object] = {}
    exec(Q15_SOURCE, namespace)
    expected = q15_results(namespace["q15_mul"], namespace["q15_dot"])  # type: ignore[arg-type]
    assert [int(v) for v in out.split()] == expected
    assert expected[0] == 32767  # -1.0 * -1.0 saturated (unsaturated: 32768)
    assert expected[-1] == 1 << 42  # and a long int


def test_binary_files_arrive_byte_exact(micropython: RunMpy) -> None:
    blob = bytes(range(256)) * 3
    out = micropython(
        "import binascii\n"
        "with open('/data/deep/er/blob.bin', 'rb') as f:\n"
        "    print(binascii.hexlify(f.read()).decode())\n",
        packages=(),
        extra_files={"/data/deep/er/blob.bin": blob},
    )
    assert out == binascii.hexlify(blob).decode() + "\n"


def test_exception_raises_micropython_error_with_traceback(micropython: RunMpy) -> None:
    script = "def check(v):\n    raise ValueError('pulse out of range: %d' % v)\ncheck(251)\n"
    with pytest.raises(MicroPythonError) as info:
        micropython(script, packages=())
    assert info.value.returncode == 1
    assert "Traceback (most recent call last)" in info.value.stderr
    assert "ValueError: pulse out of range: 251" in info.value.stderr
    assert "ValueError: pulse out of range: 251" in str(info.value)


def test_sys_exit_codes(micropython: RunMpy) -> None:
    assert micropython("import sys\nprint('done')\nsys.exit(0)", packages=()) == "done\n"
    with pytest.raises(MicroPythonError) as info:
        micropython("import sys\nsys.exit(3)", packages=())
    assert info.value.returncode == 3


def test_timeout_is_an_error(micropython: RunMpy) -> None:
    with pytest.raises(MicroPythonError, match="timed out"):
        micropython("while True:\n    pass\n", packages=(), timeout_s=1)


def test_stdout_round_trips_exactly(micropython: RunMpy) -> None:
    line = "%05d é µ ∑ 🫀 — ünïcødé\t|"
    script = (
        f"for i in range(3000):\n    print({line!r} % i)\n"
        "print('no newline at the end\\r', end='')\n"
        "import sys\nsys.stdout.buffer.write(b'\\xff\\x00')\n"
    )
    out = micropython(script, packages=())
    expected = "".join(line % i + "\n" for i in range(3000)) + "no newline at the end\r"
    assert out.encode("utf-8", "surrogateescape") == expected.encode("utf-8") + b"\xff\x00"


def test_import_firmware_with_every_module_copied(micropython: RunMpy) -> None:
    files = package_files("firmware")
    assert "/lib/firmware/__init__.py" in files
    script = (
        "import firmware\n"
        "print(firmware.__name__)\n"
        f"for path in {sorted(files)!r}:\n"
        "    with open(path, 'rb') as f:\n"
        "        print(path, len(f.read()))\n"
    )
    out = micropython(script)
    assert out.splitlines() == ["firmware"] + [f"{p} {len(files[p])}" for p in sorted(files)]


def test_missing_npm_package_says_what_to_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(mpyvm, "PACKAGE_DIR", tmp_path / "absent")
    with pytest.raises(MicroPythonUnavailable, match=r"npm ci --prefix tests/mpy"):
        mpyvm.run_micropython("print(1)", packages=())
    assert not issubclass(MicroPythonUnavailable, MicroPythonError)


def test_missing_node_says_what_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(MicroPythonUnavailable, match=r"node.*npm ci --prefix tests/mpy"):
        mpyvm.run_micropython("print(1)", packages=())
