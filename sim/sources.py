"""Older names of the ECG front end's scale and quantiser, kept for their callers.

``ADC_COUNTS_PER_MV``, ``ADC_MIN_COUNT`` and ``ADC_MAX_COUNT`` are
``firmware.params``' ``ECG_COUNTS_PER_MV``, ``ECG_ADC_MIN_COUNT`` and
``ECG_ADC_MAX_COUNT``; :func:`mv_to_counts` is ``sim.adc``'s (round half to
even, saturate to int16).  New code imports them from there.  (The ECGSYN
source that lived here is now a patient, :class:`sim.patient.EcgsynPatient`,
behind the same sensor paths as every other patient.)
"""

from firmware.params import ECG_ADC_MAX_COUNT as ADC_MAX_COUNT
from firmware.params import ECG_ADC_MIN_COUNT as ADC_MIN_COUNT
from firmware.params import ECG_COUNTS_PER_MV as ADC_COUNTS_PER_MV
from sim.adc import mv_to_counts

__all__ = ["ADC_COUNTS_PER_MV", "ADC_MAX_COUNT", "ADC_MIN_COUNT", "mv_to_counts"]
