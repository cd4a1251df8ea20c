"""The PostgreSQL backend: a psycopg 3 connection behind the small part of the
``sqlite3.Connection`` API the store uses (``execute`` with ``?`` placeholders,
``executemany``, ``commit``, ``rollback``, ``in_transaction``, ``close``), so the
store's SQL is written once.

The connection runs in autocommit mode and the store opens its transactions
itself (``BEGIN`` ... ``COMMIT``), with savepoints per message as on SQLite.  A
connection that broke (server restart, network) is re-opened at the start of
the next transaction (:meth:`PgConnection.ensure`); the failed batch was rolled
back by the server and is retried by ingest.  A read-only store sets
``default_transaction_read_only``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5


def _to_pg(sql: str, with_params: bool) -> str:
    """``?`` -> ``%s`` (the store's SQL has no ``?`` or ``%`` inside literals but
    ``LIKE`` patterns, which are doubled when parameters are passed)."""
    if not with_params:
        return sql
    return sql.replace("%", "%%").replace("?", "%s")


class _Count:
    """What :meth:`PgConnection.executemany` returns: ``rowcount`` as sqlite3's."""

    __slots__ = ("rowcount",)

    def __init__(self, rowcount: int) -> None:
        self.rowcount = rowcount


class PgConnection:
    def __init__(self, url: str, *, readonly: bool = False,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.url = url
        self.readonly = readonly
        self.connect_timeout_s = connect_timeout_s
        self._sql: dict[tuple[str, bool], str] = {}
        self.conn = self._connect()

    def _connect(self) -> Any:
        import psycopg

        conn = psycopg.connect(self.url, autocommit=True,
                               connect_timeout=max(1, round(self.connect_timeout_s)),
                               application_name="medge")
        if self.readonly:
            conn.execute("SET default_transaction_read_only = on")
        return conn

    def ensure(self) -> None:
        """Re-open a broken connection (outside a transaction)."""
        if self.conn.closed or self.conn.broken:
            try:
                self.conn.close()
            except Exception:
                pass
            log.info("store: reconnecting to PostgreSQL")
            self.conn = self._connect()

    def _q(self, sql: str, with_params: bool) -> str:
        key = (sql, with_params)
        text = self._sql.get(key)
        if text is None:
            text = self._sql[key] = _to_pg(sql, with_params)
        return text

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        with_params = params is not None and len(params) > 0
        return self.conn.execute(self._q(sql, with_params), params if with_params else None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        """Returns the cursor, closed; its ``rowcount`` is the rows all the
        statements changed (as ``sqlite3``'s)."""
        rows = list(rows)
        count = 0
        with self.conn.cursor() as cur:
            if rows:  # psycopg sums nothing (rowcount -1) unless asked for each result
                cur.executemany(self._q(sql, True), rows, returning=True)
                while True:
                    count += max(cur.rowcount, 0)
                    if not cur.nextset():
                        break
        return _Count(count)

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self.conn.info.transaction_status != TransactionStatus.IDLE

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.broken or self.conn.closed:
            return
        self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()

    def tables(self) -> set[str]:
        return {row[0] for row in self.conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema()")}
