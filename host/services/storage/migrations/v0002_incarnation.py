"""Schema 2: the messages key gains the device's incarnation ('' for messages that
carry none, which every schema-1 row is); conflicts and counters tables; the
counters start from the rows already there."""

SQL = """
CREATE TABLE messages_v2 (
    device_id    TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    type         TEXT NOT NULL,
    ts_ms        INTEGER NOT NULL,
    received_ms  INTEGER NOT NULL,
    payload      TEXT NOT NULL,
    incarnation  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (device_id, incarnation, seq)
) WITHOUT ROWID;
INSERT INTO messages_v2 (device_id, seq, type, ts_ms, received_ms, payload)
    SELECT device_id, seq, type, ts_ms, received_ms, payload FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v2 RENAME TO messages;
CREATE TABLE IF NOT EXISTS conflicts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms  INTEGER NOT NULL,
    device_id    TEXT NOT NULL,
    incarnation  TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    type         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    UNIQUE (device_id, incarnation, seq, payload)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS rejections_by_reason ON rejections (reason, id);
INSERT INTO counters SELECT 'rejected.' || reason, COUNT(*) FROM rejections WHERE true
    GROUP BY reason ON CONFLICT DO NOTHING;
INSERT INTO counters SELECT 'stored', COUNT(*) FROM messages WHERE true
    ON CONFLICT DO NOTHING;
"""
