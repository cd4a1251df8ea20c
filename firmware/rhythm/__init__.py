"""Rhythm events on the device: AF, VT, pauses, asystole, brady/tachycardia,
bigeminy/trigeminy and ectopy burden, from the beats and their classes
(:mod:`firmware.rhythm.monitor`; the AF method in :mod:`firmware.rhythm.af`)."""
