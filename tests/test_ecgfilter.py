"""firmware/signal/ecgfilter.py: the device's ECG filter chain, in CPython and in the
real MicroPython VM.

The VM test runs 60 s of a 360 Hz synthetic ECG (raw int16 counts with
baseline wander, 50 Hz hum, noise and a clipped artefact) through
EcgFilterChain, an FIR, the QRS band-pass and the Pan-Tompkins derivative,
squaring and moving-window integration, in blocks of 97 samples, and
requires every output sample to equal CPython's, for CPython's 'wide' and
'split' kernels (MicroPython's default is 'split').  It also checks with
``gc.mem_alloc`` that the per-sample loops allocate nothing (no long ints).
"""

from __future__ import annotations

import binascii

import numpy as np
import pytest
from scipy import signal

from firmware import params
from firmware.params import ECG_INPUT_SHIFT_BITS
from firmware.signal import dsp, filters
from firmware.signal.ecgfilter import EcgFilterChain
from firmware.signal.filters import make_filter

FS_HZ = 360
COUNTS_PER_MV = 200  # the simulator's and MIT-BIH's ADC gain
BLOCK = 97
MWI_WINDOW = 54  # 150 ms at 360 Hz
FIR_TAPS = [int(v) for v in np.round(signal.firwin(31, 25.0, fs=FS_HZ) * 32768)]


def synthetic_ecg_counts(seconds: float, fs_hz: int, seed: int = 3) -> np.ndarray:
    """Raw ADC counts (200 counts/mV, signed 16 bit) of an ECG-like signal."""
    rng = np.random.default_rng(seed)
    n = int(seconds * fs_hz)
    t = np.arange(n) / fs_hz
    mv = np.zeros(n)
    beat = 0.3
    while beat < seconds:
        for offset_s, width_s, amp_mv in ((-0.2, 0.025, 0.15), (0.0, 0.01, 1.2),
                                          (0.03, 0.01, -0.25), (0.25, 0.05, 0.3)):
            mv += amp_mv * np.exp(-0.5 * ((t - beat - offset_s) / width_s) ** 2)
        beat += 60.0 / rng.uniform(60, 90)
    mv += 0.5 * np.sin(2 * np.pi * 0.25 * t) + 0.8  # wander and electrode offset
    mv += 0.1 * np.sin(2 * np.pi * 50.0 * t)  # mains hum
    mv += rng.normal(0, 0.02, n)
    artefact = (t > 30.0) & (t < 30.4)
    mv[artefact] += 15.0 * np.sin(2 * np.pi * 5 * t[artefact])  # beyond +-10.24 mV: clamped
    return np.clip(np.round(mv * COUNTS_PER_MV), -32768, 32767).astype(np.int16)


def pipeline(x: list[int], kernel: str | None) -> dict[str, bytes | int]:
    """What the VM script computes, in CPython."""
    chain = EcgFilterChain(FS_HZ, 50, kernel=kernel)
    fir = dsp.FirQ15(FIR_TAPS, kernel=kernel)
    bp = chain.qrs_bandpass()
    shift = dsp.square_shift_bits(dsp.DERIVATIVE5_MAX, MWI_WINDOW)
    der = dsp.Derivative5Q15()
    sq = dsp.SquareQ15(shift)
    mwi = dsp.MovingWindowIntegrator(MWI_WINDOW, dsp.DERIVATIVE5_MAX**2 >> shift)
    out: dict[str, list[int]] = {"chain": [], "fir": [], "bp": [], "mwi": []}
    for i in range(0, len(x), BLOCK):
        block = chain.process(x[i : i + BLOCK])
        out["chain"] += block
        out["fir"] += fir.process(block)
        block = bp.process(block)
        out["bp"] += block
        out["mwi"] += mwi.process(sq.process(der.process(block)))
    return {
        "chain": np.array(out["chain"], dtype="<i2").tobytes(),
        "fir": np.array(out["fir"], dtype="<i2").tobytes(),
        "bp": np.array(out["bp"], dtype="<i2").tobytes(),
        "mwi": np.array(out["mwi"], dtype="<i4").tobytes(),
        "clamped": chain.clamped,
    }


VM_SCRIPT = """
import binascii, gc, struct
from array import array
from firmware.signal import dsp
from firmware.signal.ecgfilter import EcgFilterChain

FS_HZ = %(fs)d
BLOCK = %(block)d
W = %(window)d
with open('/data/ecg.bin', 'rb') as f:
    raw = f.read()
n = len(raw) // 2
x = struct.unpack('<%%dh' %% n, raw)

chain = EcgFilterChain(FS_HZ, 50)
fir = dsp.FirQ15(%(taps)r)
bp = chain.qrs_bandpass()
shift = dsp.square_shift_bits(dsp.DERIVATIVE5_MAX, W)
der = dsp.Derivative5Q15()
sq = dsp.SquareQ15(shift)
mwi = dsp.MovingWindowIntegrator(W, dsp.DERIVATIVE5_MAX * dsp.DERIVATIVE5_MAX >> shift)
print('kernels', chain.baseline.kernel, chain.notch.kernel, fir.kernel, bp.kernel)

out_chain = array('h', bytes(2 * n))
out_fir = array('h', bytes(2 * n))
out_bp = array('h', bytes(2 * n))
out_mwi = array('i', bytes(4 * n))
blk = array('h', bytes(2 * BLOCK))
wide = array('i', bytes(4 * BLOCK))
allocs = [0, 0, 0, 0, 0, 0]  # blocks whose call changed the heap's use
gc.collect()
i = 0
while i < n:
    m = min(BLOCK, n - i)
    for k in range(m):
        blk[k] = x[i + k]
    a = gc.mem_alloc()
    chain.process_inplace(blk, m)
    allocs[0] += gc.mem_alloc() != a
    for k in range(m):
        out_chain[i + k] = blk[k]
    a = gc.mem_alloc()
    fir.process_inplace(blk, m)
    allocs[1] += gc.mem_alloc() != a
    for k in range(m):
        out_fir[i + k] = blk[k]
        blk[k] = out_chain[i + k]
    a = gc.mem_alloc()
    bp.process_inplace(blk, m)
    allocs[2] += gc.mem_alloc() != a
    for k in range(m):
        out_bp[i + k] = blk[k]
        wide[k] = blk[k]
    a = gc.mem_alloc()
    der.process_inplace(wide, m)
    allocs[3] += gc.mem_alloc() != a
    a = gc.mem_alloc()
    sq.process_inplace(wide, m)
    allocs[4] += gc.mem_alloc() != a
    a = gc.mem_alloc()
    mwi.process_inplace(wide, m)
    allocs[5] += gc.mem_alloc() != a
    for k in range(m):
        out_mwi[i + k] = wide[k]
    i += m
print('allocated', *allocs)
print('clamped', chain.clamped)
for name, arr in (('chain', out_chain), ('fir', out_fir), ('bp', out_bp), ('mwi', out_mwi)):
    print(name, binascii.hexlify(bytes(arr)).decode())
"""


@pytest.fixture(scope="module")
def ecg60() -> np.ndarray:
    return synthetic_ecg_counts(60.0, FS_HZ)


def test_micropython_vm_computes_what_cpython_computes(micropython, ecg60: np.ndarray) -> None:
    script = VM_SCRIPT % {"fs": FS_HZ, "block": BLOCK, "window": MWI_WINDOW, "taps": FIR_TAPS}
    # A small initial heap (the port grows it on demand): gc.mem_alloc() scans it.
    out = micropython(
        script, extra_files={"/data/ecg.bin": ecg60.astype("<i2").tobytes()}, heap_bytes=1 << 19
    )
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    assert lines["kernels"] == "split split split split"  # MicroPython's default
    assert lines["allocated"] == "0 0 0 0 0 0"  # no allocation: every int stayed small
    x = ecg60.tolist()
    expected = pipeline(x, kernel="wide")
    assert pipeline(x, kernel="split") == expected
    assert pipeline(x, kernel=None) == expected
    assert int(lines["clamped"]) == expected["clamped"] > 0
    for name in ("chain", "fir", "bp", "mwi"):
        vm = binascii.unhexlify(lines[name])
        assert len(vm) == len(expected[name])
        if vm != expected[name]:
            width = 4 if name == "mwi" else 2
            first = next(i for i in range(0, len(vm), width) if vm[i : i + width]
                         != expected[name][i : i + width])
            pytest.fail(f"{name}: VM and CPython differ first at sample {first // width}")


def test_chain_is_scaling_then_baseline_then_notch(ecg60: np.ndarray) -> None:
    x = ecg60.tolist()
    for mains in params.SUPPORTED_MAINS_HZ:
        chain = EcgFilterChain(FS_HZ, mains, kernel="wide")
        got: list[int] = []
        for i in range(0, len(x), 1000):
            got += chain.process(x[i : i + 1000])
        scaled = [max(-32768, min(32767, v << ECG_INPUT_SHIFT_BITS)) for v in x]
        baseline = make_filter(FS_HZ, "baseline")
        assert isinstance(baseline, dsp.BiquadCascadeEfQ15)
        baseline.prime_dc(scaled[0])
        notch = make_filter(FS_HZ, f"notch{mains}")
        assert type(notch) is dsp.BiquadCascadeQ15
        assert got == notch.process(baseline.process(scaled))
        assert chain.clamped == sum(1 for v in x if not -2048 <= v <= 2047)


def test_chain_removes_wander_and_hum_and_keeps_the_qrs(ecg60: np.ndarray) -> None:
    out = np.array(EcgFilterChain(FS_HZ, 50).process(ecg60.tolist()), dtype=float)
    clean = slice(5 * FS_HZ, 29 * FS_HZ)  # settled, before the artefact
    spectrum = np.abs(np.fft.rfft(out[clean]))
    freqs = np.fft.rfftfreq(len(out[clean]), 1 / FS_HZ)
    raw_spectrum = np.abs(np.fft.rfft(ecg60[clean].astype(float) * 16))
    # 50 Hz: the notch; 0.25 Hz wander: the 0.5 Hz high-pass is -8.5 dB there by design.
    for f_hz, min_drop_db in ((50.0, 30.0), (0.25, 7.5)):
        k = int(np.argmin(np.abs(freqs - f_hz)))
        drop = 20 * np.log10(raw_spectrum[k] / spectrum[k])
        assert drop >= min_drop_db, (f_hz, drop)
    # R peaks (1.2 mV = 3840 LSB at 3200 LSB/mV) come through at most 15 % smaller.
    assert 0.85 * 1.2 * 3200 <= out[clean].max() <= 1.1 * 1.6 * 3200


def test_first_sample_primes_the_high_pass() -> None:
    chain = EcgFilterChain(250, 60)
    assert chain.process([1500] * 500) == [0] * 500  # 7.5 mV electrode offset: no transient
    chain.reset()
    assert chain.clamped == 0
    offset = synthetic_ecg_counts(4.0, 250).astype(int)
    a = np.array(EcgFilterChain(250, 60).process((offset - offset[0]).tolist()))
    b = np.array(EcgFilterChain(250, 60).process((offset + 1000 - offset[0]).tolist()))
    assert np.array_equal(a, b)  # the offset cancels exactly (the sections have B(1) = 0)


class PassThrough:
    def prime_dc(self, x: int) -> None:
        pass

    def process_inplace(self, buf: list[int], count: int) -> None:
        pass


def test_input_scaling_and_clamp_counter() -> None:
    chain = EcgFilterChain(360, 50, adc_zero=1024, input_shift_bits=4)
    chain.baseline = chain.notch = PassThrough()  # look at the scaling alone
    out = chain.process([1024, 1025, 0, 2047, 3071, 3072, -5, -1024, -1025, 10**9])
    assert out == [0, 16, -16384, 16368, 32752, 32767, -16464, -32768, -32768, 32767]
    assert chain.clamped == 3
    sixteen_bit = EcgFilterChain(360, 50, input_shift_bits=0)
    sixteen_bit.baseline = sixteen_bit.notch = PassThrough()
    assert sixteen_bit.process([40000, -40000, 32767, -32768]) == [32767, -32768, 32767, -32768]
    assert sixteen_bit.clamped == 2


def test_qrs_bandpass_access() -> None:
    chain = EcgFilterChain(250, 50)
    assert chain.qrs_bandpass_table == filters.table(250, "qrs_bandpass")
    bp = chain.qrs_bandpass()
    assert isinstance(bp, dsp.BiquadCascadeEfQ15)
    assert bp is not chain.qrs_bandpass()
