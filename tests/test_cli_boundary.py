"""The ``medge`` boundary: every bad argument is refused before anything starts,
in one line of the user's terms on stderr, with a non-zero exit code and no
traceback; the demo's verdict fails when any part of it fails.

Each case runs ``medge`` as a user would (a subprocess, loopback only, small
durations) unless it needs to break something inside (then ``main([...])``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from host.cli import main
from host.commands.common import MAX_DEVICES
from host.services.demo import Demo, demo_dirs
from host.services.store import Store

MEDGE = str(Path(sys.executable).with_name("medge"))


def medge(*args: str, cwd: Path, timeout: float = 60,
          prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MEDGE_DB"}
    return subprocess.run([*prefix, MEDGE, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int,
                          *needles: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("medge"), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def free_port() -> int:
    from host.broker.launch import free_port as pick

    return pick("127.0.0.1")


# -- numbers ----------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ("demo", "--duration", "inf"),
    ("demo", "--duration", "nan"),
    ("demo", "--duration", "-5"),
    ("demo", "--duration", "0"),
    ("demo", "--speed", "inf"),
    ("demo", "--speed", "fast"),
    ("sim", "--duration", "inf"),
    ("sim", "--speed", "1e999"),
    ("monitor", "--refresh", "inf"),
    ("monitor", "--refresh", "0"),
    ("ingest", "--connect-timeout", "-1"),
])
def test_only_finite_positive_numbers(tmp_path: Path, args: tuple[str, ...]) -> None:
    line = assert_one_line_error(medge(*args, "--db", str(tmp_path / "m.db"), cwd=tmp_path)
                                 if args[0] != "sim" else medge(*args, cwd=tmp_path), 2,
                                 f"medge {args[0]}: {args[1]}: expected a")
    assert repr(args[2]) in line
    assert not (tmp_path / "m.db").exists()  # nothing started


def test_devices_not_a_number_in_the_users_terms(tmp_path: Path) -> None:
    line = assert_one_line_error(medge("demo", "--devices", "abc", cwd=tmp_path), 2)
    assert line.startswith(f"medge demo: --devices: expected a whole number from 1 to "
                           f"{MAX_DEVICES}, got 'abc'")
    assert "_positive_int" not in line


@pytest.mark.parametrize("command", ["demo", "sim"])
def test_devices_over_the_cap_refused_before_anything_starts(tmp_path: Path,
                                                            command: str) -> None:
    t0 = time.monotonic()
    proc = medge(command, "--devices", "100000000", "--duration", "1", cwd=tmp_path)
    assert_one_line_error(proc, 2, "--devices", str(MAX_DEVICES), "'100000000'")
    assert time.monotonic() - t0 < 10
    assert not (tmp_path / "var").exists()  # no store, no broker folder, no device state


def test_the_cap_is_the_fleets_own_limit() -> None:
    from sim.fleet import FleetParams

    FleetParams(n_devices=MAX_DEVICES, sample_rate_hz=250)
    with pytest.raises(ValueError, match=str(MAX_DEVICES)):
        FleetParams(n_devices=MAX_DEVICES + 1, sample_rate_hz=250)


@pytest.mark.parametrize("args, needle", [
    (("demo", "--seed", "-1"), "--seed"),
    (("demo", "--rate", "500"), "--rate: expected one of 250, 360, got '500'"),
    (("demo", "--broker", "rabbit"), "--broker: invalid choice"),
    (("sim", "--port", "70000"), "--port: expected a whole number from 1 to 65535"),
    (("broker", "--port", "x"), "--port"),
    (("ingest", "--port", "0"), "--port"),
    (("fleet", "list", "--bogus"), "unrecognized arguments: --bogus"),
    (("fleet",), "FLEET_COMMAND"),
    ((), "COMMAND"),
    (("teleport",), "invalid choice: 'teleport'"),
])
def test_bad_arguments_are_one_line(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    assert_one_line_error(medge(*args, cwd=tmp_path), 2, needle)


@pytest.mark.parametrize("args, needle", [
    (("demo", "--faults", "meteor@1s"), "unknown kind 'meteor'"),
    (("demo", "--scenario", "no_such_patient"), "no_such_patient"),
    (("demo", "--sensor", "ads1292", "--rate", "360"), "250 Hz"),
    (("demo", "--scenario", "ecgsyn", "--vitals", "all"), "ECG only"),
    (("demo", "--vitals", "some"), "vitals must be"),
    (("sim", "--faults", "partition:#9@1s", "--devices", "2"), "no device number 9"),
    (("sim", "--scenario", "no_such_patient"), "no_such_patient"),
])
def test_bad_fleet_specs_leave_nothing_behind(tmp_path: Path, args: tuple[str, ...],
                                              needle: str) -> None:
    proc = medge(*args, "--duration", "1", cwd=tmp_path)
    assert_one_line_error(proc, 2, needle)
    assert list(tmp_path.iterdir()) == []


def test_demo_library_refuses_non_finite_numbers_before_starting(tmp_path: Path) -> None:
    for kw in ({"duration_s": float("inf")}, {"duration_s": 10.0, "speed": float("nan")}):
        with pytest.raises(ValueError, match="finite"):
            Demo(devices=1, db_path=tmp_path / "m.db", **{"duration_s": None, **kw})
    assert not (tmp_path / "m.db").exists()


def test_sim_state_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a folder\n")
    proc = medge("sim", "--broker", "auto", "--state-dir", str(tmp_path / "state"),
                 "--duration", "1", cwd=tmp_path)
    assert_one_line_error(proc, 2, "--state-dir", "state")


# -- --db -------------------------------------------------------------------
def _bad_store(tmp_path: Path, kind: str) -> Path:
    if kind == "folder":
        path = tmp_path / "store.db"
        path.mkdir()
    elif kind == "text":
        path = tmp_path / "notes.txt"
        path.write_text("shopping list: milk, eggs\n")
    else:
        import sqlite3

        path = tmp_path / "other.db"
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE t (x)")
        db.close()
    return path


def _store_args(command: str, db: Path) -> tuple[str, ...]:
    return {
        "fleet": ("fleet", "list", "--json", "--db", str(db)),
        "demo": ("demo", "--devices", "1", "--duration", "1", "--db", str(db)),
        "ingest": ("ingest", "--port", str(free_port()), "--connect-timeout", "1",
                   "--db", str(db)),
        "monitor": ("monitor", "--db", str(db)),
    }[command]


@pytest.mark.parametrize("command", ["fleet", "demo", "ingest", "monitor"])
@pytest.mark.parametrize("kind, needle", [
    ("folder", "is a folder"),
    ("text", "not a SQLite database"),
    ("sqlite", "not a medge store"),
])
def test_db_that_is_not_a_store(tmp_path: Path, command: str, kind: str, needle: str) -> None:
    db = _bad_store(tmp_path, kind)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = medge(*_store_args(command, db), cwd=tmp_path, timeout=30)
    assert_one_line_error(proc, 2, str(db), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing made


def _read_only(folder: Path) -> tuple[str, ...]:
    """A prefix that runs the command with ``folder`` read-only (root ignores modes:
    a read-only bind mount in a private mount namespace, gone with the process)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return ()
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: no way to make a read-only folder")
    probe = subprocess.run(["unshare", "-m", "sh", "-c",
                            'mount --bind -o ro "$0" "$0" && ! touch "$0/x" 2>/dev/null',
                            str(folder)], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("no read-only bind mount here (unshare -m not permitted)")
    return ("unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && shift && exec "$@"',
            str(folder), "--")


@pytest.mark.parametrize("command, existing", [
    ("fleet", True), ("monitor", True), ("demo", False), ("ingest", False), ("ingest", True),
])
def test_db_in_a_read_only_folder(tmp_path: Path, command: str, existing: bool) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "medge.db"
    if existing:
        Store(db).close()
    try:
        proc = medge(*_store_args(command, db), cwd=tmp_path, prefix=_read_only(folder),
                     timeout=30)
    finally:
        folder.chmod(0o755)
    assert_one_line_error(proc, 2, str(db), "read-only")


def test_db_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("a file where the store's folder should be\n")
    for command in ("demo", "ingest", "monitor"):
        proc = medge(*_store_args(command, tmp_path / "var" / "medge.db"), cwd=tmp_path)
        assert_one_line_error(proc, 2, "is a file, not a folder")


# -- no broker --------------------------------------------------------------
def test_ingest_without_a_broker_fails_in_bounded_time(tmp_path: Path) -> None:
    port = free_port()
    t0 = time.monotonic()
    proc = medge("ingest", "--port", str(port), "--connect-timeout", "1",
                 "--db", str(tmp_path / "m.db"), cwd=tmp_path, timeout=30)
    elapsed = time.monotonic() - t0
    assert_one_line_error(proc, 1, f"no MQTT broker reachable at 127.0.0.1:{port} after 1 s",
                          "refused", "medge broker")
    assert elapsed < 8, elapsed


def test_ingest_help_says_what_happens_without_a_broker(tmp_path: Path) -> None:
    proc = medge("ingest", "--help", cwd=tmp_path)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "--connect-timeout seconds (10), then exits 1" in text
    assert "a WARNING per" in text


# -- the demo's verdict and folders ------------------------------------------
def test_demo_folders_belong_to_the_store(tmp_path: Path) -> None:
    a, b = demo_dirs(tmp_path / "a.db"), demo_dirs(tmp_path / "b.db")
    assert a == (tmp_path / "a.db.d" / "broker", tmp_path / "a.db.d" / "devices")
    assert not set(a) & set(b)


def test_a_failing_fleet_thread_fails_the_verdict(tmp_path: Path, monkeypatch,
                                                  capsys) -> None:
    from sim.fleet import Fleet

    def boom(self, duration_s, stop):
        raise RuntimeError("a device fell over")

    monkeypatch.setattr(Fleet, "run", boom)
    db = tmp_path / "crash.db"
    code = main(["demo", "--devices", "1", "--duration", "2", "--db", str(db)])
    out = capsys.readouterr()
    assert code == 1
    verdict = out.out.strip().splitlines()[-1]
    assert verdict == ("demo: FAILED: the fleet thread failed: RuntimeError: a device "
                       "fell over")
    assert "OK" not in out.out and "Traceback" not in out.out + out.err
    assert (tmp_path / "crash.db.d" / "broker").is_dir()
    assert (tmp_path / "crash.db.d" / "devices" / "sim-0001.json").is_file()
