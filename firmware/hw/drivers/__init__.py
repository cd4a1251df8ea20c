"""Sensor drivers: each takes its bus (machine.I2C / smbus2.SMBus / machine.SPI)
in ``__init__`` and works out which kind it got by duck typing.  Nothing
touches hardware at import time."""
