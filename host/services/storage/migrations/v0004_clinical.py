"""Schema 4: the tables of the coming issues (accounts, patients and their device
assignments, blood pressure, beats, rhythm events, observations, alerts, advice,
commands, OTA, the audit log), the devices' incarnation and provisioning time,
and time indexes for pruning.  Columns and keys: host/services/store.py."""

SQL = """
ALTER TABLE devices ADD COLUMN incarnation TEXT;
ALTER TABLE devices ADD COLUMN provisioned_ms INTEGER;
CREATE INDEX IF NOT EXISTS messages_by_time ON messages (device_id, ts_ms);
CREATE INDEX IF NOT EXISTS messages_by_received ON messages (received_ms);
CREATE INDEX IF NOT EXISTS rejections_by_time ON rejections (received_ms);
CREATE INDEX IF NOT EXISTS conflicts_by_time ON conflicts (received_ms);
CREATE INDEX IF NOT EXISTS conflicts_by_device ON conflicts (device_id, id);

CREATE TABLE IF NOT EXISTS accounts (
    username       TEXT PRIMARY KEY,
    device_id      TEXT,
    role           TEXT NOT NULL CHECK (role IN ('device', 'host', 'operator', 'admin')),
    password_hash  TEXT NOT NULL,
    incarnation    TEXT,
    created_ms     INTEGER NOT NULL,
    disabled_ms    INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS accounts_by_device ON accounts (device_id)
    WHERE device_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS patients (
    patient_id  TEXT PRIMARY KEY,
    profile     TEXT NOT NULL DEFAULT '{}',
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   TEXT NOT NULL,
    patient_id  TEXT NOT NULL,
    from_ms     INTEGER NOT NULL,
    until_ms    INTEGER,
    CHECK (until_ms IS NULL OR until_ms > from_ms),
    UNIQUE (device_id, from_ms)
);
CREATE INDEX IF NOT EXISTS assignments_by_patient ON assignments (patient_id, from_ms);

CREATE TABLE IF NOT EXISTS bp_readings (
    device_id       TEXT NOT NULL,
    incarnation     TEXT NOT NULL DEFAULT '',
    seq             INTEGER NOT NULL,
    ts_ms           INTEGER NOT NULL,
    systolic_mmhg   INTEGER,
    diastolic_mmhg  INTEGER,
    mean_mmhg       INTEGER,
    pulse_bpm       INTEGER,
    method          TEXT,
    quality         TEXT NOT NULL,
    PRIMARY KEY (device_id, incarnation, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bp_readings_by_time ON bp_readings (device_id, ts_ms);

CREATE TABLE IF NOT EXISTS beat_counts (
    device_id    TEXT NOT NULL,
    incarnation  TEXT NOT NULL DEFAULT '',
    seq          INTEGER NOT NULL,
    minute_ms    INTEGER NOT NULL,
    n_beats      INTEGER NOT NULL DEFAULT 0,
    s_beats      INTEGER NOT NULL DEFAULT 0,
    v_beats      INTEGER NOT NULL DEFAULT 0,
    f_beats      INTEGER NOT NULL DEFAULT 0,
    q_beats      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, incarnation, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS beat_counts_by_time ON beat_counts (device_id, minute_ms);

CREATE TABLE IF NOT EXISTS rhythm_events (
    device_id    TEXT NOT NULL,
    incarnation  TEXT NOT NULL DEFAULT '',
    seq          INTEGER NOT NULL,
    rhythm       TEXT NOT NULL,
    onset_ms     INTEGER NOT NULL,
    offset_ms    INTEGER,
    evidence     TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (device_id, incarnation, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rhythm_events_by_time ON rhythm_events (device_id, onset_ms);

CREATE TABLE IF NOT EXISTS event_beats (
    device_id    TEXT NOT NULL,
    incarnation  TEXT NOT NULL DEFAULT '',
    seq          INTEGER NOT NULL,
    beat_index   INTEGER NOT NULL,
    ts_ms        INTEGER NOT NULL,
    label        TEXT NOT NULL,
    rr_ms        INTEGER,
    PRIMARY KEY (device_id, incarnation, seq, beat_index)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_beats_by_time ON event_beats (device_id, ts_ms);

CREATE TABLE IF NOT EXISTS observations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    obs_uid      TEXT NOT NULL UNIQUE,
    patient_id   TEXT NOT NULL,
    device_id    TEXT,
    ts_ms        INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    value        REAL,
    unit         TEXT,
    entered_by   TEXT NOT NULL,
    entered_ms   INTEGER NOT NULL,
    note         TEXT
);
CREATE INDEX IF NOT EXISTS observations_by_time ON observations (patient_id, ts_ms);

CREATE TABLE IF NOT EXISTS alerts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_uid    TEXT NOT NULL UNIQUE,
    device_id    TEXT,
    patient_id   TEXT,
    ts_ms        INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    severity     TEXT NOT NULL,
    source       TEXT NOT NULL,
    detail       TEXT NOT NULL DEFAULT '{}',
    acked_ms     INTEGER,
    acked_by     TEXT,
    cleared_ms   INTEGER
);
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (device_id, ts_ms);
CREATE INDEX IF NOT EXISTS alerts_by_patient ON alerts (patient_id, ts_ms);

CREATE TABLE IF NOT EXISTS advice (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    advice_uid   TEXT NOT NULL UNIQUE,
    patient_id   TEXT NOT NULL,
    device_id    TEXT,
    ts_ms        INTEGER NOT NULL,
    rule         TEXT NOT NULL,
    score        INTEGER,
    text         TEXT NOT NULL,
    rationale    TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS advice_by_time ON advice (patient_id, ts_ms);

CREATE TABLE IF NOT EXISTS commands (
    command_id   TEXT PRIMARY KEY,
    device_id    TEXT NOT NULL,
    kind         TEXT NOT NULL,
    body         TEXT NOT NULL DEFAULT '{}',
    created_ms   INTEGER NOT NULL,
    created_by   TEXT,
    sent_ms      INTEGER,
    expires_ms   INTEGER
);
CREATE INDEX IF NOT EXISTS commands_by_time ON commands (device_id, created_ms);
CREATE TABLE IF NOT EXISTS command_acks (
    device_id    TEXT NOT NULL,
    incarnation  TEXT NOT NULL DEFAULT '',
    seq          INTEGER NOT NULL,
    command_id   TEXT NOT NULL,
    ts_ms        INTEGER NOT NULL,
    result       TEXT NOT NULL,
    detail       TEXT,
    PRIMARY KEY (device_id, incarnation, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS command_acks_by_command ON command_acks (command_id);
CREATE INDEX IF NOT EXISTS command_acks_by_time ON command_acks (device_id, ts_ms);

CREATE TABLE IF NOT EXISTS ota_campaigns (
    campaign_id    TEXT PRIMARY KEY,
    artifact_kind  TEXT NOT NULL CHECK (artifact_kind IN ('firmware', 'model')),
    version        TEXT NOT NULL,
    sha256         TEXT NOT NULL,
    signature      TEXT,
    created_ms     INTEGER NOT NULL,
    created_by     TEXT,
    state          TEXT NOT NULL DEFAULT 'draft',
    rollout        TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS ota_jobs (
    campaign_id  TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending',
    updated_ms   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    detail       TEXT,
    PRIMARY KEY (campaign_id, device_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ota_jobs_by_device ON ota_jobs (device_id, updated_ms);

CREATE TABLE IF NOT EXISTS audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms      INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    subject    TEXT,
    detail     TEXT NOT NULL DEFAULT '{}',
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS audit_log_by_time ON audit_log (ts_ms);
"""
