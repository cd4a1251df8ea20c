"""The ECG signal chain: Q15 filters, QRS detection, signal quality, beat features."""
