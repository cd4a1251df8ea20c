"""The simulator's option values that a command line needs before numpy loads.

``medge --help`` and every parser build import this module, so it imports
nothing (the simulator proper needs numpy; a parser must not).  The modules
that implement these choices import their names from here:

- ``SENSORS``: how the ECG reaches the firmware (``sim.devices.make_sensor``):
  ``direct`` (counts straight in), or an emulated front end with its real
  driver (``ECG_FRONT_END_NAMES``, built by ``sim.frontend``);
- ``MAX_DEVICES``: most simulated devices one process runs
  (``sim.fleet.FleetParams``).
"""

ECG_FRONT_END_NAMES = ("ads1292", "ads1115")
SENSORS = ("direct", *ECG_FRONT_END_NAMES)
MAX_DEVICES = 10_000
