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
   to 25 % jitter, seeded by the device id), subscribes to its ``cmd`` topic,
   sends queued messages (at most ``max_inflight`` unacknowledged), removes
   what the broker acknowledged, and answers each command that arrived
   (:mod:`firmware.net.commands`; the device's own commands below).

Commands (``medge fleet cmd``; each answered by one ``ack``):

- ``ping``: ``ok`` with the firmware and model versions, boot id, uptime (s),
  messages queued, the reporting period, and the device's resources and fault
  counts (free heap on MicroPython, free storage beside the state file,
  messages dropped by a full outbox, failed connects, unanswerable commands,
  refused models);
- ``set_config`` with ``args`` any of ``report_period_ms`` (from the next
  reporting window on) and ``patient_id`` (a new birth message says so, and
  reports both):
  checked as at start-up, all or nothing, and kept in the state so they hold
  after a restart (the config file's values are the defaults);
- ``ecg_strip`` with ``args`` ``seconds`` (1..10, default 10): the last
  seconds of raw ECG (``samples_b64``: base64 of little-endian int16 ADC
  counts; ``fs_hz``, ``mains_hz``, ``counts_per_mv``, ``end_ms`` the time of
  the sample after the last) and the beats in them (``[sample, class]``, from
  the strip's first sample; class ``?`` without a model), kept in rings made at
  init (no allocation per sample);
- ``reboot``: ``ok``, then :attr:`Device.restart_requested` is set and the
  main loop shuts down cleanly and restarts (``firmware/main.py``);
- ``model_begin``, ``model_chunk``, ``model_commit``, ``model_rollback``
  with an ``updater`` (:mod:`firmware.ml.update`: signed, self-tested A/B
  model updates); a new birth names the model in use after a switch.

A link may have ``subscribe(topic)`` and ``messages()`` (the ``(topic,
payload)`` pairs received since the last call); one without them gets no
commands.

A sample source is any object with ``read_samples(buf, max_count) -> int``
that writes up to ``max_count`` of the samples available now (raw ADC counts,
ints) into ``buf[0:max_count]`` and returns how many it wrote (0 when none
are ready): a HAL driver, a serial board, a WFDB replay, the simulator.

The same code runs on CPython and MicroPython; the MicroPython VM test in
tests/test_device_mpy.py checks that both publish the same bytes.
"""

import binascii
from array import array

from firmware.config import (  # noqa: F401  (DeviceConfig etc. re-exported)
    FW_VERSION,
    NO_MODEL,
    DeviceConfig,
    check_patient_id,
    check_report_period_ms,
)
from firmware.hw.compat import const, mem_free, storage_free_kb
from firmware.hw.state import SeqCounter
from firmware.ml.infer import AAMI_LABELS
from firmware.net import protocol
from firmware.net.backoff import Backoff
from firmware.net.commands import Commands
from firmware.net.journal import start_seq
from firmware.net.outbox import Outbox
from firmware.net.wire import encode
from firmware.params import ECG_ADC_MAX_COUNT, ECG_ADC_MIN_COUNT, ECG_COUNTS_PER_MV
from firmware.signal.beatpipe import BeatPipeline
from firmware.signal.qrs import QrsDetector
from firmware.signal.quality import SIGNAL_GOOD, SignalQuality
from firmware.vitals.heartrate import HeartRate

_READ_BLOCK = const(64)  # samples read from the source per read_samples call
#: Seconds of raw ECG kept for the ``ecg_strip`` command, and beats kept with them.
STRIP_MAX_S = const(10)
_STRIP_BEATS = const(48)
#: What ``set_config`` may change, and the state key that keeps it.
SETTABLE_KEYS = ("patient_id", "report_period_ms")
_OVERRIDES_KEY = "config"


def _folder(path):
    """The folder of a file path ("." for a bare name)."""
    cut = path.rfind("/")
    return path[:cut] if cut > 0 else ("/" if cut == 0 else ".")


class Device:
    """The device loop (module docstring).  ``model`` is an optional
    :class:`firmware.ml.infer.ModelSlot`: with one, every beat goes through the
    beat pipeline (filter chain, features) and the slot's classifier, and each
    ``vitals`` message counts the window's beats per AAMI class."""

    def __init__(self, config, source, link, clock, state, model=None, vitals=None,
                 rhythm=None, journal=None, updater=None):
        self.cfg = config
        self.source = source
        self.link = link
        self.clock = clock
        self.state = state
        #: Optional :class:`firmware.net.journal.Journal`: the outbox and the sequence
        #: number on flash (nothing lost or skipped across a power cut); without
        #: one, a RAM outbox and a block-reserving counter in ``state``.
        self.journal = journal
        if journal is None:
            self.seq = SeqCounter(state)
        else:
            block = SeqCounter.BLOCK
            self.seq = SeqCounter(state, block=block, start=start_seq(
                journal.next_seq, state.load("seq", 0), block))
        boots = state.load("boots", 0) + 1
        state.save("boots", boots)
        self.boot_id = boots
        fs = config.sample_rate_hz
        self.model = model
        #: Optional :class:`firmware.vitals.monitor.VitalSigns` (PPG, temperature,
        #: respiration, HRV): its vitals join every ``vitals`` message.
        self.vitals = vitals
        #: Optional :class:`firmware.rhythm.monitor.RhythmMonitor` (needs a
        #: model): each of its events is published as an ``event`` message,
        #: kept in the outbox ahead of routine messages.
        self.rhythm = rhythm
        self._last_peak = -1
        if rhythm is not None and model is None:
            raise ValueError("a rhythm monitor needs a beat model (the beat pipeline)")
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
        self.heart = HeartRate(fs, (config.hr_max_age_ms * fs) // 1000)
        self.outbox = Outbox(config.outbox_capacity, journal)
        self.backoff = Backoff(config.backoff_min_ms, config.backoff_max_ms, config.device_id)
        # Unit conversions, once.
        self._report_samples = (config.report_period_ms * fs) // 1000
        self._buf = array("h", bytes(2 * _READ_BLOCK))
        self._strip = array("h", bytes(2 * STRIP_MAX_S * fs))  # raw counts, a ring
        self._strip_pos = 0
        self._strip_fill = 0
        self._strip_r = [-1] * _STRIP_BEATS  # the last beats' R samples and classes
        self._strip_cls = [-1] * _STRIP_BEATS
        self._strip_next = 0
        self.samples = 0  # samples consumed since boot
        self._window_fill = 0
        self._window_beats0 = 0
        self._was_connected = False
        self.reports = 0
        #: The device's topics (public: the simulator's instrumentation reads them).
        self.topic_status = protocol.topic(config.device_id, protocol.MSG_STATUS)
        self.topic_vitals = protocol.topic(config.device_id, protocol.MSG_VITALS)
        self.topic_event = protocol.topic(config.device_id, protocol.MSG_EVENT)
        self.topic_cmd = protocol.topic(config.device_id, protocol.MSG_CMD)
        self.topic_ack = protocol.topic(config.device_id, protocol.MSG_ACK)
        #: Set by the ``reboot`` command: the main loop stops cleanly and restarts.
        self.restart_requested = False
        self._pending_period_ms = None
        self.commands = Commands(config.device_id, state)
        self.commands.register("ping", self._cmd_ping)
        self.commands.register("set_config", self._cmd_set_config)
        self.commands.register("reboot", self._cmd_reboot)
        self.commands.register("ecg_strip", self._cmd_ecg_strip)
        #: Optional :class:`firmware.ml.update.ModelUpdater` (signed model updates).
        self.updater = updater
        self._announce = False  # a command changed what the birth says: publish a new one
        if updater is not None:
            self.commands.register("model_begin", updater.begin)
            self.commands.register("model_chunk", updater.chunk)
            self.commands.register("model_commit", self._switching(updater.commit))
            self.commands.register("model_rollback", self._switching(updater.rollback))
        saved = state.load(_OVERRIDES_KEY, None)
        if isinstance(saved, dict):
            try:
                self._apply_config(self._checked_config(saved))
            except ValueError:
                state.save(_OVERRIDES_KEY, {})  # unusable: the config file's values hold

    @property
    def beats(self):
        """Beats detected since boot."""
        return self.heart.beats

    @property
    def connect_failures(self):
        """Failed connect attempts since boot."""
        return self.backoff.failures

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
            self._keep(buf, n)
            if self.vitals is not None:
                self.vitals.ecg(buf, n)
            if self.pipeline is None:
                for beat in self.detector.process(buf if n == _READ_BLOCK else buf[:n]):
                    self._beat(beat)
                    self._strip_beat(beat, -1)
            else:
                self._classify(self.pipeline.process(buf, n))
            self.samples += n
            if self.rhythm is not None:
                self._rhythm_tick()
            total += n
            self._window_fill += n
            if self._window_fill == self._report_samples:
                if self.vitals is not None:
                    self.vitals.poll()
                self._report()
        if self.vitals is not None:
            self.vitals.poll()
        self.service()
        return total

    def _classify(self, ready):
        pipe = self.pipeline
        for beat in pipe.new_peaks:
            self._beat(beat)
        clf = self.model.classifier
        feats = pipe.features
        rhythm = self.rhythm
        for _ in range(ready):
            r = pipe.next_beat()
            cls = -1
            if clf is not None:
                cls = clf.classify(feats.beat, feats.rr)
                self._classes[cls] += 1
                self.classified += 1
            if rhythm is not None:
                rhythm.beat(r, cls, feats.beat)
            self._strip_beat(r, cls)

    def _strip_beat(self, r, cls):
        k = self._strip_next
        self._strip_r[k] = r
        self._strip_cls[k] = cls
        self._strip_next = k + 1 if k + 1 < _STRIP_BEATS else 0

    def _keep(self, buf, n):
        """The newest samples into the strip ring (copied: no allocation)."""
        ring = self._strip
        size = len(ring)
        pos = self._strip_pos
        for i in range(n):
            ring[pos] = buf[i]
            pos += 1
            if pos == size:
                pos = 0
        self._strip_pos = pos
        fill = self._strip_fill + n
        self._strip_fill = fill if fill < size else size

    def _rhythm_tick(self):
        """The rhythm monitor's tick after each block; its events go out as
        ``event`` messages (times: epoch ms, from the sample counts)."""
        peaks = self.pipeline.new_peaks
        if peaks:
            self._last_peak = peaks[-1]
        rhythm = self.rhythm
        rhythm.tick(self.samples, self.quality.flag_code, self._last_peak)
        if not rhythm.events:
            return
        fs = self.cfg.sample_rate_hz
        now = self.clock.epoch_ms()
        for ev in rhythm.take_events():
            start = now - ((self.samples - ev.start) * 1000) // fs
            end = None if ev.end < 0 else now - ((self.samples - ev.end) * 1000) // fs
            seq = self.seq.next()
            msg = protocol.event(self.cfg.device_id, seq, now, ev.kind, ev.phase,
                                 start, end, ev.evidence)
            self.outbox.push(self.topic_event, self._encode(msg), False, True, seq)

    def _beat(self, at):
        """Record one detected R peak (sample index since boot)."""
        self.heart.beat(at)
        if self.vitals is not None:
            self.vitals.beat(at)

    def heart_rate_bpm(self):
        """Mean heart rate over the recent RR intervals, an int bpm, or None
        (:class:`firmware.vitals.heartrate.HeartRate`; withheld unless the
        signal is good)."""
        return self.heart.bpm(self.samples, self.quality.flag == SIGNAL_GOOD)

    def _report(self):
        hr = self.heart_rate_bpm()
        quality = protocol.QUALITY_GOOD if hr is not None else protocol.QUALITY_UNRELIABLE
        seq = self.seq.next()
        msg = protocol.vitals(
            self.cfg.device_id,
            seq,
            self.clock.epoch_ms(),
            self.cfg.report_period_ms,
            hr,
            self.beats - self._window_beats0,
            quality,
            self.quality.flag,
            self._class_counts(),
        )
        if self.vitals is not None:
            self.vitals.report(msg, hr)
        self._window_beats0 = self.beats
        self._window_fill = 0
        self.reports += 1
        self.outbox.push(self.topic_vitals, self._encode(msg), False, False, seq)
        if self._pending_period_ms is not None:  # set_config: from the next window on
            self.cfg.report_period_ms = self._pending_period_ms
            self._report_samples = (self._pending_period_ms * self.cfg.sample_rate_hz) // 1000
            self._pending_period_ms = None

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
            "report_period_ms": self._pending_period_ms or self.cfg.report_period_ms,
            "boot_id": self.boot_id,
        }
        seq = self.seq.next()
        msg = protocol.birth(self.cfg.device_id, seq, self.clock.epoch_ms(), info)
        self.outbox.push(self.topic_status, self._encode(msg), True, False, seq)

    def _will(self):
        msg = protocol.offline(
            self.cfg.device_id, self.clock.epoch_ms(), protocol.OFFLINE_LOST, boot_id=self.boot_id
        )
        return self._encode(msg)

    def _encode(self, msg):
        """The wire bytes of ``msg``, with the provisioned incarnation when there is one
        (ingest keys every message on (device, incarnation, seq))."""
        if self.cfg.incarnation is not None:
            msg["incarnation"] = self.cfg.incarnation
        return encode(msg)

    def service(self):
        """Reconnect when due, collect acknowledgements, send what is waiting."""
        link = self.link
        if not link.connected():
            if self._was_connected:
                self._was_connected = False
                self.outbox.requeue_inflight()
            now = self.clock.ticks_ms()
            if not self.backoff.due(now):
                return
            try:
                link.connect(self.topic_status, self._will())
            except OSError:
                self.backoff.failed(now)
                return
            subscribe = getattr(link, "subscribe", None)
            if subscribe is not None:
                try:
                    subscribe(self.topic_cmd)
                except OSError:
                    self.backoff.failed(now)
                    return
            self.backoff.succeeded()
            self._was_connected = True
            self._birth()
        try:
            for token in link.poll():
                self.outbox.ack(token)
            received = getattr(link, "messages", None)
            if received is not None:
                for topic, payload in received():
                    if topic == self.topic_cmd:
                        self._command(payload)
            if link.connected():
                self.outbox.send_some(link.publish, self.cfg.max_inflight)
        except OSError:
            pass  # picked up as "not connected" on the next call

    # -- commands -------------------------------------------------------------
    def _command(self, payload):
        """Act on one ``cmd`` payload and queue its ``ack`` (ahead of routine messages)."""
        now = self.clock.epoch_ms()
        answer = self.commands.handle(payload, now)
        if answer is None:
            return
        cmd_id, result, reason, data = answer
        seq = self.seq.next()
        msg = protocol.ack(self.cfg.device_id, seq, now, cmd_id, result, reason, data)
        self.outbox.push(self.topic_ack, self._encode(msg), False, True, seq)
        self.commands.answered_id(cmd_id)
        if self._announce:
            self._announce = False
            if self.link.connected():
                self._birth()  # the retained status: the settings and model now in use

    def _switching(self, step):
        """``step`` (a model switch), then a new birth after its ack."""
        def run(args, cmd):
            data = step(args, cmd)
            self._announce = True
            return data
        return run

    def _cmd_ping(self, args, cmd):
        if args:
            raise ValueError("ping takes no args")
        version = self.model.version if self.model is not None else None
        return {
            "fw_version": self.cfg.fw_version,
            "model_version": version or self.cfg.model_version,
            "boot_id": self.boot_id,
            "uptime_s": self.samples // self.cfg.sample_rate_hz,
            "queued": len(self.outbox),
            "report_period_ms": self.cfg.report_period_ms,
            # resources: what a clinical engineer checks before blaming the network
            "mem_free": mem_free(),
            "storage_free_kb": storage_free_kb(_folder(getattr(self.state, "path", "."))),
            "dropped": self.outbox.dropped,
            "connect_failures": self.backoff.failures,
            "cmd_invalid": self.commands.invalid,
            "model_refused": self.model.rejected if self.model is not None else 0,
        }

    def _checked_config(self, args):
        """``args`` checked as :class:`DeviceConfig` checks them: ValueError naming
        the first bad key, so nothing is applied unless everything is good."""
        for key in args:
            if key not in SETTABLE_KEYS:
                raise ValueError("%r cannot be set (settable: %s)"
                                 % (key, ", ".join(SETTABLE_KEYS)))
        if "report_period_ms" in args:
            check_report_period_ms(args["report_period_ms"], self.cfg.sample_rate_hz)
        if "patient_id" in args:
            check_patient_id(args["patient_id"])
        return args

    def _apply_config(self, args):
        if "report_period_ms" in args:
            if self._window_fill:  # a window is open: from the next one on
                self._pending_period_ms = args["report_period_ms"]
            else:
                self.cfg.report_period_ms = args["report_period_ms"]
                self._report_samples = (args["report_period_ms"]
                                        * self.cfg.sample_rate_hz) // 1000
        if "patient_id" in args:
            self.cfg.patient_id = args["patient_id"]

    def _cmd_set_config(self, args, cmd):
        if not args:
            raise ValueError("nothing to set (settable: %s)" % ", ".join(SETTABLE_KEYS))
        self._apply_config(self._checked_config(args))
        saved = self.state.load(_OVERRIDES_KEY, None)
        kept = dict(saved) if isinstance(saved, dict) else {}
        for key in args:
            kept[key] = args[key]
        self.state.save(_OVERRIDES_KEY, kept)
        self._announce = True  # a new birth after the ack says what the device runs now
        return kept

    def _cmd_ecg_strip(self, args, cmd):
        for key in args:
            if key != "seconds":
                raise ValueError("%r is not an argument of ecg_strip (seconds)" % key)
        seconds = args.get("seconds", STRIP_MAX_S)
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not (
                1 <= seconds <= STRIP_MAX_S):
            raise ValueError("seconds must be an int in 1..%d" % STRIP_MAX_S)
        fs = self.cfg.sample_rate_hz
        n = seconds * fs
        if n > self._strip_fill:
            n = self._strip_fill
        if not n:
            raise ValueError("no ECG samples yet")
        ring = self._strip
        size = len(ring)
        out = array("h", bytes(2 * n))
        at = (self._strip_pos - n) % size
        for i in range(n):
            out[i] = ring[at]
            at = at + 1 if at + 1 < size else 0
        first = self.samples - n
        beats = []
        for k in range(_STRIP_BEATS):
            j = (self._strip_next + k) % _STRIP_BEATS  # oldest first
            r = self._strip_r[j]
            if first <= r < self.samples:
                c = self._strip_cls[j]
                beats.append([r - first, AAMI_LABELS[c] if c >= 0 else "?"])
        text = binascii.b2a_base64(bytes(out)).decode().strip()
        return {"fs_hz": fs, "mains_hz": self.cfg.mains_hz,
                "counts_per_mv": ECG_COUNTS_PER_MV, "end_ms": self.clock.epoch_ms(),
                "seconds": n // fs, "samples_b64": text, "beats": beats,
                "signal": self.quality.flag}

    def _cmd_reboot(self, args, cmd):
        if args:
            raise ValueError("reboot takes no args")
        self.restart_requested = True
        return None

    def stop(self):
        """Clean shutdown: announce offline, save the exact sequence number.

        Call :meth:`service` afterwards until :meth:`drained` (bounded by the
        caller), then ``link.disconnect()``.
        """
        seq = self.seq.next()
        msg = protocol.offline(
            self.cfg.device_id,
            self.clock.epoch_ms(),
            protocol.OFFLINE_SHUTDOWN,
            seq=seq,
            boot_id=self.boot_id,
        )
        self.outbox.push(self.topic_status, self._encode(msg), True, False, seq)
        self.seq.close()
        if self.journal is not None:
            self.journal.compact()

    def drained(self):
        return len(self.outbox) == 0
