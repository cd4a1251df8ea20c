"""The store's backends and schema machinery behind :class:`host.services.store.Store`:
``target`` (what ``--db`` names), ``dialect`` (what differs between SQLite and
PostgreSQL), ``sqlite`` and ``postgres`` (opening each), ``migrate`` and
``migrations/`` (the versioned schema), ``prune`` (retention)."""
