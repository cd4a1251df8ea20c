"""Hardware: the platform shim, device state on flash, sample sources and sensor drivers."""
