"""Run code inside the real MicroPython VM from pytest.

The VM is the WebAssembly port of MicroPython, npm package
``@micropython/micropython-webassembly-pyscript`` pinned in ``tests/mpy/package.json``,
run by Node.js through ``tests/mpy/run.mjs``.  Install it once with::

    npm ci --prefix tests/mpy

Usage::

    out = run_micropython("from firmware.hw import compat\\nprint(compat.IS_MICROPYTHON)")

Every ``.py`` file of the named repo packages is copied to ``/lib/<package>/...``
in the VM (``/lib`` is on MicroPython's default ``sys.path``).  Each call starts
a fresh VM (~0.1 s including Node start-up), so calls share no state.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence, Union

REPO_ROOT = Path(__file__).resolve().parent.parent
MPY_DIR = REPO_ROOT / "tests" / "mpy"
RUNNER = MPY_DIR / "run.mjs"
PACKAGE_NAME = "@micropython/micropython-webassembly-pyscript"
PACKAGE_VERSION = "1.27.0"
PACKAGE_DIR = MPY_DIR / "node_modules" / PACKAGE_NAME
INSTALL_HINT = "run `npm ci --prefix tests/mpy` in the repo root (or `make test`, which does it)"

FileContent = Union[str, bytes]


class MicroPythonError(RuntimeError):
    """The script failed inside the VM; the message holds the VM's traceback."""

    def __init__(self, message: str, stdout: str = "", stderr: str = "", returncode: int = 1):
        super().__init__(message)
        self.stdout = stdout
        self.stderr = stderr
        self.returncode = returncode


class MicroPythonUnavailable(RuntimeError):
    """Node.js or the pinned npm package is missing.  Deliberately *not* a
    MicroPythonError, so a test expecting a script failure cannot pass by accident."""


def _check_installed() -> str:
    """Return the path of ``node``; raise MicroPythonUnavailable with the fix otherwise."""
    node = shutil.which("node")
    if node is None:
        raise MicroPythonUnavailable(f"`node` is not on PATH: install Node.js, then {INSTALL_HINT}")
    manifest = PACKAGE_DIR / "package.json"
    if not manifest.is_file():
        raise MicroPythonUnavailable(f"{PACKAGE_NAME} is not installed: {INSTALL_HINT}")
    installed = json.loads(manifest.read_text(encoding="utf-8")).get("version")
    if installed != PACKAGE_VERSION:
        raise MicroPythonUnavailable(
            f"{PACKAGE_NAME} {installed} is installed, {PACKAGE_VERSION} is pinned: {INSTALL_HINT}"
        )
    return node


def package_files(package: str) -> dict[str, bytes]:
    """Every ``.py`` file of the repo package ``package`` (a top-level folder such as
    ``firmware``), keyed by its path in the VM: ``/lib/<package>/<relative path>``."""
    root = REPO_ROOT / package
    if not (root / "__init__.py").is_file():
        raise ValueError(f"{package!r} is not a package folder in {REPO_ROOT}")
    return {
        f"/lib/{package}/{path.relative_to(root).as_posix()}": path.read_bytes()
        for path in sorted(root.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def _wire(content: FileContent) -> Union[str, dict[str, str]]:
    """JSON form of one file: text as is, bytes as ``{"base64": ...}``."""
    if isinstance(content, bytes):
        return {"base64": base64.b64encode(content).decode("ascii")}
    return content


def run_micropython(
    script: str,
    packages: Sequence[str] = ("firmware",),
    extra_files: Mapping[str, FileContent] | None = None,
    timeout_s: float = 120,
    heap_bytes: int | None = None,
) -> str:
    """Run ``script`` as ``__main__`` in a fresh MicroPython VM and return its stdout.

    ``packages`` are repo folders copied to ``/lib/<name>/``; ``extra_files`` maps
    absolute VM paths (e.g. ``/lib/tmp_pkg/mod.py``) to text or bytes, and wins
    over package files on the same path.  ``heap_bytes`` is the initial GC heap
    (default 16 MiB in run.mjs); this port grows the heap on demand, so it is not
    a cap.  The script's stderr, if any, is copied to ``sys.stderr``.  Stdout is
    returned byte-exactly (decoded as UTF-8; any invalid bytes become surrogates,
    recoverable with ``.encode("utf-8", "surrogateescape")``).

    Raises MicroPythonError (with the VM's traceback) if the script raises or
    exits non-zero or runs past ``timeout_s``; MicroPythonUnavailable if Node.js
    or the npm package is missing.
    """
    node = _check_installed()
    files: dict[str, FileContent] = {}
    for package in packages:
        files.update(package_files(package))
    for path, content in (extra_files or {}).items():
        if not path.startswith("/"):
            raise ValueError(f"extra_files paths must be absolute VM paths, got {path!r}")
        files[path] = content
    job: dict[str, object] = {"files": {p: _wire(c) for p, c in files.items()}, "script": script}
    if heap_bytes is not None:
        job["heap_bytes"] = heap_bytes

    try:
        proc = subprocess.run(
            [node, str(RUNNER)],
            input=json.dumps(job).encode("utf-8"),
            capture_output=True,
            timeout=timeout_s,
            cwd=MPY_DIR,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise MicroPythonError(f"MicroPython script timed out after {timeout_s} s") from exc

    stdout = proc.stdout.decode("utf-8", "surrogateescape")
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        tail = "".join(stdout.splitlines(keepends=True)[-20:])
        shown = f"\n--- last stdout lines before the failure ---\n{tail}" if tail else ""
        raise MicroPythonError(
            f"MicroPython script failed (exit {proc.returncode}):\n{stderr}{shown}",
            stdout=stdout,
            stderr=stderr,
            returncode=proc.returncode,
        )
    if stderr:  # the script's own sys.stderr output: show it in pytest's captured stderr
        sys.stderr.write(stderr)
    return stdout
