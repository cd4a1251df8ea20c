"""The device's vital signs beside the ECG: PPG, temperature, respiration.

:class:`VitalSigns` is the multi-sensor part of the device loop
(:class:`firmware.device.Device` calls it when made with one):

- the ECG (the device's sample source, ``ecg_fs_hz``) hands it every block
  (:meth:`VitalSigns.ecg`) and every R peak (:meth:`VitalSigns.beat`) for
  the ECG's respiratory modulations and the HRV;
- ``ppg``, optional: an object with ``sample_rate_hz``, ``full_scale_count``
  and ``read_ppg(red, ir, max_count) -> n`` (e.g.
  :class:`firmware.hw.sensors.Max30102DualSource`), read at every
  :meth:`VitalSigns.poll` until empty, at its own rate, into a
  :class:`firmware.vitals.pulseox.PulseOximeter`; its ``overflows`` (FIFO
  samples the part dropped) are counted;
- ``thermometer``, optional: an object with ``read_temperature_mc()`` (the
  TMP117 driver), read every ``temp_period_ms`` of signal time.

Each sensor has its own rate; a missing sensor means its vitals are absent
from the message, not zero.  :meth:`VitalSigns.report` adds to a ``vitals``
message (``firmware.net.protocol``) each vital as an integer with its unit in
the name, its own quality (0..100), and null with the reason in ``withheld``
when the signal cannot support it:

==========================  =========================================================
``pulse_bpm``               PPG pulse rate over the last ``pulse_window_ms`` (8 s)
``spo2_pct``                SpO2 (ratio of ratios, 8 s of pulses), whole percent
``perfusion_centi_pct``     perfusion index of the IR, 0.01 %
``resp_rate_per_min``       fused respiratory rate of the last 32 s, updated every 8 s
                            (``RESP_STEP_MS``; the HRV too)
``temp_centi_c``            TMP117 temperature, 0.01 degC
``hr_pulse_delta_bpm``      ECG heart rate minus PPG pulse rate, when both are there
``hrv_sdnn_ms`` /           SDNN and RMSSD of the last 5 min of normal-to-normal
``hrv_rmssd_ms``            intervals (:class:`firmware.vitals.hrv.Hrv`)
``nibp_systolic_mmhg`` ...  the last good cuff reading as read (systolic, diastolic,
                            mean; ``nibp_age_s`` since it arrived,
                            ``nibp_last_failure`` the status of a failed one):
                            ``nibp``, a :class:`firmware.hw.drivers.nibp.NibpModule`
==========================  =========================================================

Bad input is counted in ``faults`` (also published) and becomes a reason,
never a crash or a number: a thermometer that raises ``OSError`` (an I2C
NACK) -> ``sensor_error``; a PPG read that fails (``ppg_sensor_error``)
delivers no samples: after ``PPG_STALE_MS`` (2 s) without any, pulse and
SpO2 are withheld as ``stale`` (the PPG's own clock stops with it, so this
is judged on the ECG's signal time); a reading outside 25..45 degC -> ``out_of_range``;
no good reading for 3 periods -> ``stale``; a PPG FIFO overflow in the window
-> the SpO2 is withheld as ``fifo_overflow`` (the pulse shapes have a gap);
a saturated PPG -> ``saturated``; a cuff line with a bad checksum, a
malformed or implausible one, a failed measurement -> ``nibp_*`` counters
(the last good reading stays, with its age).  Reasons of the PPG and respiration are
those of :mod:`firmware.vitals.pulseox`, :mod:`firmware.vitals.rate` and
:mod:`firmware.vitals.resp`.

Integers only; every buffer is made at init.  Time is the ECG's signal time
(ms from its sample count), so a run is deterministic for a given input on
CPython and MicroPython alike.
"""

from array import array

from firmware.hw.compat import const
from firmware.net import protocol
from firmware.vitals.hrv import Hrv
from firmware.vitals.pulseox import PulseOximeter
from firmware.vitals.resp import EcgModulations, RespiratoryRate

_PPG_BLOCK = const(32)  # one MAX30102 FIFO
_PPG_MAX_READS = const(16)  # bounded reads per poll
TEMP_MIN_CENTI_C = const(2500)
TEMP_MAX_CENTI_C = const(4500)
TEMP_STALE_PERIODS = const(3)
TMP117_NO_RESULT_MC = const(-256000)  # Temp_Result 0x8000 before the first conversion
PPG_STALE_MS = const(2000)  # no PPG samples for this long: its vitals are stale
RESP_STEP_MS = const(8000)
RESP_WINDOW_MS = const(32000)
PULSE_WINDOW_MS = const(8000)

REASON_SENSOR_ERROR = "sensor_error"
REASON_OUT_OF_RANGE = "out_of_range"
REASON_STALE = "stale"
REASON_NO_READING = "no_reading"
REASON_FIFO_OVERFLOW = "fifo_overflow"


class VitalSigns:
    """Multi-sensor vital signs for the device loop (module docstring)."""

    def __init__(self, ecg_fs_hz, ppg=None, thermometer=None, temp_period_ms=1000,
                 pulse_window_ms=PULSE_WINDOW_MS, nibp=None):
        self.ecg_fs_hz = ecg_fs_hz
        self.resp = RespiratoryRate(RESP_WINDOW_MS)
        self.edr = EcgModulations(ecg_fs_hz, self.resp)
        self.hrv = Hrv(ecg_fs_hz)
        self.ppg = ppg
        self.pox = None
        if ppg is not None:
            self.pox = PulseOximeter(ppg.sample_rate_hz, ppg.full_scale_count, resp=self.resp)
            self._red = array("l", [0] * _PPG_BLOCK)
            self._ir = array("l", [0] * _PPG_BLOCK)
        self.thermometer = thermometer
        self.nibp = nibp
        self._nibp_readings = 0
        self._nibp_at_ms = -1
        self.temp_period_ms = temp_period_ms
        self.pulse_window_ms = pulse_window_ms
        self._next_temp_ms = 0
        self._temp_centi_c = None
        self._temp_ok_ms = -1
        self._temp_reason = REASON_NO_READING
        self._resp_next_ms = RESP_STEP_MS
        self._resp_x10 = None
        self._resp_quality = 0
        self._resp_reason = self.resp.reason
        self._sdnn = self._rmssd = None
        self._hrv_reason = self.hrv.reason
        self._ppg_overflows_seen = 0
        self._ppg_seen_ms = 0
        self._overflow_until = -1
        #: Counters of bad input since boot (published in ``faults``).
        self.faults = {"ppg_fifo_overflow": 0, "ppg_saturated": 0, "ppg_sensor_error": 0,
                       "temp_sensor_error": 0, "temp_out_of_range": 0}
        if nibp is not None:
            for key in ("nibp_checksum_errors", "nibp_bad_lines", "nibp_failed"):
                self.faults[key] = 0

    # -- per block -----------------------------------------------------------
    def ecg(self, buf, n):
        """The next ``n`` raw ECG samples (before their beats are reported)."""
        self.edr.push(buf, n)

    def beat(self, at):
        self.edr.beat(at)
        self.hrv.beat(at)

    def now_ms(self):
        return (self.edr.samples * 1000) // self.ecg_fs_hz

    def poll(self):
        """Read what the PPG has (bounded) and the thermometer when due."""
        ppg = self.ppg
        if ppg is not None:
            for _ in range(_PPG_MAX_READS):
                n = ppg.read_ppg(self._red, self._ir, _PPG_BLOCK)
                if n <= 0:
                    break
                self.pox.process(self._red, self._ir, n)
                self._ppg_seen_ms = self.now_ms()
            ovf = getattr(ppg, "overflows", 0)
            if ovf != self._ppg_overflows_seen:
                self.faults["ppg_fifo_overflow"] += ovf - self._ppg_overflows_seen
                self._ppg_overflows_seen = ovf
                self._overflow_until = self.pox.samples + (
                    self.pox.fs_hz * 8)  # the SpO2 window after the gap
            self.faults["ppg_saturated"] = self.pox.saturated_samples
            self.faults["ppg_sensor_error"] = getattr(ppg, "errors", 0)
        if self.nibp is not None:
            self._poll_nibp()
        if self.thermometer is not None:
            now = self.now_ms()
            if now >= self._next_temp_ms:
                self._next_temp_ms = now + self.temp_period_ms
                self._read_temperature(now)

    def _poll_nibp(self):
        nibp = self.nibp
        nibp.poll()
        p = nibp.parser
        if p.readings != self._nibp_readings:
            self._nibp_readings = p.readings
            self._nibp_at_ms = self.now_ms()
        f = self.faults
        f["nibp_checksum_errors"] = p.checksum_errors
        f["nibp_bad_lines"] = p.bad_lines + p.overlong
        f["nibp_failed"] = p.failed

    def _read_temperature(self, now):
        try:
            mc = self.thermometer.read_temperature_mc()
        except OSError:
            self.faults["temp_sensor_error"] += 1
            self._temp_reason = REASON_SENSOR_ERROR
            return
        if mc == TMP117_NO_RESULT_MC:  # reset value: no conversion finished yet
            self._temp_reason = REASON_NO_READING
            return
        centi = (mc + 5) // 10 if mc >= 0 else -((-mc + 5) // 10)
        if not TEMP_MIN_CENTI_C <= centi <= TEMP_MAX_CENTI_C:
            self.faults["temp_out_of_range"] += 1
            self._temp_reason = REASON_OUT_OF_RANGE
            self._temp_centi_c = None
            return
        self._temp_centi_c = centi
        self._temp_ok_ms = now
        self._temp_reason = None

    # -- per report ----------------------------------------------------------
    def report(self, msg, hr_bpm):
        """Add this window's vitals to ``msg`` (a ``protocol.vitals`` dict)."""
        now = self.now_ms()
        withheld = {}
        if now >= self._resp_next_ms:  # the slow ones, every RESP_STEP_MS
            self._resp_next_ms = now + RESP_STEP_MS
            self._resp_x10 = self.resp.estimate(now)
            self._resp_quality = self.resp.quality
            self._resp_reason = self.resp.reason
            self._sdnn, self._rmssd = self.hrv.values()
            self._hrv_reason = self.hrv.reason
        rr = None if self._resp_x10 is None else (self._resp_x10 + 5) // 10
        protocol.add_vital(msg, withheld, protocol.F_RESP, rr, self._resp_quality,
                           self._resp_reason)
        pox = self.pox
        if pox is not None:
            pox.assess(self.pulse_window_ms)
            pr = pox.pulse_rate_bpm(self.pulse_window_ms)
            pr_reason = pox.pulse_reason
            spo2 = pox.spo2()
            reason = pox.spo2_reason
            if now - self._ppg_seen_ms > PPG_STALE_MS:  # the sensor stopped delivering
                pr = spo2 = None
                pr_reason = reason = REASON_STALE
            protocol.add_vital(msg, withheld, protocol.F_PULSE, pr, 100 if pr is not None else 0,
                               pr_reason)
            if spo2 is not None and pox.samples < self._overflow_until:
                spo2 = None
                reason = REASON_FIFO_OVERFLOW
            pct = None if spo2 is None else (spo2 + 5) // 10
            protocol.add_vital(msg, withheld, protocol.F_SPO2, pct,
                               pox.spo2_quality if pct is not None else 0, reason)
            msg[protocol.F_PERFUSION] = pox.perfusion_x10000
            if hr_bpm is not None and pr is not None:
                msg[protocol.F_HR_PULSE_DELTA] = hr_bpm - pr
        if self.thermometer is not None:
            t = self._temp_centi_c
            reason = self._temp_reason
            if reason is None and now - self._temp_ok_ms > TEMP_STALE_PERIODS * self.temp_period_ms:
                t = None
                reason = REASON_STALE
            if reason is not None:
                t = None
            protocol.add_vital(msg, withheld, protocol.F_TEMP, t, 100 if t is not None else 0,
                               reason)
        if self.nibp is not None:
            p = self.nibp.parser
            msg[protocol.F_NIBP_SYS] = p.systolic_mmhg
            msg[protocol.F_NIBP_DIA] = p.diastolic_mmhg
            msg[protocol.F_NIBP_MAP] = p.map_mmhg
            if self._nibp_at_ms >= 0:
                msg[protocol.F_NIBP_AGE] = (now - self._nibp_at_ms) // 1000
            else:
                withheld[protocol.F_NIBP_SYS] = REASON_NO_READING
            if p.last_failed:
                msg[protocol.F_NIBP_LAST_FAILURE] = p.last_failure.lower()
        sdnn = self._sdnn
        protocol.add_vital(msg, withheld, protocol.F_HRV_SDNN, sdnn,
                           100 if sdnn is not None else 0, self._hrv_reason)
        msg[protocol.F_HRV_RMSSD] = self._rmssd
        if withheld:
            msg[protocol.F_WITHHELD] = withheld
        msg[protocol.F_FAULTS] = self.faults


#: The ``vitals`` object of a device config: one place for every sensor's rate.
CONFIG_KEYS = ("ppg", "temperature", "nibp", "pulse_window_ms")
_PPG_KEYS = ("sample_rate_sps", "led_current_ma", "adc_range_na", "address")
_TEMP_KEYS = ("period_ms", "averages", "address")
_NIBP_KEYS = ("cycle_s",)


def _check(obj, where, keys):
    if not isinstance(obj, dict):
        raise ValueError("%s must be an object, got %r" % (where, obj))
    for key in obj:
        if key not in keys:
            raise ValueError("%s: unknown key %r (known: %s)" % (where, key, ", ".join(keys)))
    return obj


def _int(obj, key, where, default, low, high):
    v = obj.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
        raise ValueError("%s.%s must be an int in %d..%d, got %r" % (where, key, low, high, v))
    return v


def vital_signs_from_config(spec, ecg_fs_hz, i2c=None, uart=None):
    """A :class:`VitalSigns` from a device config's ``vitals`` object::

        {"ppg": {"sample_rate_sps": 100, "led_current_ma": [10, 10], "adc_range_na": 4096},
         "temperature": {"period_ms": 1000, "averages": 8},
         "nibp": {"cycle_s": 300}, "pulse_window_ms": 8000}

    Each sensor has its own rate here (the ECG's is the device's
    ``sample_rate_hz``); a sensor left out is absent (its vitals are not
    published).  ``i2c`` is the bus of the MAX30102 and the TMP117, ``uart``
    the NIBP module's.  Bad keys or values: ValueError naming them; a part
    that does not answer: the driver's OSError."""
    _check(spec, "vitals", CONFIG_KEYS)
    ppg = thermo = nibp = None
    temp_period_ms = 1000
    if "ppg" in spec or "temperature" in spec:
        if i2c is None:
            raise ValueError("vitals: the PPG and the thermometer need an I2C bus")
    if "ppg" in spec:
        from firmware.hw.drivers.max30102 import DEFAULT_ADDRESS, MAX30102
        from firmware.hw.sensors import Max30102DualSource

        p = _check(spec["ppg"], "vitals.ppg", _PPG_KEYS)
        leds = p.get("led_current_ma", [10, 10])
        if not isinstance(leds, (list, tuple)) or len(leds) != 2:
            raise ValueError("vitals.ppg.led_current_ma must be [red, ir] in mA, got %r"
                             % (leds,))
        ox = MAX30102(i2c, address=_int(p, "address", "vitals.ppg", DEFAULT_ADDRESS, 8, 119),
                      sample_rate_sps=_int(p, "sample_rate_sps", "vitals.ppg", 100, 50, 3200),
                      adc_range_na=_int(p, "adc_range_na", "vitals.ppg", 4096, 2048, 16384),
                      led_current_ma=(leds[0], leds[1]))
        ppg = Max30102DualSource(ox)
    if "temperature" in spec:
        from firmware.hw.drivers.tmp117 import DEFAULT_ADDRESS as TMP_ADDRESS
        from firmware.hw.drivers.tmp117 import TMP117

        t = _check(spec["temperature"], "vitals.temperature", _TEMP_KEYS)
        temp_period_ms = _int(t, "period_ms", "vitals.temperature", 1000, 100, 600000)
        thermo = TMP117(i2c, address=_int(t, "address", "vitals.temperature", TMP_ADDRESS, 8,
                                          119),
                        averages=_int(t, "averages", "vitals.temperature", 8, 1, 64))
    if "nibp" in spec:
        from firmware.hw.drivers.nibp import NibpModule

        n = _check(spec["nibp"], "vitals.nibp", _NIBP_KEYS)
        if uart is None:
            raise ValueError("vitals: the NIBP module needs a UART")
        nibp = NibpModule(uart)
        if "cycle_s" in n:
            nibp.cycle(_int(n, "cycle_s", "vitals.nibp", 0, 0, 86400))
    return VitalSigns(ecg_fs_hz, ppg=ppg, thermometer=thermo, temp_period_ms=temp_period_ms,
                      pulse_window_ms=_int(spec, "pulse_window_ms", "vitals", PULSE_WINDOW_MS,
                                           2000, 60000), nibp=nibp)
