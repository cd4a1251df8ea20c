# GENERATED FILE - do not edit.  Regenerate with `python -m models.filterdesign --write`
# (`make tables`) after changing the design parameters in models/filterdesign.py;
# tests/test_filterdesign.py fails when this file and the generator disagree.
"""Q15 filter tables of the device's ECG chain (CMSIS-DSP biquad layout).

Data only: :mod:`firmware.signal.filters` reads it (``table(fs_hz, name)``
gives ``(num_stages, coeffs, post_shift)``, the arguments of
``firmware.signal.dsp.BiquadCascadeQ15`` (``coeffs``: per section
``{b0, 0, b1, b2, a1, a2}`` in Q15 scaled down by ``2**post_shift``, ``a1``/``a2``
negated relative to scipy)).  Tables named in ``NOISE_SHAPED`` are meant for
``firmware.signal.dsp.BiquadCascadeEfQ15`` (same arguments, error feedback): their
poles sit so close to z = 1 that plain truncation leaves a DC offset (dead
band) of about a hundred LSB (figures in models/filterdesign.py).

Design (models/filterdesign.py ``DESIGN``; the constants below repeat it):

- ``baseline``: 2 identical first-order high-pass sections, -3 dB at
  0.5 Hz in all (baseline-wander removal; first-order sections keep full
  Q15 resolution on poles this close to z = 1);
- ``notch50``/``notch60``: ``scipy.signal.iirnotch`` at the mains frequency,
  Q = 30.0 (-3 dB width f0 / Q);
- ``qrs_bandpass``: Butterworth band-pass 5.0-15.0 Hz, 4 poles
  (the QRS detector's band, Pan-Tompkins);
- ``monitor_lowpass``: Butterworth low-pass, order 2,
  40.0 Hz (monitoring band, optional).

Sections are paired nearest-zero and L-infinity scaled (the response from
the input to every section output peaks at 0 dB); one post_shift per
cascade, the smallest that fits every rounded coefficient in Q15.

``GROUP_DELAY_SAMPLES``: group delay at ``GROUP_DELAY_REF_HZ``, in samples
(float, 0.01 sample resolution), for aligning detections with the raw signal.

Rates and mains are those of ``firmware.params`` (``SUPPORTED_RATES_HZ`` =
(250, 360), ``SUPPORTED_MAINS_HZ`` = (50, 60)), the one home of both.
"""

BASELINE_CORNER_HZ = 0.5
BASELINE_ORDER = 2
NOTCH_Q = 30.0
QRS_BAND_LOW_HZ = 5.0
QRS_BAND_HIGH_HZ = 15.0
QRS_ORDER = 2
MONITOR_LOWPASS_HZ = 40.0
MONITOR_LOWPASS_ORDER = 2
GROUP_DELAY_REF_HZ = 10.0

FILTER_NAMES = ("baseline", "notch50", "notch60", "qrs_bandpass", "monitor_lowpass")
NOISE_SHAPED = ("baseline", "qrs_bandpass", "monitor_lowpass")

# (fs_hz, name): (num_stages, coeffs, post_shift)
TABLES = {
    (250, "baseline"): (
        2,
        (
            32636, 0, -32636, 0, 32504, 0,
            32636, 0, -32636, 0, 32504, 0,
        ),
        0,
    ),
    (250, "notch50"): (
        1,
        (
            32096, 0, -19836, 32096, 19836, -31423,
        ),
        0,
    ),
    (250, "notch60"): (
        1,
        (
            31964, 0, -4014, 31964, 4014, -31161,
        ),
        0,
    ),
    (250, "qrs_bandpass"): (
        2,
        (
            282, 0, 564, 282, 27547, -12778,
            12721, 0, -25442, 12721, 30795, -14724,
        ),
        1,
    ),
    (250, "monitor_lowpass"): (
        1,
        (
            4762, 0, 9524, 4762, 21988, -8268,
        ),
        0,
    ),
    (360, "baseline"): (
        2,
        (
            32676, 0, -32676, 0, 32584, 0,
            32676, 0, -32676, 0, 32584, 0,
        ),
        0,
    ),
    (360, "notch50"): (
        1,
        (
            16149, 0, -20761, 16149, 20761, -15914,
        ),
        1,
    ),
    (360, "notch60"): (
        1,
        (
            32206, 0, -32206, 32206, 32206, -31644,
        ),
        0,
    ),
    (360, "qrs_bandpass"): (
        2,
        (
            140, 0, 280, 140, 29359, -13783,
            12979, 0, -25958, 12979, 31447, -15217,
        ),
        1,
    ),
    (360, "monitor_lowpass"): (
        1,
        (
            1318, 0, 2636, 1318, 17258, -6144,
        ),
        1,
    ),
}

# (fs_hz, name): group delay in samples at GROUP_DELAY_REF_HZ
GROUP_DELAY_SAMPLES = {
    (250, "baseline"): 0.26,
    (250, "notch50"): 0.03,
    (250, "notch60"): 0.03,
    (250, "qrs_bandpass"): 10.39,
    (250, "monitor_lowpass"): 1.37,
    (360, "baseline"): 0.37,
    (360, "notch50"): 0.05,
    (360, "notch60"): 0.04,
    (360, "qrs_bandpass"): 15.0,
    (360, "monitor_lowpass"): 2.06,
}
