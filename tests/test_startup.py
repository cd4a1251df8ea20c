"""``medge`` starts cheap: building the parser, ``--help`` of every command and
``medge fleet list`` import none of numpy, scipy, wfdb or amqtt (they cost a
few hundred ms; only the commands that compute need them).

Each case runs in a fresh interpreter and lists the heavy modules loaded when
the command has finished.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from host.services.store import Store

HEAVY = ("numpy", "scipy", "wfdb", "amqtt")
MEDGE = str(Path(sys.executable).with_name("medge"))

_PROBE = """
import json, sys
import host.cli
argvs, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
codes = []
for argv in argvs:
    try:
        codes.append(host.cli.main(argv))
    except SystemExit as exc:
        codes.append(exc.code)
print(json.dumps({"codes": codes,
                  "heavy": [m for m in heavy if m in sys.modules]}))
"""


def loaded_after(*argvs: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argvs), json.dumps(HEAVY)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_imports_nothing_heavy() -> None:
    assert loaded_after(["--help"]) == {"codes": [0], "heavy": []}


def test_every_commands_help_imports_nothing_heavy() -> None:
    argvs = [[*cmd, "--help"] for cmd in (
        ["demo"], ["sim"], ["broker"], ["ingest"], ["monitor"], ["fleet"], ["fleet", "list"],
        ["ecg"], ["ecg", "analyze"])]
    assert loaded_after(*argvs) == {"codes": [0] * len(argvs), "heavy": []}


def test_fleet_list_imports_nothing_heavy(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    Store(db).close()
    assert loaded_after(["fleet", "list", "--json", "--db", str(db)]) == {
        "codes": [0], "heavy": []}


@pytest.mark.parametrize("argv", [["demo", "--devices", "abc"], ["demo", "--duration", "inf"]])
def test_a_refused_argument_imports_nothing_heavy(argv: list[str]) -> None:
    assert loaded_after(argv) == {"codes": [2], "heavy": []}


def test_version() -> None:
    proc = subprocess.run([MEDGE, "--version"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0
    assert proc.stdout == f"medge {version('medge')}\n"
