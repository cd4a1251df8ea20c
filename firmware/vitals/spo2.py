"""SpO2 from the red/infrared ratio of ratios: the device's calibration curve.

A pulse oximeter measures, at each wavelength, the pulsatile (AC) part of the
received light and its steady (DC) level.  The ratio of ratios

    R = (AC_red / DC_red) / (AC_ir / DC_ir)

falls as arterial oxygen saturation rises, and an empirical calibration curve
maps it to SpO2.  This module uses the linear approximation

    SpO2 (%) = 110 - 25 R

commonly quoted in semiconductor vendors' pulse-oximeter application notes
(Maxim Integrated, Texas Instruments) for a generic finger probe: R = 0.4 at
100 %, R = 1.0 at 85 %.  It is a stand-in; a real probe's curve comes from
its own desaturation study (ISO 80601-2-61), and below about 80 % such a line
is not calibrated at all.  The simulator (``sim/ppg.py``) inverts the same
curve with :func:`ratio_from_spo2`, so the device reads back the SpO2 the
scenario asked for.

Fixed point: a ratio is carried as ``ratio_q`` = round(R * 2**RATIO_Q_FRAC_BITS)
(Q12: R = 1.0 is 4096); SpO2 comes out in tenths of a percent (975 = 97.5 %).
Runs on MicroPython: builtins only, no allocation beyond small ints.
"""

from firmware.hw.compat import const

RATIO_Q_FRAC_BITS = const(12)
RATIO_Q_ONE = const(1 << RATIO_Q_FRAC_BITS)
#: SpO2 = CURVE_OFFSET_PERCENT - CURVE_SLOPE_PERCENT * R
CURVE_OFFSET_PERCENT = const(110)
CURVE_SLOPE_PERCENT = const(25)
SPO2_MAX_X10 = const(1000)
#: Returned for a ratio that cannot be used (non-positive, or a zero AC/DC).
SPO2_INVALID = const(-1)


def ratio_q_from_ac_dc(ac_red, dc_red, ac_ir, dc_ir):
    """Ratio of ratios in Q12 from integer AC and DC levels (any common units per
    wavelength, e.g. ADC counts); SPO2_INVALID when a level is not positive.

    Scaling and overflow: ``(ac_red * dc_ir) << 12`` is formed in Python ints
    (arbitrary precision; a long int on MicroPython when above 2**30, once per
    measurement window, not per sample); the quotient rounds to nearest."""
    if ac_red <= 0 or dc_red <= 0 or ac_ir <= 0 or dc_ir <= 0:
        return SPO2_INVALID
    num = (ac_red * dc_ir) << RATIO_Q_FRAC_BITS
    den = dc_red * ac_ir
    return (num + (den >> 1)) // den


def spo2_from_ratio_q(ratio_q):
    """SpO2 in tenths of a percent from a Q12 ratio of ratios: 1100 - 250 R,
    rounded to nearest, saturated to 0..1000; SPO2_INVALID for ratio_q <= 0.

    Scaling and overflow: ``250 * ratio_q`` stays a small int for any ratio
    below 2**18 (R < 64); the >> 12 rounds half up."""
    if ratio_q <= 0:
        return SPO2_INVALID
    drop = (10 * CURVE_SLOPE_PERCENT * ratio_q + (RATIO_Q_ONE >> 1)) >> RATIO_Q_FRAC_BITS
    spo2 = 10 * CURVE_OFFSET_PERCENT - drop
    if spo2 < 0:
        return 0
    if spo2 > SPO2_MAX_X10:
        return SPO2_MAX_X10
    return spo2


def ratio_from_spo2(spo2_percent):
    """The ratio of ratios R (float) the curve maps to ``spo2_percent``: the
    inverse the simulator uses, (110 - SpO2) / 25."""
    return (CURVE_OFFSET_PERCENT - spo2_percent) / CURVE_SLOPE_PERCENT


def ratio_q_from_spo2(spo2_percent):
    """:func:`ratio_from_spo2` in Q12, rounded to nearest."""
    return int(ratio_from_spo2(spo2_percent) * RATIO_Q_ONE + 0.5)
