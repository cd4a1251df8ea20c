"""Contract path (../shared/DESIGN.md item 1): the Q15 filters live in
:mod:`firmware.signal.dsp`; this module re-exports them unchanged."""

from firmware.signal.dsp import *  # noqa: F403
from firmware.signal.dsp import BiquadCascadeQ15  # noqa: F401  (the contract name, explicitly)
