"""Schema 3: vitals keyed (device_id, incarnation, seq), like messages.

Under schema 2 a later incarnation's vitals whose seq was already in ``vitals``
was kept in ``messages`` only.  Every existing vitals row is kept, with the
incarnation of the message it came from (the first-received vitals message of
that (device, seq) with the same ts_ms; '' if none is found), and each vitals
message missing from ``vitals`` is added from its stored payload.  The export
reads the payloads in ``messages``, so its output for existing data is the same.
"""

from __future__ import annotations

import json
from typing import Any

SQL = """
CREATE TABLE vitals_v3 (
    device_id    TEXT NOT NULL,
    incarnation  TEXT NOT NULL DEFAULT '',
    seq          INTEGER NOT NULL,
    ts_ms        INTEGER NOT NULL,
    window_ms    INTEGER NOT NULL,
    hr_bpm       INTEGER,
    beats        INTEGER NOT NULL,
    quality      TEXT NOT NULL,
    PRIMARY KEY (device_id, incarnation, seq)
) WITHOUT ROWID;
INSERT INTO vitals_v3 (device_id, incarnation, seq, ts_ms, window_ms, hr_bpm, beats, quality)
    SELECT v.device_id,
           COALESCE((SELECT m.incarnation FROM messages m
                     WHERE m.device_id = v.device_id AND m.seq = v.seq
                       AND m.type = 'vitals' AND m.ts_ms = v.ts_ms
                     ORDER BY m.received_ms, m.incarnation LIMIT 1), ''),
           v.seq, v.ts_ms, v.window_ms, v.hr_bpm, v.beats, v.quality
    FROM vitals v;
DROP TABLE vitals;
ALTER TABLE vitals_v3 RENAME TO vitals;
CREATE INDEX IF NOT EXISTS vitals_by_time ON vitals (device_id, ts_ms);
"""


def up(db: Any) -> None:
    """After :data:`SQL`: the vitals messages that had no vitals row get one
    (a field missing from the payload: window 0, 0 beats, quality unreliable)."""
    missing = db.execute(
        "SELECT m.device_id, m.incarnation, m.seq, m.ts_ms, m.payload FROM messages m "
        "WHERE m.type = 'vitals' AND NOT EXISTS (SELECT 1 FROM vitals v WHERE "
        "v.device_id = m.device_id AND v.incarnation = m.incarnation AND v.seq = m.seq)"
    ).fetchall()
    for device_id, incarnation, seq, ts_ms, payload in missing:
        try:
            doc = json.loads(payload)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            doc = {}
        db.execute(
            "INSERT INTO vitals (device_id, incarnation, seq, ts_ms, window_ms, hr_bpm, beats, "
            "quality) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (device_id, incarnation, seq, ts_ms, doc.get("window_ms", 0),
             doc.get("hr_bpm"), doc.get("beats", 0), doc.get("quality", "unreliable")))
