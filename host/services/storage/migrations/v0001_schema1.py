"""Schema 1 (the first release): meta, devices, messages keyed (device_id, seq),
vitals, rejections.  A store made by that release is already here (baselined)."""

SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    device_id      TEXT PRIMARY KEY,
    patient_id     TEXT,
    fw_version     TEXT,
    model_version  TEXT,
    sample_rate_hz INTEGER,
    boot_id        INTEGER,
    state          TEXT NOT NULL DEFAULT 'offline',
    state_reason   TEXT,
    first_seen_ms  INTEGER NOT NULL,
    last_seen_ms   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    device_id    TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    type         TEXT NOT NULL,
    ts_ms        INTEGER NOT NULL,
    received_ms  INTEGER NOT NULL,
    payload      TEXT NOT NULL,
    PRIMARY KEY (device_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vitals (
    device_id  TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    ts_ms      INTEGER NOT NULL,
    window_ms  INTEGER NOT NULL,
    hr_bpm     INTEGER,
    beats      INTEGER NOT NULL,
    quality    TEXT NOT NULL,
    PRIMARY KEY (device_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vitals_by_time ON vitals (device_id, ts_ms);
CREATE TABLE IF NOT EXISTS rejections (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms  INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    detail       TEXT NOT NULL,
    topic        TEXT NOT NULL,
    payload_head TEXT NOT NULL
);
"""
