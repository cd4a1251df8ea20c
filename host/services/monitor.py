"""``medge monitor``: a live table of the fleet, refreshed in place.

Reads the store (read-only; WAL lets it read while ingest writes) once per
refresh and shows one row per device: id, patient, heart rate, state, last
seen.  When stdout is not a terminal (CI, a pipe, a log file) it prints a
plain summary line per refresh period instead of redrawing a table (or the
caller's own lines: ``medge monitor --json`` prints one JSON document per period).

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

from rich.console import Console
from rich.live import Live
from rich.table import Table

from host.services.store import DeviceRow, Store, StoreError, StoreProblem, now_ms

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


def device_table(rows: list[DeviceRow], now: int, title: str = "medge fleet") -> Table:
    table = Table(title=title, expand=False)
    for name, justify in (
        ("device", "left"),
        ("patient", "left"),
        ("HR bpm", "right"),
        ("state", "left"),
        ("last seen", "right"),
        ("msgs", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        state = "[green]online[/]" if row.state == "online" else f"[red]{row.state}[/]"
        hr = "-" if row.hr_bpm is None else str(row.hr_bpm)
        table.add_row(
            row.device_id,
            row.patient_id or "-",
            hr,
            state,
            _age(row.last_seen_ms, now),
            str(row.messages),
        )
    if not rows:
        table.caption = "waiting for devices..."
    return table


def plain_lines(rows: list[DeviceRow], now: int) -> list[str]:
    online = sum(r.state == "online" for r in rows)
    lines = [
        f"monitor: {len(rows)} devices, {online} online, "
        f"{sum(r.messages for r in rows)} messages stored"
    ]
    if len(rows) <= _PLAIN_DEVICE_LINES_MAX:
        for r in rows:
            hr = "-" if r.hr_bpm is None else r.hr_bpm
            lines.append(
                f"  {r.device_id} {r.patient_id or '-'} hr={hr} {r.state} "
                f"last_seen={_age(r.last_seen_ms, now)} msgs={r.messages}"
            )
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
    lines: Callable[[list[DeviceRow], int], list[str]] | None = None,
) -> None:
    """Show the fleet until ``stop`` is set, ``until`` ends, or Ctrl-C.

    ``lines(rows, now_ms)`` (implies ``plain``) makes the text printed each period
    instead of :func:`plain_lines`.  Raises :class:`StoreError` if the store breaks."""
    out = out or sys.stdout
    stop = stop or threading.Event()
    if lines is not None:
        plain = True
    elif plain is None:
        plain = not out.isatty()
    make_lines = lines or plain_lines

    def done() -> bool:
        return stop.is_set() or (until is not None and not until.is_alive())

    if plain:
        next_print = 0.0
        while not done():
            if time.monotonic() >= next_print:
                next_print = time.monotonic() + plain_period_s
                for line in make_lines(read_rows(db_path), now_ms()):
                    print(line, file=out, flush=True)
            stop.wait(min(refresh_s, 0.2))
        return
    console = Console(file=out)
    with Live(
        device_table(read_rows(db_path), now_ms()),
        console=console,
        refresh_per_second=4,
        transient=False,
    ) as live:
        while not done():
            live.update(device_table(read_rows(db_path), now_ms()))
            stop.wait(refresh_s)
        live.update(device_table(read_rows(db_path), now_ms()))
