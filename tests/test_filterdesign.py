"""models/filterdesign.py and the committed firmware/signal/filter_tables.py.

Stated tolerances (all from the Q15 tables as committed):

- quantized vs float design (``scipy.signal.sosfreqz`` of both): within
  0.02 dB over each passband (measured max 0.014 dB, QRS band-pass at
  360 Hz), within 0.1 dB at the transition/stop frequencies listed in
  ``STOP_HZ`` (measured max 0.044 dB, baseline at 0.05 Hz, 360 Hz), notch
  depth >= 60 dB at the mains frequency (design: infinite; measured 63-283
  dB) and the -3 dB width f0 / Q within 0.1 dB;
- the integer implementation (sinusoids through the device classes,
  least-squares amplitude) vs the quantized design: within 0.01 dB wherever
  the gain is above -25 dB, and vs the float design within 0.1 dB;
  measured mains attenuation >= 55 dB;
- noise floors (LSB of the Q15 output): the baseline high-pass with error
  feedback gives exactly 0 for zero and constant inputs, <= 1.5 LSB error on
  a ramp, and <= 0.5 LSB rms / 2 LSB peak error against the float filter
  with the same coefficients; the plain CMSIS form of the same table sits
  >= 100 LSB off with a constant input (why the baseline uses error feedback).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from firmware import params
from firmware.signal import dsp, filter_tables, filters
from models import filterdesign as fd

RATES = params.SUPPORTED_RATES_HZ
NAMES = filter_tables.FILTER_NAMES
ALL = [(fs, name) for fs in RATES for name in NAMES]
IDS = [f"{name}@{fs}" for fs, name in ALL]

STOP_HZ = {
    "baseline": (0.05, 0.1, 0.2, 0.5),
    "qrs_bandpass": (0.5, 1.0, 2.0, 30.0, 50.0, 60.0),
    "monitor_lowpass": (40.0, 60.0, 100.0),
}
MEASURE_HZ = {
    "baseline": (0.5, 1.0, 10.0, 40.0),
    "notch50": (10.0, 40.0, 50.0, 60.0),
    "notch60": (10.0, 50.0, 60.0),
    "qrs_bandpass": (2.0, 5.0, 10.0, 15.0, 30.0),
    "monitor_lowpass": (5.0, 20.0, 40.0, 60.0),
}


def test_committed_tables_are_what_the_generator_writes_now() -> None:
    committed = fd.TABLES_PATH.read_text(encoding="utf-8")
    assert committed == fd.render_module(), "run `python -m models.filterdesign --write`"
    assert committed.startswith("# GENERATED FILE - do not edit.")
    assert fd.main(["--check"]) == 0


def test_firmware_constants_repeat_the_design_parameters() -> None:
    d = fd.DESIGN
    assert params.SUPPORTED_RATES_HZ == d.sample_rates_hz == (250, 360)
    assert params.SUPPORTED_MAINS_HZ == d.mains_hz
    assert filter_tables.BASELINE_CORNER_HZ == d.baseline_corner_hz
    assert filter_tables.NOTCH_Q == d.notch_q
    assert (filter_tables.QRS_BAND_LOW_HZ, filter_tables.QRS_BAND_HIGH_HZ) == (
        d.qrs_low_hz,
        d.qrs_high_hz,
    )
    assert filter_tables.MONITOR_LOWPASS_HZ == d.monitor_lowpass_hz
    assert filter_tables.NOISE_SHAPED == fd.NOISE_SHAPED


@pytest.mark.parametrize(("fs", "name"), ALL, ids=IDS)
def test_table_is_the_quantized_design(fs: int, name: str) -> None:
    table = fd.q15_table(fs, name)
    assert filters.table(fs, name) == table.as_tuple()
    n, coeffs, post_shift = table.as_tuple()
    assert all(isinstance(c, int) and -32768 <= c <= 32767 for c in coeffs)
    assert all(coeffs[6 * s + 1] == 0 for s in range(n))
    # post_shift is the smallest that fits: one less would overflow a coefficient.
    sos = fd.design_sos(fs, name)
    if post_shift > 0:
        values = [v for row in sos for v in (*row[:3], *(-row[4:]))]
        rounded = [fd._round_half_away(v * 2 ** (16 - post_shift)) for v in values]
        assert not all(-32768 <= r <= 32767 for r in rounded)


@pytest.mark.parametrize(("fs", "name"), ALL, ids=IDS)
def test_unit_circle_zeros_stay_exact(fs: int, name: str) -> None:
    n, c, _ = filters.table(fs, name)
    for s in range(n):
        b0, b1, b2 = c[6 * s], c[6 * s + 2], c[6 * s + 3]
        if name == "baseline":
            assert b0 + b1 + b2 == 0  # DC blocked exactly
        if name.startswith("notch"):
            assert b0 == b2  # zeros exactly on the unit circle
    if name == "qrs_bandpass":
        sums = sorted((c[6 * s] + c[6 * s + 2] + c[6 * s + 3] == 0) for s in range(n))
        assert sums[-1]  # some section blocks DC exactly


@pytest.mark.parametrize(("fs", "name"), ALL, ids=IDS)
def test_sections_are_scaled_to_0_db(fs: int, name: str) -> None:
    sos = filter_tables_sos(fs, name)
    grid = np.linspace(0, fs / 2, 8193)
    for k in range(len(sos)):
        _, h = signal.sosfreqz(sos[: k + 1], worN=grid, fs=fs)
        peak_db = 20 * np.log10(np.max(np.abs(h)))
        # 0 dB up to the gain's quantization (the QRS band-pass' b0 = 140 is 0.7 % coarse).
        assert abs(peak_db) <= 0.05, f"section {k} output peaks at {peak_db:.3f} dB"


def filter_tables_sos(fs: int, name: str) -> np.ndarray:
    return fd.Q15Table(*filters.table(fs, name)).as_sos()


@pytest.mark.parametrize(("fs", "name"), ALL, ids=IDS)
def test_quantized_response_matches_design(fs: int, name: str) -> None:
    design = fd.design_sos(fs, name)
    quant = filter_tables_sos(fs, name)
    f = fd.passband_freqs_hz(name, fs)
    err = np.abs(fd.response_db(quant, f, fs) - fd.response_db(design, f, fs))
    assert err.max() <= 0.02, f"passband error {err.max():.4f} dB at {f[err.argmax()]:.2f} Hz"
    stops = np.array([f for f in STOP_HZ.get(name, ()) if f < fs / 2])
    if len(stops):
        err = np.abs(fd.response_db(quant, stops, fs) - fd.response_db(design, stops, fs))
        assert err.max() <= 0.1
    if name.startswith("notch"):
        f0 = float(name[5:])
        assert fd.response_db(quant, [f0], fs)[0] <= -60.0
        edges = [f0 - f0 / (2 * fd.DESIGN.notch_q), f0 + f0 / (2 * fd.DESIGN.notch_q)]
        edge_db = fd.response_db(quant, edges, fs)
        assert np.all(np.abs(edge_db - fd.response_db(design, edges, fs)) <= 0.1)
        assert np.all(np.abs(edge_db + 3.0) <= 0.2)  # -3 dB width f0 / Q


@pytest.mark.parametrize(("fs", "name"), ALL, ids=IDS)
def test_integer_implementation_has_the_designed_response(fs: int, name: str) -> None:
    table = fd.Q15Table(*filters.table(fs, name))
    shaped = name in filter_tables.NOISE_SHAPED
    design = fd.design_sos(fs, name)
    for f_hz in MEASURE_HZ[name]:
        if f_hz >= fs / 2:
            continue
        measured = fd.integer_gain_db(table, fs, f_hz, shaped)
        quant = fd.response_db(table.as_sos(), [f_hz], fs)[0]
        if name.startswith("notch") and f_hz == float(name[5:]):
            assert measured <= -55.0, f"mains only {measured:.1f} dB down"
            continue
        if quant > -25.0:
            assert abs(measured - quant) <= 0.01, (f_hz, measured, quant)
        assert abs(measured - fd.response_db(design, [f_hz], fs)[0]) <= 0.1


@pytest.mark.parametrize("fs", RATES)
def test_baseline_noise_floor(fs: int) -> None:
    table = fd.Q15Table(*filters.table(fs, "baseline"))
    shaped = fd.noise_floor(table, fs, noise_shaped=True)
    assert shaped.zero_min == shaped.zero_max == 0  # zero input: exactly 0, no dead band
    assert abs(shaped.dc_min) < 1e-6 and abs(shaped.dc_max) < 1e-6  # DC: exactly blocked
    assert shaped.ramp_max <= 1.5
    assert abs(shaped.err_mean) <= 0.05
    assert shaped.err_rms <= 0.5
    assert shaped.err_max <= 2.0
    plain = fd.noise_floor(table, fs, noise_shaped=False)
    assert plain.dc_max <= -100.0  # the dead band error feedback removes
    assert plain.err_rms >= 50.0


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("name", ["notch50", "notch60", "qrs_bandpass", "monitor_lowpass"])
def test_other_noise_floors(fs: int, name: str) -> None:
    table = fd.Q15Table(*filters.table(fs, name))
    nf = fd.noise_floor(table, fs, noise_shaped=name in filter_tables.NOISE_SHAPED)
    assert -8 <= nf.zero_min <= nf.zero_max <= 8
    assert abs(nf.err_mean) <= 1.0
    assert nf.err_rms <= 2.0
    assert nf.err_max <= 8.0


def test_group_delays_are_tabulated() -> None:
    for fs, name in ALL:
        quant = filter_tables_sos(fs, name)
        expected = fd.group_delay_samples(quant, filter_tables.GROUP_DELAY_REF_HZ, fs)
        assert filters.group_delay_samples(fs, name) == pytest.approx(expected, abs=0.006)
    assert filters.group_delay_samples(360, "qrs_bandpass") == pytest.approx(15.0, abs=0.5)


def test_quantizer_rules() -> None:
    # A coefficient of exactly 1.0 needs post_shift 1 (32768 does not fit Q15), -1.0 does not.
    assert fd.quantize_sos(np.array([[0.5, 0.0, 0.0, 1.0, -1.0 + 1e-3, 0.0]])).post_shift == 0
    assert fd.quantize_sos(np.array([[-1.0, 0.0, 0.0, 1.0, 0.5, 0.0]])).post_shift == 0
    assert fd.quantize_sos(np.array([[1.0, 0.0, 0.0, 1.0, 0.5, 0.0]])).post_shift == 1
    # Rounding is half away from zero, by the device's float_to_q15.
    t = fd.quantize_sos(np.array([[0.5 / 32768, -0.5 / 32768, 0.0, 1.0, 0.0, 0.0]]))
    assert t.coeffs[:4] == (1, 0, -1, 0)
    assert dsp.float_to_q15(0.5 / 32768) == 1
    with pytest.raises(ValueError):
        fd.quantize_sos(np.array([[300.0, 0.0, 0.0, 1.0, 0.0, 0.0]]))


def test_unknown_rate_or_name_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="500"):
        fd.design_sos(500, "baseline")
    with pytest.raises(ValueError, match="notch55"):
        fd.design_sos(360, "notch55")
