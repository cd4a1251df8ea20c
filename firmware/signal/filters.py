"""The device's Q15 filters by name: the generated tables made into filter objects.

:mod:`firmware.signal.filter_tables` is generated data (``make tables``, by
``models/filterdesign.py`` from the rates and mains in :mod:`firmware.params`);
this module is the hand-written code that reads it:

- :func:`table` ``(fs_hz, name) -> (num_stages, coeffs, post_shift)``: the
  arguments of :class:`firmware.signal.dsp.BiquadCascadeQ15` (``coeffs`` per
  section ``{b0, 0, b1, b2, a1, a2}`` in Q15 scaled down by ``2**post_shift``);
- :func:`group_delay_samples` ``(fs_hz, name)``: the table's group delay at
  ``filter_tables.GROUP_DELAY_REF_HZ``, in samples (for aligning detections
  with the raw signal);
- :func:`make_filter` ``(fs_hz, name)``: a new filter object of the class the
  table is meant for (:class:`BiquadCascadeEfQ15`, error feedback, for the
  tables in ``filter_tables.NOISE_SHAPED`` whose poles sit close to z = 1;
  :class:`BiquadCascadeQ15` otherwise).

A rate outside ``SUPPORTED_RATES_HZ`` or an unknown name raises ValueError
naming what is supported.
"""

from firmware.params import check_sample_rate_hz
from firmware.signal import filter_tables
from firmware.signal.dsp import BiquadCascadeEfQ15, BiquadCascadeQ15


def check_name(name):
    """``name`` if a table of that name exists; else ValueError listing them."""
    if name not in filter_tables.FILTER_NAMES:
        raise ValueError(
            "unknown filter %r; known: %s" % (name, ", ".join(filter_tables.FILTER_NAMES))
        )
    return name


def table(fs_hz, name):
    """``(num_stages, coeffs, post_shift)`` of filter ``name`` at ``fs_hz``."""
    return filter_tables.TABLES[(check_sample_rate_hz(fs_hz), check_name(name))]


def group_delay_samples(fs_hz, name):
    """Group delay of ``name`` at ``fs_hz`` and ``GROUP_DELAY_REF_HZ``, in samples."""
    return filter_tables.GROUP_DELAY_SAMPLES[(check_sample_rate_hz(fs_hz), check_name(name))]


def make_filter(fs_hz, name, kernel=None):
    """A new filter object for table ``name`` at ``fs_hz`` (module docstring)."""
    num_stages, coeffs, post_shift = table(fs_hz, name)
    if name in filter_tables.NOISE_SHAPED:
        return BiquadCascadeEfQ15(num_stages, coeffs, post_shift, kernel)
    return BiquadCascadeQ15(num_stages, coeffs, post_shift, kernel)
