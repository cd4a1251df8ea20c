"""What a device is told at start-up: :class:`DeviceConfig`, validated once.

Units are in every name and there is deliberately no default sample rate: a
wrong one must fail loudly (at config time, with the supported rates listed:
the same rule as the filters, :func:`firmware.params.check_sample_rate_hz`),
rather than filter silently wrong or fail later inside the detector.
"""

from firmware import params
from firmware.net import protocol

FW_VERSION = "0.1.0"
#: Longest reconnect delay: 1.25 x this stays a valid ticks_diff span (firmware.net.backoff).
BACKOFF_MAX_LIMIT_MS = 1 << 28
NO_MODEL = "none"


#: Longest reporting window a command may set (``set_config``), ms.
REPORT_PERIOD_MAX_MS = 3600000


def check_report_period_ms(value, sample_rate_hz):
    """``value`` if it is a whole number of samples (>= 100 ms); ValueError otherwise."""
    if not isinstance(value, int) or isinstance(value, bool) or not (
            100 <= value <= REPORT_PERIOD_MAX_MS):
        raise ValueError("report_period_ms must be an int in 100..%d, got %r"
                         % (REPORT_PERIOD_MAX_MS, value))
    if (value * sample_rate_hz) % 1000:
        raise ValueError("report_period_ms must span a whole number of samples")
    return value


def check_patient_id(value):
    """``value`` if it is a (pseudonymous) patient id: a str of at most 64 characters."""
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("patient_id must be a str of at most 64 characters")
    return value


class DeviceConfig:
    """Everything a device is told at start-up; units in every name."""

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
        incarnation=None,
    ):
        protocol.check_device_id(device_id)
        sample_rate_hz = params.check_sample_rate_hz(sample_rate_hz)
        for name, value, low in (
            ("report_period_ms", report_period_ms, 100),
            ("hr_max_age_ms", hr_max_age_ms, 100),
            ("outbox_capacity", outbox_capacity, 1),
            ("max_inflight", max_inflight, 1),
            ("backoff_min_ms", backoff_min_ms, 1),
            ("backoff_max_ms", backoff_max_ms, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError("%s must be an int >= %d, got %r" % (name, low, value))
        if backoff_max_ms < backoff_min_ms:
            raise ValueError("backoff_max_ms must be >= backoff_min_ms")
        if backoff_max_ms > BACKOFF_MAX_LIMIT_MS:
            raise ValueError("backoff_max_ms must be <= %d (a tick span ticks_diff can measure)"
                             % BACKOFF_MAX_LIMIT_MS)
        check_report_period_ms(report_period_ms, sample_rate_hz)
        check_patient_id(patient_id)
        if mains_hz is not None:
            mains_hz = params.check_mains_hz(mains_hz)
        if incarnation is not None:
            protocol.check_incarnation(incarnation)
        #: The unit's incarnation from provisioning (``medge fleet add`` prints it; a
        #: replaced unit is a new one), sent in every message: None sends none.
        self.incarnation = incarnation
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
