"""Schema 5: each device row counts its stored messages (``devices.messages``).

``Store.devices()`` (``medge fleet list``, the monitor's every read) counted them
with ``COUNT(*)`` over the messages index: a scan of every message the device ever
sent, per device per read, which grows with the years of history the store keeps.
The writer now adds each batch's count to the device's row (in the same
transaction as the rows), and ``medge db prune`` subtracts what it deletes, so the
column equals ``COUNT(*)`` of the device's rows in ``messages`` at every commit.
"""

SQL = """
ALTER TABLE devices ADD COLUMN messages INTEGER NOT NULL DEFAULT 0;
UPDATE devices SET messages = (SELECT COUNT(*) FROM messages m
                               WHERE m.device_id = devices.device_id);
"""
