"""Does partitioning the vitals table by time pay on PostgreSQL at medge's scale?

``python -m host.services.storage.partbench --db postgresql://... [--rows N]`` builds
two copies of the vitals table (key (device_id, incarnation, seq), index (device_id,
ts_ms)): plain, and ``PARTITION BY RANGE (ts_ms)`` with one partition per 30 days
over a year; loads the same N rows into each (1,000 devices, one row per device
every ~31.5 s across the year, COPY); then times the store's queries (one device's
day, one device's latest row, every device's last hour) and retention (deleting the
oldest 30 days vs dropping a partition).  Prints JSON.  Bounded: N defaults to 1e6.

Measured here (2 shared cores, the tests' throw-away server, fsync off; PostgreSQL
15; N = 1e6 rows, 13 monthly partitions; median of 200 queries, 20 for the fleet hour):

=============================================  ========  ============
                                               plain     partitioned
=============================================  ========  ============
load 1e6 rows (COPY + ANALYZE), s              10.6      7.7
one device, one day (index range), ms          0.20      0.24
one device, latest row, ms                     0.12      0.12
every device, last hour (no ts-only index), ms 65.7      1.1
size, MB                                       228       211
retention: the oldest 30 days, s               0.119     0.004 (DROP)
=============================================  ========  ============

Decision: no partitioning now.  The store's own queries (a device over a time
range, a device's latest row) are equal either way, at 1e6 rows and, being index
range scans, far beyond; only fleet-wide time scans (which a plain index on ts_ms
also serves) and retention (DELETE vs DROP) gain.  Against it: a partitioned
table's unique key must contain the partition column, so vitals could no longer
be keyed (device_id, incarnation, seq), and the schema would differ between the
backends.  Revisit when a site's vitals pass ~1e8 rows (1,000 devices at one
vitals message per 8 s make ~1e8 rows in 9 days): then a migration step converts
``vitals`` to monthly range partitions with the key (device_id, incarnation, seq,
ts_ms), de-duplication staying on ``messages`` (unpartitioned), and prune drops
whole partitions.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

DAY_MS = 86_400_000
T0 = 1_735_689_600_000  # 2025-01-01
DEVICES = 1000
PARTITION_DAYS = 30

_COLUMNS = """(device_id TEXT COLLATE "C" NOT NULL, incarnation TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL, ts_ms BIGINT NOT NULL, window_ms BIGINT NOT NULL, hr_bpm BIGINT,
    beats BIGINT NOT NULL, quality TEXT NOT NULL"""


def _setup(conn: Any) -> None:
    conn.execute("DROP TABLE IF EXISTS pb_plain, pb_part CASCADE")
    conn.execute(f"CREATE TABLE pb_plain {_COLUMNS}, PRIMARY KEY (device_id, incarnation, seq))")
    conn.execute("CREATE INDEX ON pb_plain (device_id, ts_ms)")
    # A partitioned table's unique key must include the partition column.
    conn.execute(f"CREATE TABLE pb_part {_COLUMNS}, "
                 "PRIMARY KEY (device_id, incarnation, seq, ts_ms)) PARTITION BY RANGE (ts_ms)")
    conn.execute("CREATE INDEX ON pb_part (device_id, ts_ms)")
    for i in range(0, 13):
        lo, hi = T0 + i * PARTITION_DAYS * DAY_MS, T0 + (i + 1) * PARTITION_DAYS * DAY_MS
        conn.execute(f"CREATE TABLE pb_part_{i} PARTITION OF pb_part "
                     f"FOR VALUES FROM ({lo}) TO ({hi})")


def _load(conn: Any, table: str, rows: int) -> float:
    per_device = rows // DEVICES
    step_ms = 365 * DAY_MS // per_device
    t = time.perf_counter()
    with conn.cursor() as cur, cur.copy(
            f"COPY {table} (device_id, incarnation, seq, ts_ms, window_ms, hr_bpm, beats, "
            "quality) FROM STDIN") as copy:
        for seq in range(per_device):
            ts = T0 + seq * step_ms
            for d in range(DEVICES):
                copy.write_row((f"dev-{d:04d}", "", seq, ts + d, 32000, 60 + d % 40, 40,
                                "good"))
    conn.execute(f"ANALYZE {table}")
    return time.perf_counter() - t


def _median_ms(conn: Any, sql: str, params: list[tuple]) -> float:
    times = []
    for p in params:
        t = time.perf_counter()
        conn.execute(sql, p).fetchall()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 3)


def run(url: str, rows: int, queries: int = 200) -> dict[str, Any]:
    import psycopg

    rng = random.Random(1)
    out: dict[str, Any] = {"rows": rows, "devices": DEVICES, "partition_days": PARTITION_DAYS}
    with psycopg.connect(url, autocommit=True) as conn:
        out["server"] = conn.info.server_version
        _setup(conn)
        day = [(f"dev-{rng.randrange(DEVICES):04d}",
                T0 + rng.randrange(360) * DAY_MS) for _ in range(queries)]
        for table in ("pb_plain", "pb_part"):
            r: dict[str, float] = {"load_s": round(_load(conn, table, rows), 2)}
            r["device_day_ms"] = _median_ms(
                conn, f"SELECT ts_ms, hr_bpm FROM {table} WHERE device_id = %s AND ts_ms >= %s "
                "AND ts_ms < %s + 86400000 ORDER BY ts_ms", [(d, t, t) for d, t in day])
            r["device_latest_ms"] = _median_ms(
                conn, f"SELECT ts_ms, hr_bpm FROM {table} WHERE device_id = %s "
                "ORDER BY ts_ms DESC LIMIT 1", [(d,) for d, _ in day])
            last_hour = T0 + 364 * DAY_MS
            r["fleet_hour_ms"] = _median_ms(
                conn, f"SELECT device_id, MAX(ts_ms) FROM {table} WHERE ts_ms >= %s AND "
                "ts_ms < %s + 3600000 GROUP BY device_id", [(last_hour, last_hour)] * 20)
            r["size_mb"] = round(float(conn.execute(
                "SELECT SUM(pg_total_relation_size(c.oid)) FROM pg_class c WHERE c.relname "
                "LIKE %s AND c.relkind IN ('r', 'p')", (table + "%",)).fetchone()[0]) / 1e6, 1)
            t = time.perf_counter()
            if table == "pb_plain":
                conn.execute(f"DELETE FROM {table} WHERE ts_ms < %s",
                             (T0 + PARTITION_DAYS * DAY_MS,))
            else:
                conn.execute("DROP TABLE pb_part_0")
            r["prune_30_days_s"] = round(time.perf_counter() - t, 3)
            out[table.removeprefix("pb_")] = r
        conn.execute("DROP TABLE IF EXISTS pb_plain, pb_part CASCADE")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", required=True, help="postgresql://... (tables pb_* are made "
                   "and dropped)")
    p.add_argument("--rows", type=int, default=1_000_000)
    args = p.parse_args()
    print(json.dumps(run(args.db, args.rows), indent=2))


if __name__ == "__main__":
    main()
