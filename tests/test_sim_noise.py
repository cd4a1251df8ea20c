"""sim.noise (nstdb mixing at an SNR, hum), sim.adc, firmware.vitals.spo2."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.vitals.spo2 import (
    SPO2_INVALID,
    ratio_from_spo2,
    ratio_q_from_ac_dc,
    ratio_q_from_spo2,
    spo2_from_ratio_q,
)
from sim.adc import ECG_ADC, AdcModel, count_saturated
from sim.noise import NOISE_KINDS, EcgNoise, NstdbNoise, load_nstdb, mains_hum
from sim.sources import mv_to_counts


@pytest.mark.parametrize("fs", [250, 360])
def test_excerpts_load_resampled(fs: int) -> None:
    for kind in NOISE_KINDS:
        x = load_nstdb(kind, fs)
        assert x.shape == (40 * fs, 2)
        assert np.abs(x.mean(axis=0)).max() < 1e-9
        assert 0.01 < x.std() < 5.0  # mV


def test_looped_noise_keeps_its_power_and_has_no_seam() -> None:
    fs = 250
    src = NstdbNoise("ma", fs, np.random.default_rng(0))
    x = np.concatenate([src.next_chunk(997) for _ in range(60)])  # 4 min > 40 s excerpt
    assert x.size == 60 * 997
    assert np.mean(x**2) == pytest.approx(src.power_mv2, rel=0.25)
    # Power in 10 s windows stays near the excerpt's (cross-fades keep the variance).
    w = x[: (x.size // (10 * fs)) * 10 * fs].reshape(-1, 10 * fs)
    assert np.all(np.mean(w**2, axis=1) < 3 * src.power_mv2)
    steps = np.abs(np.diff(x))
    assert steps.max() < 20 * np.median(steps) + 0.2
    again = NstdbNoise("ma", fs, np.random.default_rng(0))
    np.testing.assert_array_equal(np.concatenate([again.next_chunk(59820)]), x)


@pytest.mark.parametrize("snr_db", [24.0, 12.0, 6.0])
def test_mixed_noise_has_the_snr_asked_for(snr_db: float) -> None:
    fs, qrs_pp = 360, 1.5
    noise = EcgNoise(fs, np.random.default_rng(3), qrs_pp_mv=qrs_pp, snr_db=snr_db)
    x = noise.next_chunk(300 * fs)
    measured = 10 * np.log10((qrs_pp**2 / 8) / np.mean(x**2))
    assert measured == pytest.approx(snr_db, abs=1.5)
    assert noise.noise_power_mv2 == pytest.approx((qrs_pp**2 / 8) / 10 ** (snr_db / 10))


def test_mains_hum_frequency_and_amplitude() -> None:
    fs = 500
    h = mains_hum(0, 10 * fs, fs, 50.0, 100.0)
    spec = np.abs(np.fft.rfft(h)) / (h.size / 2)
    f = np.fft.rfftfreq(h.size, 1 / fs)
    assert spec[np.argmin(abs(f - 50))] == pytest.approx(0.1, rel=0.01)  # 100 uV in mV
    assert spec[np.argmin(abs(f - 150))] == pytest.approx(0.03, rel=0.02)
    # Streaming: phase from absolute sample numbers.
    np.testing.assert_allclose(np.concatenate([mains_hum(0, 333, fs, 60, 50),
                                               mains_hum(333, 667, fs, 60, 50)]),
                               mains_hum(0, 1000, fs, 60, 50), atol=1e-12)


def test_adc_default_equals_mv_to_counts_and_saturates() -> None:
    x = np.random.default_rng(1).normal(0, 80, 10_000)  # mV: many beyond the rails
    np.testing.assert_array_equal(ECG_ADC.to_counts(x), mv_to_counts(x))
    c = ECG_ADC.to_counts(x)
    assert c.dtype == np.int16 and count_saturated(c, ECG_ADC) == np.sum(np.abs(x) >= 163.8375)
    adc = AdcModel(bits=12, counts_per_unit=200.0, offset_counts=2048, signed=False)
    got = adc.to_counts(np.array([-20.0, -10.24, 0.0, 0.0025, 10.0, 20.0]))
    np.testing.assert_array_equal(got, [0, 0, 2048, 2048, 4048, 4095])
    noisy = AdcModel(noise_lsb_rms=1.0).to_counts(np.zeros(50_000), np.random.default_rng(0))
    assert noisy.std() == pytest.approx(np.sqrt(1 + 1 / 12), rel=0.05)
    with pytest.raises(ValueError, match="bits"):
        AdcModel(bits=40)
    with pytest.raises(ValueError, match="rng"):
        AdcModel(noise_lsb_rms=1.0).to_counts([0.0])


def test_spo2_curve_forward_and_inverse() -> None:
    assert ratio_from_spo2(100) == pytest.approx(0.4)
    assert ratio_from_spo2(85) == pytest.approx(1.0)
    for spo2 in range(70, 101):
        assert spo2_from_ratio_q(ratio_q_from_spo2(spo2)) == pytest.approx(10 * spo2, abs=1)
    assert spo2_from_ratio_q(4096) == 850
    assert spo2_from_ratio_q(1) == 1000  # saturates
    assert spo2_from_ratio_q(4096 * 5) == 0
    assert spo2_from_ratio_q(0) == SPO2_INVALID
    # AC/DC ratio of ratios in integers: R = (500/90000) / (1000/120000) = 0.6667
    assert ratio_q_from_ac_dc(500, 90_000, 1000, 120_000) == round(4096 * 2 / 3)
    assert ratio_q_from_ac_dc(0, 90_000, 1000, 120_000) == SPO2_INVALID
