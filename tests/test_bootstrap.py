"""The bare-machine bootstrap: the system-package check `make test` runs first
(tests/sysdeps.sh) and what `pip install '.[device]'` puts on a Raspberry Pi.

The check runs here with MEDGE_NO_INSTALL=1 and a search path (MEDGE_SYSDEPS_PATH,
also PATH) made of symlinks to the tools that should be found, and no PostgreSQL
folder (MEDGE_SYSDEPS_PGLIB), so it neither installs anything nor sees
/usr/sbin/mosquitto or /usr/lib/postgresql.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib

from host.broker.launch import find_mosquitto
from host.services.storage.pgserver import find_bin_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "tests" / "sysdeps.sh"
CHECK_BUDGET_S = 5.0  # "stops at once": milliseconds in practice
HOST_ONLY = {"numpy", "scipy", "wfdb", "amqtt", "pandas", "matplotlib"}
PG_SERVER = ["initdb", "postgres"]  # found side by side (host/services/storage/pgserver.py)


def _tool(name: str) -> str:
    path = shutil.which(name) or (find_mosquitto() if name == "mosquitto" else None)
    if path is None and name in PG_SERVER and (pg_bin := find_bin_dir()) is not None:
        path = str(pg_bin / name)
    if path is None:
        pytest.fail(f"{name} is needed by this test (`make test` installs it first)")
    return path


def _bin_dir(tmp_path: Path, names: list[str]) -> Path:
    """A folder of symlinks to exactly these tools."""
    d = tmp_path / "bin"
    d.mkdir()
    for name in names:
        (d / name).symlink_to(_tool(name))
    return d


def _fake_venv(tmp_path: Path) -> Path:
    """A folder that looks like a made .venv (so the python3-venv check is not needed)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    return venv


def _env(bin_dir: Path, **extra: str) -> dict[str, str]:
    return {"PATH": str(bin_dir), "MEDGE_SYSDEPS_PATH": str(bin_dir), "MEDGE_NO_INSTALL": "1",
            "MEDGE_SYSDEPS_PGLIB": str(bin_dir / "no-postgresql"), **extra}


def _check(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    result = subprocess.run([_tool("bash"), str(SCRIPT)], env=env, capture_output=True,
                            text=True, timeout=30, check=False)
    return result, time.monotonic() - start


def test_missing_mosquitto_stops_at_once_with_one_line_naming_the_command(
        tmp_path: Path) -> None:
    bin_dir = _bin_dir(tmp_path, ["node", "npm", *PG_SERVER])
    result, elapsed = _check(_env(bin_dir, MEDGE_VENV=str(_fake_venv(tmp_path))))
    assert result.returncode != 0
    assert elapsed < CHECK_BUDGET_S, f"the check took {elapsed:.2f} s"
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("medge: mosquitto is needed by the broker tests"), lines
    assert re.search(r": run  (sudo )?apt-get install -y mosquitto$", lines[0]), lines


def test_missing_postgresql_server_names_the_package(tmp_path: Path) -> None:
    bin_dir = _bin_dir(tmp_path, ["mosquitto", "node", "npm", "initdb"])  # no postgres beside it
    result, elapsed = _check(_env(bin_dir, MEDGE_VENV=str(_fake_venv(tmp_path))))
    assert result.returncode != 0 and elapsed < CHECK_BUDGET_S
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("medge: PostgreSQL"), lines
    assert re.search(r": run  (sudo )?apt-get install -y postgresql$", lines[0]), lines
    # Debian's place for them (off PATH) is found too.
    pg_lib = tmp_path / "pglib"
    (pg_lib / "15").mkdir(parents=True)
    (tmp_path / "pg").mkdir()
    (pg_lib / "15" / "bin").symlink_to(_bin_dir(tmp_path / "pg", PG_SERVER))
    result, _ = _check(_env(bin_dir, MEDGE_VENV=str(_fake_venv(tmp_path / "pg")),
                            MEDGE_SYSDEPS_PGLIB=str(pg_lib)))
    assert result.returncode == 0, result.stderr


def test_every_tool_present_passes_silently(tmp_path: Path) -> None:
    bin_dir = _bin_dir(tmp_path, ["mosquitto", "node", "npm", *PG_SERVER])
    result, elapsed = _check(_env(bin_dir, MEDGE_VENV=str(_fake_venv(tmp_path))))
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    assert elapsed < CHECK_BUDGET_S


def test_python_without_venv_support_names_python3_venv(tmp_path: Path) -> None:
    bin_dir = _bin_dir(tmp_path, ["mosquitto", "node", "npm", *PG_SERVER])
    no_venv = tmp_path / "python3"  # a python whose `import ensurepip, venv` fails
    no_venv.write_text("#!/bin/sh\nexit 1\n")
    no_venv.chmod(0o755)
    env = _env(bin_dir, MEDGE_VENV=str(tmp_path / "absent"), PYTHON=str(no_venv))
    result, _ = _check(env)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].endswith("apt-get install -y python3-venv"), lines
    # The same check with a python that has venv (this one) passes.
    result, _ = _check({**env, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr


def test_make_test_stops_at_the_check_before_the_venv_and_pytest(tmp_path: Path) -> None:
    bin_dir = _bin_dir(tmp_path, ["node", "npm"])
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    env.update(MEDGE_SYSDEPS_PATH=str(bin_dir), MEDGE_NO_INSTALL="1")
    start = time.monotonic()
    # PY=/bin/false: should the check ever pass here, make fails at the venv step
    # instead of running the whole suite inside this test.
    result = subprocess.run([_tool("make"), "-s", "--no-print-directory", "-C", str(REPO_ROOT),
                             "test", "PY=/bin/false"],
                            env=env, capture_output=True, text=True, timeout=30, check=False)
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert elapsed < CHECK_BUDGET_S, f"make test took {elapsed:.2f} s to stop"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("medge: mosquitto is needed by the broker tests"), lines
    assert len(lines) == 2 and "sysdeps" in lines[1], lines  # make's own "Error 1" line
    assert result.stdout == ""


# -- packaging -------------------------------------------------------------------------


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(requirements: list[str]) -> set[str]:
    return {_canonical(re.match(r"[A-Za-z0-9_.-]+", r).group(0)) for r in requirements}


def test_base_dependencies_are_the_device_minimum_and_host_builds_on_host() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert _names(project["dependencies"]) == {"paho-mqtt"}
    assert not _names(extras["device"]) & HOST_ONLY
    assert {"numpy", "scipy", "wfdb", "amqtt", "jsonschema", "rich"} <= _names(extras["host"])
    for extra in ("eval", "train"):  # host-side work: needs everything the host tools need
        assert "medge[host]" in extras[extra], extra


@pytest.mark.network
@pytest.mark.timeout(150)
def test_device_extra_resolves_without_the_host_stack(tmp_path: Path) -> None:
    """Resolves '.[device]' against the package index (PyPI): needs the network and
    fails, never skips, without it."""
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--report", str(report), ".[device]"]
    try:
        result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=120, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("pip did not resolve '.[device]' within 120 s (it reads PyPI)")
    assert result.returncode == 0, result.stderr
    resolved = {_canonical(item["metadata"]["name"])
                for item in json.loads(report.read_text())["install"]}
    assert "paho-mqtt" in resolved and "medge" in resolved, resolved
    assert not resolved & HOST_ONLY, sorted(resolved & HOST_ONLY)
