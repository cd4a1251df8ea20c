"""Vital signs derived from the signal chain: heart rate, SpO2 (and the coming ones)."""
