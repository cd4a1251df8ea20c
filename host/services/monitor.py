"""``medge monitor``: the ward a nurse reads, refreshed in place.

Reads the store (read-only; WAL lets it read while ingest writes) once per refresh
(host.services.monitor_data) and shows one row per device: patient, HR, SpO2, pulse,
respiratory rate, temperature, the last blood pressure with its age, NEWS2 with its
risk and the open alerts, state and last seen.  A withheld value shows its reason
(``--lead_off``, ``--low_perfusion``); a value of a stale or offline device is shown as
``~72``, never as current; a banner says when data has stopped arriving.  On a
terminal the table is a textual DataTable that scrolls for hundreds of devices
(host.services.monitor_tui).  When stdout is not a terminal (CI, a pipe, a log file,
``medge demo`` under a test) it prints a plain summary per refresh period instead (or
the caller's own lines: ``medge monitor --json`` prints one JSON document per period).

A store that does not exist yet, or is being created right now, is shown as
"waiting for devices"; a path that can never be a store is refused before the
first refresh (:func:`check_store`, :class:`host.services.store.StoreError`).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from host.services.monitor_data import QUIET_S, VITALS, Bed, Reader, Snapshot
from host.services.store import DeviceRow, Store, StoreError, StoreProblem

_PLAIN_DEVICE_LINES_MAX = 10


def _age(ms: int | None, now: int) -> str:
    if ms is None:
        return "-"
    seconds = max(0.0, (now - ms) / 1000)
    return f"{seconds:.1f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def check_store(db_path: str | Path) -> None:
    """Raise :class:`StoreError` if ``db_path`` exists and is no medge store, or can never
    become one (a file where a folder should be); a missing store is fine (waited for)."""
    path = Path(db_path)
    if path.exists():
        read_rows(path)
        return
    for folder in path.parents:
        if folder.exists():
            if not folder.is_dir():
                raise StoreError(path, StoreProblem.OTHER,
                                 f"cannot be a store: {folder} is a file, not a folder")
            return


def read_rows(db_path: str | Path) -> list[DeviceRow]:
    """The devices in the store; none while the store does not exist or is being created."""
    try:
        with Store(db_path, readonly=True) as store:
            return store.devices()
    except FileNotFoundError:
        return []
    except StoreError as exc:
        if exc.problem is StoreProblem.EMPTY:  # being created right now: next refresh
            return []
        raise


def fmt_value(bed: Bed, field: str, divisor: int, decimals: int) -> str:
    """One vital as the nurse reads it: the number, ``~`` plus the number when it is not
    current (a stale or offline device), ``--reason`` when withheld, ``-`` when absent."""
    v = bed.values.get(field)
    if v is None:
        reason = bed.withheld.get(field, "absent")
        return "-" if reason == "absent" else f"--{reason}"
    text = f"{v / divisor:.{decimals}f}" if divisor != 1 else str(v)
    return text if bed.current else f"~{text}"


def fmt_nibp(bed: Bed, now: int) -> str:
    if bed.nibp is None:
        return "-"
    s, d, m, at = bed.nibp
    text = f"{s}/{d if d is not None else '?'}"
    if m is not None:
        text += f" ({m})"
    return f"{text} {_age(at, now)}"


def fmt_news2(bed: Bed, now: int | None = None) -> str:
    """Score (``+``: only a lower bound, a parameter missing) and risk; with ``now``, the
    assessment's age when it is older than 30 s (a large ward's NEWS2 waits its turn)."""
    if bed.news2 is None:
        return "..." if bed.pending else "-"
    text = f"{bed.news2['score']}{'+' if bed.news2['lower_bound'] else ''} {bed.news2['risk']}"
    at = bed.news2.get("assessed_ms")
    if now is not None and at is not None and now - at > 30_000:
        text += f" ({_age(at, now).removesuffix(' ago')})"
    return text


def fmt_alerts(bed: Bed) -> str:
    return ",".join(f"{a['kind']}({a['severity']})" if a.get("severity") else a["kind"]
                    for a in bed.alerts) or "-"


def plain_lines(snap: Snapshot) -> list[str]:
    """The summary printed when stdout is not a terminal: a count line, the banner, and
    one line per device for a small fleet."""
    beds, now = snap.beds, snap.now_ms
    online = sum(b.device.state == "online" for b in beds)
    lines = [
        f"monitor: {len(beds)} devices, {online} online, "
        f"{sum(b.device.messages for b in beds)} messages stored"
    ]
    if snap.banner:
        lines.append(f"monitor: WARNING {snap.banner}")
    if len(beds) <= _PLAIN_DEVICE_LINES_MAX:
        for b in beds:
            r = b.device
            vitals = " ".join(f"{label.lower()}={fmt_value(b, f, div, dec)}"
                              for f, label, div, dec in VITALS)
            line = (f"  {r.device_id} {b.patient_id or '-'} {vitals} "
                    f"nibp={fmt_nibp(b, now).replace(' ', '@', 1)} {r.state} "
                    f"last_seen={_age(r.last_seen_ms, now)} msgs={r.messages}")
            if b.news2 is not None or b.pending or b.alerts:
                line += f" news2={fmt_news2(b, now).replace(' ', ':')} alerts={fmt_alerts(b)}"
            lines.append(line)
    return lines


def run_monitor(
    db_path: str | Path,
    *,
    refresh_s: float = 1.0,
    stop: threading.Event | None = None,
    until: threading.Thread | None = None,
    out: TextIO | None = None,
    plain: bool | None = None,
    plain_period_s: float = 5.0,
    lines: Callable[[Snapshot], list[str]] | None = None,
    news2_period_s: float | None = 10.0,
    quiet_s: float = QUIET_S,
) -> None:
    """Show the ward until ``stop`` is set, ``until`` ends, or Ctrl-C (or ``q`` in the
    table).

    On a terminal (``out`` is the process's stdout and a tty, and not ``plain``) a
    scrolling textual table (host.services.monitor_tui); otherwise
    ``lines(snapshot)`` (implies ``plain``; default :func:`plain_lines`) printed every
    ``plain_period_s``.  Raises :class:`StoreError` if the store breaks."""
    out = out or sys.stdout
    stop = stop or threading.Event()
    if lines is not None:
        plain = True
    elif plain is None:
        plain = not (out is sys.stdout and out.isatty())
    make_lines = lines or plain_lines
    reader = Reader(db_path, news2_period_s=news2_period_s, quiet_s=quiet_s)

    def done() -> bool:
        return stop.is_set() or (until is not None and not until.is_alive())

    if plain:
        next_print = 0.0
        while not done():
            if time.monotonic() >= next_print:
                next_print = time.monotonic() + plain_period_s
                for line in make_lines(reader.read()):
                    print(line, file=out, flush=True)
            stop.wait(min(refresh_s, 0.2))
        return
    from host.services.monitor_tui import MonitorApp

    app = MonitorApp(reader, refresh_s=refresh_s, done=done)
    app.run()
    if app.error is not None:
        raise app.error
