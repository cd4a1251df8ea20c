"""ADC model of a simulated front end: millivolts (or any unit) to integer counts.

``counts = round(x * counts_per_unit + offset_counts [+ noise])``, saturated at
the rails of a ``bits``-bit converter (signed: -2**(bits-1) .. 2**(bits-1) - 1,
unsigned: 0 .. 2**bits - 1).  The default is the device's ECG front end
(``firmware.params``: ``ECG_COUNTS_PER_MV`` counts per mV, signed
``ECG_ADC_MIN_COUNT..ECG_ADC_MAX_COUNT``, no offset): :data:`ECG_ADC`, and
:func:`mv_to_counts` is its quantiser, the one mV -> counts conversion of the
simulator and the record reader (``sim.records``).

Optional quantisation / thermal noise: Gaussian, ``noise_lsb_rms`` LSB RMS,
added before rounding (it also dithers the quantiser).  :func:`count_saturated`
counts the samples that hit a rail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from firmware.params import ECG_ADC_MAX_COUNT, ECG_ADC_MIN_COUNT, ECG_COUNTS_PER_MV

__all__ = ["ECG_ADC", "PPG_ADC", "RESP_ADC", "AdcModel", "count_saturated", "mv_to_counts"]

#: Bits of the ECG converter, from its rails (signed: -2**15 .. 2**15 - 1).
_ECG_BITS = (ECG_ADC_MAX_COUNT - ECG_ADC_MIN_COUNT).bit_length()


@dataclass(frozen=True)
class AdcModel:
    bits: int = _ECG_BITS
    counts_per_unit: float = float(ECG_COUNTS_PER_MV)  # counts per mV for ECG
    offset_counts: int = 0
    signed: bool = True
    noise_lsb_rms: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 31:
            raise ValueError(f"bits must be an integer in [2, 31], got {self.bits!r}")
        if not self.counts_per_unit > 0:
            raise ValueError(f"counts_per_unit must be > 0, got {self.counts_per_unit!r}")
        if not self.noise_lsb_rms >= 0:
            raise ValueError(f"noise_lsb_rms must be >= 0, got {self.noise_lsb_rms!r}")
        lo, hi = self.rails
        if not lo <= self.offset_counts <= hi:
            raise ValueError(f"offset_counts {self.offset_counts!r} is outside the rails "
                             f"{lo}..{hi}")

    @property
    def rails(self) -> tuple[int, int]:
        """(lowest, highest) output code."""
        if self.signed:
            return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        return 0, (1 << self.bits) - 1

    @property
    def dtype(self) -> type[np.integer]:
        lo, hi = self.rails
        if lo >= -32768 and hi <= 32767:
            return np.int16
        return np.int32

    def to_counts(self, x: npt.ArrayLike, rng: np.random.Generator | None = None
                  ) -> npt.NDArray[np.integer]:
        """Quantise: scale, offset, (noise), round half to even, saturate."""
        v = np.asarray(x, dtype=np.float64) * self.counts_per_unit
        if self.offset_counts:
            v = v + self.offset_counts
        if self.noise_lsb_rms:
            if rng is None:
                raise ValueError("noise_lsb_rms > 0 needs an rng")
            v = v + rng.normal(0.0, self.noise_lsb_rms, size=v.shape)
        lo, hi = self.rails
        return np.clip(np.rint(v), lo, hi).astype(self.dtype)


def count_saturated(counts: npt.NDArray[np.integer], adc: AdcModel) -> int:
    """Samples of ``counts`` sitting on either rail."""
    lo, hi = adc.rails
    return int(np.count_nonzero((counts <= lo) | (counts >= hi)))


#: The ECG front end (``firmware.params``): 5 uV per count, the int16 rails.
ECG_ADC = AdcModel(bits=_ECG_BITS, counts_per_unit=float(ECG_COUNTS_PER_MV))
if ECG_ADC.rails != (ECG_ADC_MIN_COUNT, ECG_ADC_MAX_COUNT):  # params changed shape
    raise ImportError(f"ECG_ADC rails {ECG_ADC.rails} do not match firmware.params")


def mv_to_counts(signal_mv: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """Millivolts at the electrodes -> ECG counts: ``rint(mv * ECG_COUNTS_PER_MV)``
    (half to even), saturated to the rails, int16."""
    return ECG_ADC.to_counts(signal_mv)
#: PPG photodiode channel of a MAX30102-class part: 18-bit unsigned; the PPG model
#: works in counts already, so 1 count per unit.
PPG_ADC = AdcModel(bits=18, counts_per_unit=1.0, signed=False, noise_lsb_rms=2.0)
#: Impedance pneumography: 1 count = 1 milliohm, signed 16 bit.
RESP_ADC = AdcModel(bits=16, counts_per_unit=1000.0)
