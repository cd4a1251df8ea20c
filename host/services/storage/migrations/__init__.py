"""The schema's versioned migrations, one module per step: ``vNNNN_<name>.py`` with
``SQL`` (statements separated by ``;``, written once in SQLite's spelling and
rewritten for PostgreSQL by :meth:`host.services.storage.dialect.Dialect.ddl`)
and/or ``up(db)`` (Python, run after ``SQL``, for data moves that need it).
Applied in order by :mod:`host.services.storage.migrate`; never edit a released
step, add the next one."""
