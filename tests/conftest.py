"""Shared pytest fixtures."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings
from mpyvm import run_micropython

from host.services.storage.pgserver import PgServer, PgServerError

# Property tests judge correctness, not speed: hypothesis's timing checks (a 200-ms
# deadline per example, "input generation is slow") fail on a loaded CI machine
# (seen: 3 inputs in 1.4 s under load 8). Speed is measured in `make bench`.
settings.register_profile("medge", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("medge")


@pytest.fixture(scope="session")
def micropython() -> Callable[..., str]:
    """``run_micropython`` from tests/mpyvm.py: run a script in the real MicroPython VM
    (firmware/ importable as ``firmware``) and return its stdout."""
    return run_micropython


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL server (host/services/storage/pgserver.py) on a free
    loopback port for the whole session: yields
    ``postgresql://medge@127.0.0.1:PORT/medge``; stopped and deleted at the end.
    Missing server binaries fail (never skip) naming the install."""
    server = PgServer()
    try:
        server.start()
    except PgServerError as exc:
        pytest.fail(f"medge: {exc}", pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()
