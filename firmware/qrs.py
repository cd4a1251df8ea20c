"""Contract path (../shared/DESIGN.md item 2): the QRS detector lives in
:mod:`firmware.signal.qrs`; this module re-exports it unchanged."""

from firmware.signal.qrs import QrsDetector  # noqa: F401
