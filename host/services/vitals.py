"""``medge vitals analyze``: a WFDB record through the device's vital-sign code.

The work is :func:`sim.vitals_replay.analyze_record` (simulator/replay code:
``models/eval_vitals.py`` runs the same); this module prints it: CSV
``time_s,heart_rate,pulse_rate,resp_rate`` (contract 8) or, with ``--json``, a
list of objects with the same keys (null where withheld) and the
per-modulation respiratory rates.  Exit 2 with one line for a record that
cannot be read or has neither an ECG nor a PPG channel.
"""

from __future__ import annotations

import csv
import json
import sys
from typing import TextIO

from sim.records import RecordError
from sim.vitals_replay import analyze_record

__all__ = ["run_analyze"]


def run_analyze(record: str, out: TextIO | None = None, as_json: bool = False) -> int:
    """CSV (or ``as_json``: a JSON list) of :func:`analyze_record` on ``out``; exit code."""
    out = out or sys.stdout
    try:
        rows = analyze_record(record)
    except RecordError as exc:
        print(f"medge vitals: {exc}", file=sys.stderr)
        return 2
    if as_json:
        from firmware.vitals.resp import MODULATION_NAMES

        data = [{"time_s": r.time_s, "heart_rate": r.heart_rate, "pulse_rate": r.pulse_rate,
                 "resp_rate": None if r.resp_rate_x10 is None else r.resp_rate_x10 / 10,
                 "resp_modulations": {MODULATION_NAMES[i]: (v / 10 if v else None)
                                      for i, v in enumerate(r.resp_estimates_x10)}}
                for r in rows]
        json.dump(data, out, indent=1)
        out.write("\n")
        return 0
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["time_s", "heart_rate", "pulse_rate", "resp_rate"])
    for row in rows:
        w.writerow(row.csv_row())
    return 0
