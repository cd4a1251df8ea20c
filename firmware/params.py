"""The one parameter set every layer shares: front end, rates, scaling, model layout.

Firmware, the simulator, training, evaluation and the host tools import these
names; nothing else defines them (a second copy is a bug: ../shared/DESIGN.md,
"Every fact has one home").  Units are in every name.  There is deliberately
no default sample rate or mains frequency: a wrong one must fail loudly.

Front end.  Every ECG source (a driver, the serial board, the simulator, a
WFDB replay) delivers signed 16-bit ADC counts at ``ECG_COUNTS_PER_MV``
(200 counts per millivolt at the electrodes, 5 uV per count, as MIT-BIH's
records), saturated to ``ECG_ADC_MIN_COUNT..ECG_ADC_MAX_COUNT``.

Rates.  The device's filters exist for ``SUPPORTED_RATES_HZ`` and notch
``SUPPORTED_MAINS_HZ`` (the generated tables in
:mod:`firmware.signal.filter_tables` are designed from exactly these, by
``models/filterdesign.py``).  :func:`check_sample_rate_hz` and
:func:`check_mains_hz` are the one rule: config validation, the filter chain,
the detector and the record reader all call them.

Input scaling.  The filter chain shifts ``counts - adc_zero`` left by
``ECG_INPUT_SHIFT_BITS`` into Q15: 1 mV = 3200 LSB, full scale +-10.24 mV
(:mod:`firmware.signal.ecgfilter` explains the headroom).

Model input layout.  The beat classifier's two int8 inputs, made on the device
by :mod:`firmware.signal.beats`, checked against a model's metadata by
:mod:`firmware.ml.infer`, and produced for training by ``models/dataset.py``.
"""

from firmware.hw.compat import const

# -- front end ----------------------------------------------------------------
#: ADC counts per millivolt at the electrodes (the device's ECG scale).
ECG_COUNTS_PER_MV = const(200)
#: The same scale as microvolts per count (1000 / ECG_COUNTS_PER_MV).
ECG_UV_PER_COUNT = const(5)
#: Signed 16-bit ADC counts: the rails.
ECG_ADC_MIN_COUNT = const(-32768)
ECG_ADC_MAX_COUNT = const(32767)

# -- sample rates and mains ---------------------------------------------------
#: ECG sample rates the device's filter tables are designed for.
SUPPORTED_RATES_HZ = (250, 360)
#: Mains frequencies the notch tables are designed for.
SUPPORTED_MAINS_HZ = (50, 60)

# -- input scaling ------------------------------------------------------------
#: Left shift from ECG counts (200/mV) to the filter chain's Q15: 1 mV = 3200 LSB.
ECG_INPUT_SHIFT_BITS = const(4)

# -- model input layout -------------------------------------------------------
#: Beat window, ms before and after the R peak.
BEAT_WINDOW_BEFORE_MS = const(250)
BEAT_WINDOW_AFTER_MS = const(500)
#: Points (bins) in the window: one every 750/90 = 8.33 ms.
BEAT_WINDOW_POINTS = const(90)
#: Channels per point: the beat, and the beat minus the patient's average beat.
BEAT_CHANNELS = const(2)
#: Context features: 8 RR features, 4 shape summaries, lag-2 irregularity.
RR_FEATURES = const(13)
#: The int8 value of the average beat's largest magnitude.
BEAT_AMPLITUDE_Q = const(32)
#: Input quantization of both model inputs: float = int8 / 32 (zero point 0).
INPUT_SCALE_INV = const(32)


# -- rhythm events (firmware/rhythm) ------------------------------------------
#: Bradycardia / tachycardia: the mean rate of the last 8 beats below / above
#: these (the textbook definitions), held for ``RHYTHM_RATE_HOLD_MS``.
RHYTHM_BRADY_BPM = const(60)
RHYTHM_TACHY_BPM = const(100)
RHYTHM_RATE_HOLD_MS = const(10000)
#: A pause: an RR interval longer than this (with good signal throughout).
RHYTHM_PAUSE_MS = const(2000)
#: Asystole: no beat for this long with good signal (an alarm, raised before
#: the next beat comes; a longer gap that ends is reported as ASYSTOLE too).
RHYTHM_ASYSTOLE_MS = const(4000)
#: Ventricular tachycardia: at least this many consecutive V beats faster
#: than ``RHYTHM_VT_MIN_BPM``; sustained from ``RHYTHM_VT_SUSTAINED_MS`` on.
RHYTHM_VT_MIN_BEATS = const(3)
RHYTHM_VT_MIN_BPM = const(100)
RHYTHM_VT_SUSTAINED_MS = const(30000)
#: Bigeminy / trigeminy: at least this many V-every-2nd / every-3rd cycles.
RHYTHM_GEMINY_MIN_CYCLES = const(4)
#: PVC and PAC burden are reported once per this period.
RHYTHM_BURDEN_PERIOD_MS = const(3600000)


def _as_int_in(value, allowed):
    """``value`` as an int if it equals one of ``allowed`` (250.0 is 250), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if number != value or number not in allowed:
        return None
    return number


def _listed(values):
    return ", ".join(str(v) for v in values)


def check_sample_rate_hz(fs_hz):
    """``fs_hz`` as an int if the device supports it; else ValueError listing the rates."""
    rate = _as_int_in(fs_hz, SUPPORTED_RATES_HZ)
    if rate is None:
        raise ValueError(
            "sample_rate_hz %r Hz is not supported; supported rates: %s Hz"
            % (fs_hz, _listed(SUPPORTED_RATES_HZ))
        )
    return rate


def check_mains_hz(mains_hz):
    """``mains_hz`` as an int if a notch exists for it; else ValueError listing them."""
    mains = _as_int_in(mains_hz, SUPPORTED_MAINS_HZ)
    if mains is None:
        raise ValueError(
            "mains_hz must be one of %s, got %r" % (_listed(SUPPORTED_MAINS_HZ), mains_hz)
        )
    return mains
