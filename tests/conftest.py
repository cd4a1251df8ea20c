"""Shared pytest fixtures."""

from __future__ import annotations

from typing import Callable

import pytest
from mpyvm import run_micropython


@pytest.fixture(scope="session")
def micropython() -> Callable[..., str]:
    """``run_micropython`` from tests/mpyvm.py: run a script in the real MicroPython VM
    (firmware/ importable as ``firmware``) and return its stdout."""
    return run_micropython
