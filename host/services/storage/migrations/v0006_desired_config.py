"""Schema 6: the configuration the fleet wants each device to run (``device_config``).

``medge fleet config ID --set KEY=VALUE`` writes a device's desired settings (the
keys a device takes from the ``set_config`` command: firmware/device.py
``SETTABLE_KEYS``), audited; the device reports what it runs in its birth message;
``medge fleet sync`` sends ``set_config`` to every online device whose reported
settings differ (host/services/fleetconfig.py).  ``desired`` is a JSON object.
"""

SQL = """
CREATE TABLE IF NOT EXISTS device_config (
    device_id   TEXT PRIMARY KEY,
    desired     TEXT NOT NULL DEFAULT '{}',
    updated_ms  INTEGER NOT NULL,
    updated_by  TEXT
);
"""
