"""Device entry point: build a Device from a JSON config file and run its loop.

On a Raspberry Pi (CPython, paho-mqtt)::

    python -m firmware.main device.json

On a MicroPython board (``firmware/`` copied to ``/lib``)::

    import firmware.main
    firmware.main.main("/device.json")

Config (JSON object; units in the names, no default sample rate)::

    {"device_id": "bed-12", "sample_rate_hz": 250, "patient_id": "p-0012",
     "broker_host": "192.0.2.10", "broker_port": 1883,
     "state_path": "medge_state.json",
     "source": {"kind": "file", "path": "ecg_250hz_int16le.bin"},
     "mains_hz": 50, "model": "beatnet"}

``model`` (optional) is a beat model path without extension: ``beatnet.tflite``
and ``beatnet.json`` (``models/`` in the repo).  It needs ``mains_hz`` (the
filter chain's notch).  A model that fails the device's checks
(:mod:`firmware.ml.infer`) is refused with the reason on stderr and the device
runs without beat classes rather than not at all.

Sources available before the sensor-driver issue: ``file``, a recording of
raw little-endian int16 samples replayed at the sample rate (the device then
shuts down cleanly at its end).  The MQTT link is chosen here, by platform:
umqtt on MicroPython, paho-mqtt on CPython; the algorithms never import one.
"""

import json
import sys
from array import array

from firmware.device import Device, DeviceConfig
from firmware.hw.compat import IS_MICROPYTHON, SystemClock, sleep_ms, ticks_diff, ticks_ms
from firmware.hw.sources import ArraySource
from firmware.hw.state import FileState

_CONFIG_KEYS = (
    "device_id",
    "sample_rate_hz",
    "patient_id",
    "broker_host",
    "broker_port",
    "state_path",
    "source",
    "report_period_ms",
    "loop_period_ms",
    "mains_hz",
    "model",
)


def load_config(path):
    with open(path) as f:
        cfg = json.loads(f.read())
    if not isinstance(cfg, dict):
        raise ValueError("%s: the config must be a JSON object" % path)
    for key in cfg:
        if key not in _CONFIG_KEYS:
            raise ValueError("%s: unknown config key %r" % (path, key))
    for key in ("device_id", "sample_rate_hz", "broker_host", "source"):
        if key not in cfg:
            raise ValueError("%s: missing config key %r" % (path, key))
    return cfg


def make_link(cfg):
    host = cfg["broker_host"]
    port = cfg.get("broker_port", 1883)
    if IS_MICROPYTHON:
        from firmware.net.links.umqtt import UmqttLink

        return UmqttLink(host, port, cfg["device_id"])
    from firmware.net.links.paho import PahoLink

    return PahoLink(host, port, cfg["device_id"])


def make_source(cfg, clock):
    src = cfg["source"]
    if not isinstance(src, dict) or src.get("kind") != "file" or "path" not in src:
        raise ValueError('source must be {"kind": "file", "path": ...}, got %r' % (src,))
    with open(src["path"], "rb") as f:
        data = f.read()
    if len(data) % 2:
        raise ValueError("%s: odd length, not int16 samples" % src["path"])
    samples = array("h", data)
    if sys.byteorder != "little":  # pragma: no cover - every supported port is little-endian
        raise ValueError("big-endian hosts are not supported")
    return ArraySource(samples, sample_rate_hz=cfg["sample_rate_hz"], clock=clock)


def build(cfg, clock=None, link=None):
    clock = clock or SystemClock()
    config = DeviceConfig(
        cfg["device_id"],
        cfg["sample_rate_hz"],
        patient_id=cfg.get("patient_id", ""),
        report_period_ms=cfg.get("report_period_ms", 1000),
        mains_hz=cfg.get("mains_hz"),
    )
    state = FileState(cfg.get("state_path", "medge_state.json"))
    slot = None
    if cfg.get("model"):
        from firmware.ml.infer import ModelSlot

        slot = ModelSlot()
        base = cfg["model"]
        if not slot.install_files(base + ".tflite", base + ".json"):
            print("medge: beat model refused: %s" % slot.last_error)
    return Device(config, make_source(cfg, clock), link or make_link(cfg), clock, state,
                  model=slot)


def run(device, loop_period_ms=20, drain_timeout_ms=10000):
    """Run until the source is exhausted, then shut down cleanly."""
    source = device.source
    while not source.exhausted():
        device.step()
        sleep_ms(loop_period_ms)
    device.step()
    device.stop()
    start = ticks_ms()
    while not device.drained() and ticks_diff(ticks_ms(), start) < drain_timeout_ms:
        device.service()
        sleep_ms(loop_period_ms)
    device.link.disconnect()
    return device.drained()


def main(path):
    cfg = load_config(path)
    device = build(cfg)
    ok = run(device, cfg.get("loop_period_ms", 20))
    print("medge device %s: %d reports, %s" % (cfg["device_id"], device.reports,
                                              "all delivered" if ok else "outbox NOT drained"))
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m firmware.main DEVICE_CONFIG.json")
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
