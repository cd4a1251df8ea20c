"""The device loop: samples in, vital signs out over MQTT.

One :class:`Device` owns a sample source, a heart-rate detector, a sequence
counter, an outbox and an MQTT link adapter.  :meth:`Device.step` is called
repeatedly by the platform's main loop (``firmware/main.py`` on a board or a
Pi, ``sim/fleet.py`` in the simulator); each call

1. drains the samples the source has ready into a buffer made once at init
   and runs the signal-quality check and the streaming QRS detector
   (:mod:`firmware.signal.quality`, :mod:`firmware.signal.qrs`) over them (no allocation per
   sample);
2. closes every reporting window that is complete and queues a ``vitals``
   message in the outbox: heart rate from the mean of the last RR intervals,
   beats in the window, and the signal-quality flag;
3. services the link: reconnects with capped exponential backoff (plus up
   to 25 % jitter, seeded by the device id), sends
   queued messages (at most ``max_inflight`` unacknowledged), and removes
   what the broker acknowledged.

A sample source is any object with ``read_samples(buf, max_count) -> int``
that writes up to ``max_count`` of the samples available now (raw ADC counts,
ints) into ``buf[0:max_count]`` and returns how many it wrote (0 when none
are ready): a HAL driver, a serial board, a WFDB replay, the simulator.

The same code runs on CPython and MicroPython; the MicroPython VM test in
tests/test_device_mpy.py checks that both publish the same bytes.
"""

from array import array

from firmware.hw.compat import const, ticks_add, ticks_diff
from firmware.hw.state import SeqCounter
from firmware.ml.infer import AAMI_LABELS
from firmware.net import protocol
from firmware.net.outbox import Outbox
from firmware.net.wire import encode
from firmware.signal.beatpipe import BeatPipeline
from firmware.signal.qrs import QrsDetector
from firmware.signal.quality import QUALITY_GOOD, SignalQuality

FW_VERSION = "0.1.0"
NO_MODEL = "none"

_READ_BLOCK = const(64)  # samples read from the source per read_samples call
_RR_HISTORY = const(8)  # RR intervals averaged for the heart rate

#: The ECG front end every device and the simulator share: signed 16-bit ADC
#: counts at 200 counts/mV (5 uV per count, as MIT-BIH), which is the scaling
#: ``firmware.signal.qrs`` expects.
ECG_COUNTS_PER_MV = const(200)
ECG_ADC_MIN_COUNT = const(-32768)
ECG_ADC_MAX_COUNT = const(32767)
_HR_MIN_BPM = const(20)
_HR_MAX_BPM = const(300)


class DeviceConfig:
    """Everything a device is told at start-up; units in every name.

    There is deliberately no default sample rate: a wrong one must fail
    loudly rather than filter silently wrong.
    """

    def __init__(
        self,
        device_id,
        sample_rate_hz,
        patient_id="",
        report_period_ms=1000,
        hr_max_age_ms=3000,
        outbox_capacity=512,
        max_inflight=16,
        backoff_min_ms=250,
        backoff_max_ms=8000,
        fw_version=FW_VERSION,
        model_version=NO_MODEL,
        mains_hz=None,
    ):
        protocol.check_device_id(device_id)
        if not isinstance(sample_rate_hz, int) or not 50 <= sample_rate_hz <= 2000:
            raise ValueError(
                "sample_rate_hz must be an int in 50..2000, got %r" % (sample_rate_hz,)
            )
        for name, value, low in (
            ("report_period_ms", report_period_ms, 100),
            ("hr_max_age_ms", hr_max_age_ms, 100),
            ("outbox_capacity", outbox_capacity, 1),
            ("max_inflight", max_inflight, 1),
            ("backoff_min_ms", backoff_min_ms, 1),
            ("backoff_max_ms", backoff_max_ms, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError("%s must be an int >= %d, got %r" % (name, low, value))
        if backoff_max_ms < backoff_min_ms:
            raise ValueError("backoff_max_ms must be >= backoff_min_ms")
        if (report_period_ms * sample_rate_hz) % 1000:
            raise ValueError("report_period_ms must span a whole number of samples")
        if not isinstance(patient_id, str) or len(patient_id) > 64:
            raise ValueError("patient_id must be a str of at most 64 characters")
        if mains_hz is not None and mains_hz not in (50, 60):
            raise ValueError("mains_hz must be 50 or 60, got %r" % (mains_hz,))
        self.mains_hz = mains_hz
        self.device_id = device_id
        self.sample_rate_hz = sample_rate_hz
        self.patient_id = patient_id
        self.report_period_ms = report_period_ms
        self.hr_max_age_ms = hr_max_age_ms
        self.outbox_capacity = outbox_capacity
        self.max_inflight = max_inflight
        self.backoff_min_ms = backoff_min_ms
        self.backoff_max_ms = backoff_max_ms
        self.fw_version = fw_version
        self.model_version = model_version


class Device:
    """The device loop (module docstring).  ``model`` is an optional
    :class:`firmware.ml.infer.ModelSlot`: with one, every beat goes through the
    beat pipeline (filter chain, features) and the slot's classifier, and each
    ``vitals`` message counts the window's beats per AAMI class."""

    def __init__(self, config, source, link, clock, state, model=None):
        self.cfg = config
        self.source = source
        self.link = link
        self.clock = clock
        self.state = state
        self.seq = SeqCounter(state)
        boots = state.load("boots", 0) + 1
        state.save("boots", boots)
        self.boot_id = boots
        fs = config.sample_rate_hz
        self.model = model
        if model is not None:
            if config.mains_hz is None:
                raise ValueError("mains_hz is required with a beat model (the filter chain)")
            self.pipeline = BeatPipeline(fs, config.mains_hz, 0)
            self.detector = self.pipeline.detector
        else:
            self.pipeline = None
            self.detector = QrsDetector(fs)
        self._classes = [0] * len(AAMI_LABELS)
        self.classified = 0
        self.quality = SignalQuality(fs, ECG_ADC_MIN_COUNT, ECG_ADC_MAX_COUNT, ECG_COUNTS_PER_MV)
        self.outbox = Outbox(config.outbox_capacity)
        # Unit conversions, once.
        self._report_samples = (config.report_period_ms * fs) // 1000
        self._hr_max_age_samples = (config.hr_max_age_ms * fs) // 1000
        self._rr_min = (fs * 60) // _HR_MAX_BPM
        self._rr_max = (fs * 60) // _HR_MIN_BPM
        self._buf = array("h", bytes(2 * _READ_BLOCK))
        self._rr = [0] * _RR_HISTORY
        self._rr_count = 0
        self._rr_pos = 0
        self._last_beat = -1
        self.samples = 0  # samples consumed since boot
        self.beats = 0  # beats detected since boot
        self._window_fill = 0
        self._window_beats0 = 0
        self._backoff_ms = config.backoff_min_ms
        self._next_attempt = clock.ticks_ms()
        # Jitter source for reconnects, seeded by the device id so that a fleet
        # does not reconnect in lock-step after a broker restart (and a
        # simulation stays reproducible).
        seed = 0
        for ch in config.device_id:
            seed = (seed * 31 + ord(ch)) & 0x3FFFFFFF
        self._rand = seed
        self._was_connected = False
        self.connect_failures = 0
        self.reports = 0
        self._topic_status = protocol.topic(config.device_id, protocol.MSG_STATUS)
        self._topic_vitals = protocol.topic(config.device_id, protocol.MSG_VITALS)

    # -- sampling and reporting ---------------------------------------------
    def step(self):
        """Run one pass of the main loop; return the number of samples consumed."""
        total = 0
        buf = self._buf
        while True:
            room = self._report_samples - self._window_fill
            n = self.source.read_samples(buf, room if room < _READ_BLOCK else _READ_BLOCK)
            if not n:
                break
            self.quality.process(buf, n)
            if self.pipeline is None:
                for beat in self.detector.process(buf if n == _READ_BLOCK else buf[:n]):
                    self._beat(beat)
            else:
                self._classify(self.pipeline.process(buf, n))
            self.samples += n
            total += n
            self._window_fill += n
            if self._window_fill == self._report_samples:
                self._report()
        self.service()
        return total

    def _classify(self, ready):
        pipe = self.pipeline
        for beat in pipe.new_peaks:
            self._beat(beat)
        clf = self.model.classifier
        feats = pipe.features
        for _ in range(ready):
            pipe.next_beat()
            if clf is not None:
                self._classes[clf.classify(feats.beat, feats.rr)] += 1
                self.classified += 1

    def _beat(self, at):
        """Record one detected R peak (sample index since boot)."""
        if self._last_beat >= 0:
            rr = at - self._last_beat
            if self._rr_min <= rr <= self._rr_max:
                self._rr[self._rr_pos] = rr
                self._rr_pos = (self._rr_pos + 1) % _RR_HISTORY
                if self._rr_count < _RR_HISTORY:
                    self._rr_count += 1
            else:
                self._rr_count = 0  # a pause or a gap: start the average afresh
        self._last_beat = at
        self.beats += 1

    def heart_rate_bpm(self):
        """Mean heart rate over the recent RR intervals, an int bpm, or None.

        None (not reliable) with fewer than 2 RR intervals, when the last
        beat is older than ``hr_max_age_ms``, or when the signal is not good.
        """
        if (
            self._rr_count < 2
            or self.samples - self._last_beat > self._hr_max_age_samples
            or self.quality.flag != QUALITY_GOOD
        ):
            return None
        total = 0
        for i in range(self._rr_count):
            total += self._rr[i]
        # bpm = 60 * fs / mean_rr = 60 * fs * count / total, rounded half up.
        num = 60 * self.cfg.sample_rate_hz * self._rr_count
        return (2 * num + total) // (2 * total)

    def _report(self):
        hr = self.heart_rate_bpm()
        quality = protocol.QUALITY_GOOD if hr is not None else protocol.QUALITY_UNRELIABLE
        msg = protocol.vitals(
            self.cfg.device_id,
            self.seq.next(),
            self.clock.epoch_ms(),
            self.cfg.report_period_ms,
            hr,
            self.beats - self._window_beats0,
            quality,
            self.quality.flag,
            self._class_counts(),
        )
        self._window_beats0 = self.beats
        self._window_fill = 0
        self.reports += 1
        self.outbox.push(self._topic_vitals, encode(msg), False)

    def _class_counts(self):
        """The window's beats per class (and reset), or None without a model."""
        if self.model is None or self.model.classifier is None:
            return None
        out = {}
        for i in range(len(AAMI_LABELS)):
            out[AAMI_LABELS[i]] = self._classes[i]
            self._classes[i] = 0
        return out

    # -- MQTT ---------------------------------------------------------------
    def _birth(self):
        version = self.model.version if self.model is not None else None
        info = {
            "fw_version": self.cfg.fw_version,
            "model_version": version or self.cfg.model_version,
            "patient_id": self.cfg.patient_id,
            "sample_rate_hz": self.cfg.sample_rate_hz,
            "boot_id": self.boot_id,
        }
        msg = protocol.birth(self.cfg.device_id, self.seq.next(), self.clock.epoch_ms(), info)
        self.outbox.push(self._topic_status, encode(msg), True)

    def _will(self):
        msg = protocol.offline(
            self.cfg.device_id, self.clock.epoch_ms(), protocol.OFFLINE_LOST, boot_id=self.boot_id
        )
        return encode(msg)

    def service(self):
        """Reconnect when due, collect acknowledgements, send what is waiting."""
        link = self.link
        if not link.connected():
            if self._was_connected:
                self._was_connected = False
                self.outbox.requeue_inflight()
            now = self.clock.ticks_ms()
            if ticks_diff(now, self._next_attempt) < 0:
                return
            try:
                link.connect(self._topic_status, self._will())
            except OSError:
                self.connect_failures += 1
                self._rand = (self._rand * 1103515245 + 12345) & 0x3FFFFFFF
                jitter = self._rand % (self._backoff_ms // 4 + 1)  # up to +25 %
                self._next_attempt = ticks_add(now, self._backoff_ms + jitter)
                self._backoff_ms = min(2 * self._backoff_ms, self.cfg.backoff_max_ms)
                return
            self._backoff_ms = self.cfg.backoff_min_ms
            self._was_connected = True
            self._birth()
        try:
            for token in link.poll():
                self.outbox.ack(token)
            if link.connected():
                self.outbox.send_some(link.publish, self.cfg.max_inflight)
        except OSError:
            pass  # picked up as "not connected" on the next call

    def stop(self):
        """Clean shutdown: announce offline, save the exact sequence number.

        Call :meth:`service` afterwards until :meth:`drained` (bounded by the
        caller), then ``link.disconnect()``.
        """
        msg = protocol.offline(
            self.cfg.device_id,
            self.clock.epoch_ms(),
            protocol.OFFLINE_SHUTDOWN,
            seq=self.seq.next(),
            boot_id=self.boot_id,
        )
        self.outbox.push(self._topic_status, encode(msg), True)
        self.seq.close()

    def drained(self):
        return len(self.outbox) == 0
