"""firmware/signal/dsp.py against CMSIS-DSP (PyPI ``cmsisdsp``), bit for bit.

Tolerance: none.  ``BiquadCascadeQ15`` must equal ``arm_biquad_cascade_df1_q15``
and ``FirQ15`` must equal ``arm_fir_q15`` on every sample, with both kernels
('wide' and 'split'), any block sizes (1, 7, 13, 4096, ...), state carried
across calls, full-scale and saturating inputs; over 10**6 samples in all.
The error-feedback cascade has no CMSIS counterpart: it must equal a direct
transcription of its definition, and its kernels must agree.  The
Pan-Tompkins stages are checked against numpy, with their stated bounds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import cmsisdsp
import numpy as np
import pytest

from firmware import params
from firmware.signal import dsp, filter_tables, filters
from firmware.signal.ecgfilter import EcgFilterChain

KERNELS = ("wide", "split")
BLOCK_PLAN = (1, 7, 13, 4096, 5, 1, 13, 4096, 7, 1000)


# ------------------------------------------------------------------ inputs


def make_signal(kind: str, n: int, seed: int) -> np.ndarray:
    """Full-scale and saturating test inputs, int16."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        x = rng.integers(-32768, 32768, n)
    elif kind == "square":  # +-32767 and -32768 square waves, random half periods
        x = np.empty(n, dtype=np.int64)
        i = 0
        level = 32767
        while i < n:
            run = int(rng.integers(1, 400))
            x[i : i + run] = level
            level = -32768 if level > 0 else (32767 if rng.random() < 0.5 else -32767)
            i += run
    elif kind == "steps":
        levels = np.array([32767, -32768, 0, 16384, -16384, 1, -1, 32767, -32768])
        x = np.repeat(rng.choice(levels, n // 50 + 1), 50)[:n]
        x = x + rng.integers(0, 2, n) * (x == 0)
    elif kind == "impulses":
        x = np.zeros(n, dtype=np.int64)
        where = rng.integers(0, n, n // 97 + 1)
        x[where] = rng.choice([32767, -32768], len(where))
    elif kind == "ecg_like":  # moderate level, mostly in range, like filtered ECG
        x = np.clip(np.round(rng.standard_normal(n) * 2000), -32768, 32767)
    elif kind == "chirp":
        t = np.arange(n)
        x = np.round(32767 * np.sin(2 * np.pi * (0.001 + 0.45 * t / n) * t / 2))
    else:
        raise AssertionError(kind)
    return np.asarray(x, dtype=np.int16)


def blocks(n: int) -> Iterator[tuple[int, int]]:
    """(start, stop) pairs cycling through BLOCK_PLAN until n samples are used."""
    i = 0
    k = 0
    while i < n:
        size = min(BLOCK_PLAN[k % len(BLOCK_PLAN)], n - i)
        yield i, i + size
        i += size
        k += 1


# ------------------------------------------------------------------ CMSIS references


class CmsisBiquad:
    def __init__(self, num_stages: int, coeffs: list[int], post_shift: int) -> None:
        self.inst = cmsisdsp.arm_biquad_casd_df1_inst_q15()
        cmsisdsp.arm_biquad_cascade_df1_init_q15(
            self.inst,
            num_stages,
            np.array(coeffs, dtype=np.int16),
            np.zeros(4 * num_stages, dtype=np.int16),
            post_shift,
        )

    def process(self, x: np.ndarray) -> list[int]:
        return cmsisdsp.arm_biquad_cascade_df1_q15(self.inst, x).tolist()


class CmsisFir:
    """``arm_fir_q15`` with natural-order taps: CMSIS wants them time-reversed,
    and an even numTaps >= 4; padding with zero taps for older samples
    (at the front of pCoeffs) changes nothing."""

    MAX_BLOCK = max(BLOCK_PLAN)

    def __init__(self, taps: list[int]) -> None:
        num_taps = max(4, len(taps) + (len(taps) & 1))
        p_coeffs = [0] * (num_taps - len(taps)) + taps[::-1]
        self.inst = cmsisdsp.arm_fir_instance_q15()
        # The binding derives blockSize from the state length; blocks must not exceed it.
        state = np.zeros(num_taps + self.MAX_BLOCK, dtype=np.int16)
        status = cmsisdsp.arm_fir_init_q15(
            self.inst, num_taps, np.array(p_coeffs, dtype=np.int16), state
        )
        assert status == 0

    def process(self, x: np.ndarray) -> list[int]:
        return cmsisdsp.arm_fir_q15(self.inst, x).tolist()


# ------------------------------------------------------------------ biquad cases


def random_stable_coeffs(rng: np.random.Generator, num_stages: int, post_shift: int) -> list[int]:
    """Sections with poles inside the unit circle (radius 0.3..0.999) and random
    zeros, every coefficient using the post_shift's range."""
    lim = 2**post_shift
    out: list[int] = []
    for _ in range(num_stages):
        r = rng.uniform(0.3, 0.999)
        theta = rng.uniform(0, np.pi)
        a1 = min(2 * r * np.cos(theta), lim - 1e-6)
        a2 = -r * r
        b = rng.uniform(-lim, lim, 3)
        vals = [b[0], 0.0, b[1], b[2], a1, a2]
        out += [int(np.clip(np.round(v * 32768 / lim), -32768, 32767)) for v in vals]
    return out


def biquad_cases() -> list[tuple[str, int, list[int], int, str, int]]:
    """(id, num_stages, coeffs, post_shift, signal kind, samples)."""
    cases = []
    for fs in params.SUPPORTED_RATES_HZ:
        for name in filter_tables.FILTER_NAMES:
            n, c, ps = filters.table(fs, name)
            for kind in ("random", "square", "ecg_like"):
                cases.append((f"{name}@{fs}-{kind}", n, list(c), ps, kind, 12000))
    rng = np.random.default_rng(2024)
    kinds = ("random", "square", "steps", "impulses", "ecg_like", "chirp")
    for post_shift in range(4):
        for num_stages in (1, 2, 3):
            for kind in kinds:
                c = random_stable_coeffs(rng, num_stages, post_shift)
                cases.append((f"stable-ps{post_shift}-n{num_stages}-{kind}", num_stages, c,
                              post_shift, kind, 9000))
        # Arbitrary int16 coefficients: mostly unstable, i.e. saturating all the time.
        for kind in ("random", "impulses"):
            c = rng.integers(-32768, 32768, 12).tolist()
            c[1] = c[7] = 0
            cases.append((f"wild-ps{post_shift}-{kind}", 2, c, post_shift, kind, 6000))
    return cases


BIQUAD_CASES = biquad_cases()
FIR_TAPS = (1, 2, 3, 4, 5, 8, 31, 32, 127, 128)
FIR_SAMPLES = 12000


def test_the_bit_exact_tests_cover_a_million_samples() -> None:
    biquad = sum(case[5] for case in BIQUAD_CASES)
    fir = len(FIR_TAPS) * 3 * FIR_SAMPLES
    assert biquad + fir >= 1_000_000
    assert biquad >= 800_000


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(
    ("num_stages", "coeffs", "post_shift", "kind", "n"),
    [case[1:] for case in BIQUAD_CASES],
    ids=[case[0] for case in BIQUAD_CASES],
)
def test_biquad_matches_cmsis_bit_for_bit(
    num_stages: int, coeffs: list[int], post_shift: int, kind: str, n: int, kernel: str
) -> None:
    x = make_signal(kind, n, seed=num_stages * 131 + post_shift + n)
    ref = CmsisBiquad(num_stages, coeffs, post_shift)
    ours = dsp.BiquadCascadeQ15(num_stages, coeffs, post_shift, kernel=kernel)
    for start, stop in blocks(n):
        block = x[start:stop]
        expected = ref.process(block)
        got = ours.process(block.tolist())
        assert got == expected, f"first mismatch in block {start}:{stop}"


def test_biquad_process_inplace_on_array_and_saturation_edges() -> None:
    from array import array

    coeffs = [32767, 0, 32767, 32767, 0, 0]  # gain ~3: saturates
    x = [32767, 32767, 32767, -32768, -32768, -32768, 0, 1, -1, 0]
    for kernel in KERNELS:
        buf = array("h", x)
        dsp.BiquadCascadeQ15(1, coeffs, 0, kernel=kernel).process_inplace(buf, len(buf))
        assert list(buf) == CmsisBiquad(1, coeffs, 0).process(np.array(x, dtype=np.int16))
        assert 32767 in buf and -32768 in buf


# ------------------------------------------------------------------ FIR


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("num_taps", FIR_TAPS)
def test_fir_matches_cmsis_bit_for_bit(num_taps: int, kernel: str) -> None:
    rng = np.random.default_rng(num_taps)
    taps_sets = [
        rng.integers(-32768, 32768, num_taps).tolist(),  # arbitrary: saturates often
        [int(v) for v in np.round(32767 * np.hanning(num_taps + 2)[1:-1] / 2)],  # low-pass-ish
    ]
    taps_sets[1][0] = -32768 if num_taps > 1 else taps_sets[1][0]
    for s, taps in enumerate(taps_sets):
        for kind in ("random", "square", "impulses") if s == 0 else ("ecg_like",):
            x = make_signal(kind, FIR_SAMPLES, seed=num_taps + s)
            ref = CmsisFir(taps)
            ours = dsp.FirQ15(taps, kernel=kernel)
            for start, stop in blocks(FIR_SAMPLES):
                block = x[start:stop]
                assert ours.process(block.tolist()) == ref.process(block), (start, stop)


def test_fir_coefficient_order_is_natural() -> None:
    """b[0] weights the newest sample: an impulse returns the taps in order."""
    taps = [100, -200, 300, 16384, 7]
    out = dsp.FirQ15(taps).process([32767] + [0] * 6)
    assert out == [(t * 32767) >> 15 for t in taps] + [0, 0]
    assert out[:2] == [99, -200]


def test_fir_reset_clears_history() -> None:
    f = dsp.FirQ15([16384, 16384])
    assert f.process([32767, 0]) == [16383, 16383]
    f.reset()
    assert f.process([0, 0]) == [0, 0]


# ------------------------------------------------------------------ error feedback


def ef_reference(num_stages: int, coeffs: list[int], post_shift: int, x: list[int]) -> list[int]:
    """BiquadCascadeEfQ15 transcribed from its docstring, one sample at a time."""
    shift = 15 - post_shift
    out = []
    state = [[0] * 6 for _ in range(num_stages)]  # x1, x2, y1, y2, e1, e2
    for v in x:
        for s in range(num_stages):
            b0, _, b1, b2, a1, a2 = coeffs[6 * s : 6 * s + 6]
            x1, x2, y1, y2, e1, e2 = state[s]
            feedback = e1 if a2 == 0 else 2 * e1 - e2
            acc = b0 * v + b1 * x1 + b2 * x2 + a1 * y1 + a2 * y2 + feedback
            y = acc // 2**shift  # floor division: truncation toward minus infinity
            e = acc - y * 2**shift
            if not -32768 <= y <= 32767:
                y = max(-32768, min(32767, y))
                e = 0
            state[s] = [v, x1, y, y1, e, e1]
            v = y
        out.append(v)
    return out


@pytest.mark.parametrize("kernel", KERNELS)
def test_error_feedback_cascade_matches_its_definition(kernel: str) -> None:
    rng = np.random.default_rng(7)
    names = filter_tables.FILTER_NAMES
    sets = [filters.table(fs, name) for fs in (250, 360) for name in names]
    sets += [(2, random_stable_coeffs(rng, 2, ps), ps) for ps in range(4)]
    for i, (n, c, ps) in enumerate(sets):
        kind = ("random", "square", "ecg_like", "impulses")[i % 4]
        x = make_signal(kind, 3000, seed=i).tolist()
        f = dsp.BiquadCascadeEfQ15(n, list(c), ps, kernel=kernel)
        got: list[int] = []
        for start, stop in blocks(len(x)):
            got += f.process(x[start:stop])
        assert got == ef_reference(n, list(c), ps, x), (n, c, ps, kind)


def test_error_feedback_kernels_agree_on_saturating_input() -> None:
    rng = np.random.default_rng(11)
    for ps in range(4):
        c = rng.integers(-32768, 32768, 18).tolist()
        c[1] = c[7] = c[13] = 0
        x = make_signal("random", 20000, seed=ps).tolist()
        wide = dsp.BiquadCascadeEfQ15(3, c, ps, kernel="wide").process(x)
        split = dsp.BiquadCascadeEfQ15(3, c, ps, kernel="split").process(x)
        assert wide == split


def test_error_feedback_prime_dc_is_the_steady_state() -> None:
    for fs in params.SUPPORTED_RATES_HZ:
        f = dsp.BiquadCascadeEfQ15(*filters.table(fs, "baseline"))
        f.prime_dc(12345)
        assert f.process([12345] * 1000) == [0] * 1000  # exact: B(1) == 0
        f.reset()
        assert f.process([0] * 10) == [0] * 10
        for name in ("qrs_bandpass", "monitor_lowpass"):
            for x in (12345, -20000, 777):
                settled = dsp.BiquadCascadeEfQ15(*filters.table(fs, name))
                final = settled.process([x] * 20000)[-1]
                primed = dsp.BiquadCascadeEfQ15(*filters.table(fs, name))
                primed.prime_dc(x)
                y = primed.process([x] * 3000)
                assert max(abs(v - final) for v in y) <= 1  # within an LSB from the start


# ------------------------------------------------------------------ Pan-Tompkins stages


def test_derivative_is_the_cmsis_fir_it_claims_to_be() -> None:
    x = np.concatenate([make_signal(k, 20000, seed=3) for k in ("random", "square", "impulses")])
    ref = CmsisFir([8192, 4096, 0, -4096, -8192])
    expected: list[int] = []
    for start, stop in blocks(len(x)):
        expected += ref.process(x[start:stop])
    d = dsp.Derivative5Q15()
    got: list[int] = []
    for start, stop in blocks(len(x)):
        got += d.process(x[start:stop].tolist())
    assert got == expected
    xs = x.astype(np.int64)
    direct = (2 * xs[4:] + xs[3:-1] - xs[1:-3] - 2 * xs[:-4]) >> 3
    assert got[4:] == direct.tolist()


def test_derivative_bound_holds_on_every_extreme_pattern() -> None:
    worst = 0
    for bits in range(32):
        pattern = [32767 if bits >> k & 1 else -32768 for k in range(5)]
        worst = max(worst, max(abs(v) for v in dsp.Derivative5Q15().process(pattern)))
    assert worst == dsp.DERIVATIVE5_MAX
    assert dsp.DERIVATIVE5_MAX**2 < 2**30


def test_square_and_its_bounds() -> None:
    x = [*range(-32768, 32768, 7), -32768, 32767]
    for shift in (0, 5, 15):
        got = dsp.SquareQ15(shift).process(x)
        assert got == [(max(v, -32767) ** 2) >> shift for v in x]
        assert max(got) < 2**30 >> shift
    assert dsp.SquareQ15(0).process([-32768]) == [32767**2]


def test_square_shift_bits() -> None:
    assert dsp.square_shift_bits(dsp.DERIVATIVE5_MAX, 54) == 5
    assert dsp.square_shift_bits(dsp.DERIVATIVE5_MAX, 56) == 5
    assert dsp.square_shift_bits(dsp.DERIVATIVE5_MAX, 57) == 6
    assert dsp.square_shift_bits(dsp.DERIVATIVE5_MAX, 28) == 4
    assert dsp.square_shift_bits(dsp.DERIVATIVE5_MAX, 1) == 1  # max(w, 2) * 24576**2 >> 1
    for w in (1, 2, 30, 54, 100, 255):
        s = dsp.square_shift_bits(32767, w)
        dsp.MovingWindowIntegrator(w, (32767 * 32767) >> s)  # accepted
        if s:
            with pytest.raises(ValueError):
                dsp.MovingWindowIntegrator(w, (32767 * 32767) >> (s - 1))


def test_moving_window_integrator_is_a_running_sum() -> None:
    rng = np.random.default_rng(5)
    for w in (1, 2, 7, 54, 90):
        x = rng.integers(0, 2**20, 5000)
        mwi = dsp.MovingWindowIntegrator(w, 2**20)
        got: list[int] = []
        for start, stop in blocks(len(x)):
            got += mwi.process(x[start:stop].tolist())
        assert got == np.convolve(x, np.ones(w, dtype=np.int64))[: len(x)].tolist()
    clamp = dsp.MovingWindowIntegrator(3, 10)
    assert clamp.process([100, -100, 5, 0, 0]) == [10, 0, 5, -5, 5]


def test_pan_tompkins_front_end_stays_below_2_to_the_30() -> None:
    x = make_signal("square", 30000, seed=9).tolist()
    w = 54
    s = dsp.square_shift_bits(dsp.DERIVATIVE5_MAX, w)
    y = dsp.Derivative5Q15().process(x)
    y = dsp.SquareQ15(s).process(y)
    y = dsp.MovingWindowIntegrator(w, dsp.DERIVATIVE5_MAX**2 >> s).process(y)
    assert 0 <= min(y) and max(y) < 2**30


# ------------------------------------------------------------------ conversions


@pytest.mark.parametrize(
    ("x", "q"),
    [
        (0.0, 0),
        (-0.0, 0),
        (0.5 / 32768, 1),
        (-0.5 / 32768, -1),
        (0.4999 / 32768, 0),
        (-0.4999 / 32768, 0),
        (1.5 / 32768, 2),
        (-1.5 / 32768, -2),
        (0.5, 16384),
        (-0.5, -16384),
        (32766.5 / 32768, 32767),
        (32767.4 / 32768, 32767),
        (32767.5 / 32768, 32767),  # rounds to 32768, saturates
        (1.0, 32767),
        (1e300, 32767),
        (math.inf, 32767),
        (-32767.5 / 32768, -32768),
        (-1.0, -32768),
        (-32768.5 / 32768, -32768),
        (-1e300, -32768),
        (-math.inf, -32768),
    ],
)
def test_float_to_q15_rounds_then_saturates(x: float, q: int) -> None:
    assert dsp.float_to_q15(x) == q


def test_float_to_q15_rejects_nan_and_round_trips_every_q15() -> None:
    with pytest.raises(ValueError, match="NaN"):
        dsp.float_to_q15(math.nan)
    every = list(range(-32768, 32768))
    assert dsp.floats_to_q15(dsp.q15_to_floats(every)) == every
    assert dsp.q15_to_float(-32768) == -1.0
    assert dsp.floats_to_q15([0.25, -2.0]) == [8192, -32768]


# ------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize(
    "make",
    [
        lambda: dsp.BiquadCascadeQ15(1, [1, 0, 2, 3, 4], 0),  # 5 coefficients, not 6
        lambda: dsp.BiquadCascadeQ15(2, [1, 0, 2, 3, 4, 5], 0),
        lambda: dsp.BiquadCascadeQ15(0, [], 0),
        lambda: dsp.BiquadCascadeQ15(1.0, [1, 0, 2, 3, 4, 5], 0),
        lambda: dsp.BiquadCascadeQ15(1, [1.0, 0, 2, 3, 4, 5], 0),
        lambda: dsp.BiquadCascadeQ15(1, [True, 0, 2, 3, 4, 5], 0),
        lambda: dsp.BiquadCascadeQ15(1, [32768, 0, 2, 3, 4, 5], 0),
        lambda: dsp.BiquadCascadeQ15(1, [1, 0, 2, 3, 4, -32769], 0),
        lambda: dsp.BiquadCascadeQ15(1, [1, 0, 2, 3, 4, 5], -1),
        lambda: dsp.BiquadCascadeQ15(1, [1, 0, 2, 3, 4, 5], 8),
        lambda: dsp.BiquadCascadeQ15(1, [1, 0, 2, 3, 4, 5], 1.0),
        lambda: dsp.BiquadCascadeQ15(1, [1, 0, 2, 3, 4, 5], 0, kernel="fast"),
        lambda: dsp.BiquadCascadeEfQ15(1, [1, 0, 2, 3, 4], 0),
        lambda: dsp.BiquadCascadeEfQ15(1, [1, 0, 2, 3, 4, 5], 9),
        lambda: dsp.FirQ15([]),
        lambda: dsp.FirQ15([1] * (dsp.FIR_MAX_TAPS + 1)),
        lambda: dsp.FirQ15([1, 2.5]),
        lambda: dsp.FirQ15([1, 40000]),
        lambda: dsp.FirQ15([1, 2], kernel="numpy"),
        lambda: dsp.SquareQ15(-1),
        lambda: dsp.SquareQ15(31),
        lambda: dsp.SquareQ15(2.0),
        lambda: dsp.MovingWindowIntegrator(0, 10),
        lambda: dsp.MovingWindowIntegrator(10, 0),
        lambda: dsp.MovingWindowIntegrator(54, 2**25),
        lambda: dsp.MovingWindowIntegrator(1, 2**30 - 1),
        lambda: dsp.square_shift_bits(40000, 10),
        lambda: dsp.square_shift_bits(100, 0),
    ],
)
def test_bad_construction_raises_value_error(make) -> None:
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "fs_hz is required"),
        ({"mains_hz": 50}, "fs_hz is required"),
        ({"fs_hz": 360}, "mains_hz is required"),
        ({"fs_hz": None, "mains_hz": 50}, "fs_hz is required"),
        ({"fs_hz": 500, "mains_hz": 50}, "500"),
        ({"fs_hz": 360.5, "mains_hz": 50}, "360.5"),
        ({"fs_hz": "360", "mains_hz": 50}, "360"),
        ({"fs_hz": 360, "mains_hz": 55}, "55"),
        ({"fs_hz": 360, "mains_hz": 50, "input_shift_bits": 16}, "input_shift_bits"),
        ({"fs_hz": 360, "mains_hz": 50, "input_shift_bits": -1}, "input_shift_bits"),
        ({"fs_hz": 360, "mains_hz": 50, "adc_zero": 1024.0}, "adc_zero"),
        ({"fs_hz": 360, "mains_hz": 50, "kernel": "fast"}, "kernel"),
    ],
)
def test_filter_chain_needs_a_supported_rate_and_mains(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EcgFilterChain(**kwargs)


def test_filter_chain_accepts_integral_float_rates() -> None:
    assert EcgFilterChain(360.0, 60.0).fs_hz == 360  # wfdb gives fs as a float


def test_tables_name_the_unsupported_rate_or_filter() -> None:
    with pytest.raises(ValueError, match=r"300 Hz.*250, 360"):
        filters.table(300, "baseline")
    with pytest.raises(ValueError, match=r"'highpass'.*baseline"):
        filters.table(360, "highpass")
    with pytest.raises(ValueError, match="None"):
        filters.table(None, "baseline")
