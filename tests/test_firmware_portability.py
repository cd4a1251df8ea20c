"""firmware/ stays portable: only modules CPython and MicroPython both have.

The device core may import builtins-level modules and its own package; the
platform adapters listed in ADAPTERS may import their platform's library.
Every other module must also import cleanly inside the real MicroPython VM.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"
PORTABLE = {
    "array", "binascii", "errno", "gc", "hashlib", "json", "math", "micropython", "os", "select",
    "socket", "struct", "sys", "time", "uerrno", "uos", "uselect", "usocket", "utime",
}
ADAPTERS = {
    "net/links/paho.py": {"logging", "threading", "paho"},
    "ml/litert.py": {"ai_edge_litert", "tflite_runtime"},
    # The platform's buses, each library imported only when its bus is made.
    "hw/bus.py": {"machine", "smbus2", "spidev", "gpiod", "serial", "threading"},
    # The entry point: SIGTERM and TOML configs on CPython only (its MicroPython
    # run is tested in tests/test_device_main.py); ssl for the broker's TLS on the
    # MicroPython ports that have it (imported only when tls_ca_file is set);
    # machine.reset() after a reboot command, on MicroPython only.
    "main.py": {"signal", "tomllib", "ssl", "machine"},
}


def modules() -> list[Path]:
    return sorted(FIRMWARE.rglob("*.py"))


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(FIRMWARE)))
def test_imports_are_portable_and_there_are_no_asserts(path: Path) -> None:
    rel = str(path.relative_to(FIRMWARE))
    allowed = PORTABLE | {"firmware"} | ADAPTERS.get(rel, set())
    assert imported_roots(path) <= allowed, f"{rel} imports {imported_roots(path) - allowed}"
    tree = ast.parse(path.read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Assert)], (
        f"{rel}: validation must raise, not assert (MicroPython strips asserts)")


def test_every_core_module_imports_in_micropython(micropython) -> None:
    names = [
        "firmware." + str(p.relative_to(FIRMWARE).with_suffix("")).replace("/", ".")
        for p in modules()
        if str(p.relative_to(FIRMWARE)) not in ADAPTERS and p.name != "__init__.py"
    ]
    script = "\n".join(f"import {name}" for name in names) + f"\nprint('imported', {len(names)})"
    assert micropython(script).strip() == f"imported {len(names)}"
