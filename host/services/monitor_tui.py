"""``medge monitor`` on a terminal: a textual DataTable of the ward that scrolls for
hundreds of devices (arrow keys, PgUp/PgDn, the mouse), with a banner above it when
data has stopped arriving.  The data comes from host.services.monitor_data (read in a
worker thread, so scrolling stays smooth while the store is read); the cell texts from
host.services.monitor (the same as the plain summary).  ``q`` or Ctrl-C quits.

Colours: a withheld value yellow with its reason, a value that is not current (the
device stale or offline) dim with ``~``, NEWS2 by risk (low green, low-medium yellow,
medium orange, high red, as the RCP chart), open alerts red, the banner white on red.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from host.services.monitor import _age, fmt_alerts, fmt_news2, fmt_nibp, fmt_value
from host.services.monitor_data import VITALS, Bed, Reader, Snapshot

RISK_STYLE = {"low": "green", "low-medium": "yellow", "medium": "dark_orange",
              "high": "bold white on red"}
COLUMNS = ("device", "patient", *(label for _, label, _, _ in VITALS), "NIBP", "NEWS2",
           "alerts", "state", "last seen")


def row_cells(bed: Bed, now: int) -> list[Text]:
    """The styled cells of one device row (COLUMNS)."""
    dim = "" if bed.current else "dim"
    cells = [Text(bed.device.device_id), Text(bed.patient_id or "-")]
    for field, _label, div, dec in VITALS:
        text = fmt_value(bed, field, div, dec)
        style = "yellow" if text.startswith("--") else dim
        cells.append(Text(text, style=style, justify="right"))
    cells.append(Text(fmt_nibp(bed, now), style=dim))
    risk = bed.news2["risk"] if bed.news2 else None
    cells.append(Text(fmt_news2(bed, now), style=RISK_STYLE.get(risk or "", "")))
    cells.append(Text(fmt_alerts(bed), style="bold red" if bed.alerts else ""))
    state = bed.device.state
    cells.append(Text(state, style="green" if state == "online" else "bold red"))
    cells.append(Text(_age(bed.device.last_seen_ms, now), justify="right"))
    return cells


class MonitorApp(App[None]):
    """The ward table; ``done()`` true (the demo's fleet ended, a stop event) exits."""

    TITLE = "medge monitor"
    # Ctrl-C stops it as it stops the plain monitor (textual would only hint at ctrl+q)
    BINDINGS: ClassVar = [("q", "quit", "quit"),
                          Binding("ctrl+c", "quit", "quit", show=False, priority=True)]
    CSS = """
    #banner { background: red; color: white; text-style: bold; height: auto; display: none; }
    #banner.shown { display: block; }
    DataTable { height: 1fr; }
    """

    def __init__(self, reader: Reader, *, refresh_s: float = 1.0,
                 done: Callable[[], bool] | None = None) -> None:
        super().__init__()
        self.reader = reader
        self.refresh_s = refresh_s
        self.done = done or (lambda: False)
        self.error: BaseException | None = None
        self.snapshot: Snapshot | None = None
        self._keys: list[str] = []
        self._shown: dict[str, list[Text]] = {}

    def compose(self) -> ComposeResult:
        yield Static("", id="banner")
        yield DataTable(id="ward", cursor_type="row", zebra_stripes=True)
        yield Static("waiting for devices...", id="status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*COLUMNS)
        self.load()
        self.set_interval(self.refresh_s, self.load)
        self.set_interval(0.2, self._check_done)

    def _check_done(self) -> None:
        if self.done():
            self.exit()

    @work(thread=True, exclusive=True, group="read")
    def load(self) -> None:
        try:
            snap = self.reader.read()
        except Exception as exc:  # the store broke: leave, the caller reports it
            self.error = exc
            self.call_from_thread(self.exit)
            return
        self.call_from_thread(self.show, snap)

    def show(self, snap: Snapshot) -> None:
        """Put a snapshot on screen (rows updated in place while the devices are the
        same, so the scroll position and the cursor stay)."""
        self.snapshot = snap
        table = self.query_one(DataTable)
        keys = [b.device.device_id for b in snap.beds]
        rows = [row_cells(b, snap.now_ms) for b in snap.beds]
        if keys == self._keys:  # only the cells that changed (a refresh of 300 rows)
            for key, cells in zip(keys, rows):
                old = self._shown.get(key, [])
                for i, (col, cell) in enumerate(zip(table.columns, cells)):
                    if i >= len(old) or (old[i].plain, old[i].style) != (cell.plain, cell.style):
                        table.update_cell(key, col, cell)
                self._shown[key] = cells
        else:
            cursor = table.cursor_row
            table.clear()
            for key, cells in zip(keys, rows):
                table.add_row(*cells, key=key)
            if keys:
                table.move_cursor(row=min(cursor, len(keys) - 1))
            self._keys = keys
            self._shown = dict(zip(keys, rows))
        banner = self.query_one("#banner", Static)
        banner.update(f"DATA NOT ARRIVING: {snap.banner}" if snap.banner else "")
        banner.set_class(bool(snap.banner), "shown")
        online = sum(b.device.state == "online" for b in snap.beds)
        alerts = sum(len(b.alerts) for b in snap.beds)
        self.query_one("#status", Static).update(
            f"{len(keys)} devices, {online} online, {alerts} open alerts"
            if keys else "waiting for devices...")
