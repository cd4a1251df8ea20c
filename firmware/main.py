"""Device entry point: build a Device from a config file and run it until stopped.

On a Raspberry Pi (CPython)::

    python -m firmware.main device.json      # or device.toml (CPython >= 3.11)

On a MicroPython board (``firmware/`` copied to ``/lib``)::

    import firmware.main
    firmware.main.main("/device.json")

Every config key, per source kind, is described in ``docs/device.md``.  In
short (a JSON object; units in the names; no default sample rate)::

    {"device_id": "bed-12", "sample_rate_hz": 250, "mains_hz": 50,
     "broker_host": "192.0.2.10", "broker_port": 1883, "state_dir": "/var/lib/medge",
     "source": {"kind": "ads1115", "i2c": {"bus": 1}, "address": 72,
                "frontend_gain": 100, "alert": 17}}

Sources are a registry of kinds (:func:`register_source`): ``file`` (raw
little-endian int16 samples replayed at the sample rate; the device shuts
down cleanly at their end), ``ads1292`` (ADS1292R on SPI), ``ads1115``
(ADS1115 on I2C behind an analog front end), ``max30102`` (one PPG channel),
``serial`` (the serial ECG board); ``tmp117`` is known but refused as the
source (a thermometer, not a sample stream).  The simulator registers
``sim`` (``sim/device_source.py``): firmware never imports ``sim``.  A
factory gets the source's settings (keys checked against the kind's key
lists first, so an unknown or missing key is refused by name) and a
:class:`SourceContext`: sample rate, clock, loop period, and the platform's
buses (:mod:`firmware.hw.bus`, made only when a bus kind asks; tests pass
emulated ones).

The MQTT link is chosen here, by platform: umqtt on MicroPython, paho-mqtt
on CPython.  ``username``/``password_file`` (:class:`Credentials`) are sent in
CONNECT; ``tls_ca_file`` (the CA of the broker's certificate) switches TLS on, with
``tls_cert_file``/``tls_key_file`` the device's client certificate (paho's
``tls_set`` on CPython, an ``ssl.SSLContext`` on MicroPython ports that have
``ssl``).  No password is ever logged or printed.  ``incarnation`` (from
provisioning, ``medge fleet add --json``) is sent in every message.  ``journal``
(default true) commits every message to ``<state>.journal`` before it is sent
(:mod:`firmware.net.journal`): sequence numbers stay contiguous across restarts,
power cuts and SIGKILL, and nothing committed is lost.

Exit codes of :func:`main`: 0 everything sent; 1 the outbox was not drained,
or a hardware or I/O fault (start-up or run); 2 the config cannot be used
(one line on stderr, ``medge device: <reason>``, never a traceback); 3 a
``reboot`` command (``medge fleet cmd ID reboot``) asked for a restart: the
device shut down cleanly and its service manager starts it again (systemd
``Restart=always``); on MicroPython :func:`main` resets the board instead.  It
runs until the source ends (``file``), SIGTERM (CPython) or Ctrl-C, then
shuts down cleanly: offline message, exact sequence number saved, bounded
drain, disconnect.
"""

import json
import sys
from array import array

from firmware.device import Device, DeviceConfig
from firmware.hw.compat import IS_MICROPYTHON, SystemClock, sleep_ms, ticks_diff, ticks_ms
from firmware.hw.sources import ArraySource
from firmware.hw.state import FileState

try:
    import os
except ImportError:  # pragma: no cover - MicroPython ports without os
    import uos as os  # type: ignore[import-not-found,no-redef]

PROGRAM = "medge device"
DEFAULT_BROKER_PORT = 1883
DEFAULT_LOOP_PERIOD_MS = 20
DEFAULT_STATE_PATH = "medge_state.json"
#: Exit code after a ``reboot`` command: the service manager starts the device again.
EXIT_RESTART = 3

_REQUIRED_KEYS = ("device_id", "sample_rate_hz", "broker_host", "source")
_OPTIONAL_KEYS = (
    "patient_id",
    "broker_port",
    "state_path",
    "state_dir",
    "report_period_ms",
    "loop_period_ms",
    "mains_hz",
    "model",
    "username",
    "password_file",
    "incarnation",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "vitals",
    "rhythm",
    "journal",
    "ota_public_key",
)
_TLS_KEYS = ("tls_ca_file", "tls_cert_file", "tls_key_file")
_CONFIG_KEYS = _REQUIRED_KEYS + _OPTIONAL_KEYS

# Kinds the simulator or another layer registers: a hint when they are missing.
_REGISTERED_ELSEWHERE = {
    "sim": "registered by the simulator: run  python -m sim.device_source CONFIG",
}


# -- checking values ---------------------------------------------------------
def _listed(names):
    return ", ".join(sorted(names))


def check_keys(obj, where, required, optional=()):
    """``obj`` must be a dict with every key of ``required`` and no key outside
    ``required`` + ``optional``; ValueError naming the key otherwise."""
    if not isinstance(obj, dict):
        raise ValueError("%s must be an object, got %r" % (where, obj))
    known = tuple(required) + tuple(optional)
    for key in obj:
        if key not in known:
            raise ValueError("%s: unknown key %r (known: %s)" % (where, key, _listed(known)))
    for key in required:
        if key not in obj:
            raise ValueError("%s: missing key %r" % (where, key))
    return obj


def get_int(obj, key, where, default=None, low=None, high=None):
    """``obj[key]`` (or ``default``) as an int within ``low..high``."""
    value = obj.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("%s.%s must be an int, got %r" % (where, key, value))
    if (low is not None and value < low) or (high is not None and value > high):
        span = ">= %d" % low if high is None else "<= %d" % high if low is None else (
            "in %d..%d" % (low, high))
        raise ValueError("%s.%s must be %s, got %r" % (where, key, span, value))
    return value


def get_choice(obj, key, where, choices, default):
    value = obj.get(key, default)
    for choice in choices:
        if value == choice and type(value) is type(choice):
            return value
    raise ValueError("%s.%s must be one of %s, got %r"
                     % (where, key, ", ".join(str(c) for c in choices), value))


def get_bool(obj, key, where, default):
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise ValueError("%s.%s must be true or false, got %r" % (where, key, value))
    return value


def get_str(obj, key, where, default=None):
    value = obj.get(key, default)
    if not isinstance(value, str) or not value:
        raise ValueError("%s.%s must be a non-empty string, got %r" % (where, key, value))
    return value


def _get_number(obj, key, where, low, high, default):
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError("%s.%s must be a number in %s..%s, got %r"
                         % (where, key, low, high, value))
    return value


# -- the source registry -----------------------------------------------------
class SourceContext:
    """What a source factory may use: ``sample_rate_hz``, ``clock`` (``ticks_ms``,
    ``epoch_ms``), ``loop_period_ms`` and ``buses`` (the platform's, made on
    first use, or the ones injected by a test or the simulator)."""

    def __init__(self, sample_rate_hz, clock, loop_period_ms=DEFAULT_LOOP_PERIOD_MS,
                 buses=None):
        self.sample_rate_hz = sample_rate_hz
        self.clock = clock
        self.loop_period_ms = loop_period_ms
        self._buses = buses

    @property
    def buses(self):
        if self._buses is None:
            from firmware.hw.bus import platform_buses

            self._buses = platform_buses()
        return self._buses


class _Kind:
    def __init__(self, factory, required, optional):
        self.factory = factory
        keys = ["kind"]
        keys.extend(required)
        self.required = tuple(keys)  # "kind" first: every source names one
        self.optional = tuple(optional)


_SOURCES = {}


def register_source(kind, factory, required=(), optional=()):
    """Add source kind ``kind``: ``factory(settings, ctx) -> source`` where
    ``settings`` is the config's ``source`` object (its keys already checked
    against ``required`` and ``optional``; ``kind`` is implied) and ``ctx`` a
    :class:`SourceContext`.  Registering the same factory again is a no-op;
    another factory for a taken kind is refused."""
    if not isinstance(kind, str) or not kind:
        raise ValueError("a source kind is a non-empty string, got %r" % (kind,))
    old = _SOURCES.get(kind)
    if old is not None and old.factory is not factory:
        raise ValueError("source kind %r is already registered" % kind)
    _SOURCES[kind] = _Kind(factory, required, optional)


def source_kinds():
    """The registered source kinds, sorted."""
    return sorted(_SOURCES)


def check_source(spec):
    """The ``source`` object's kind and key set (values are checked when it is built)."""
    if not isinstance(spec, dict):
        raise ValueError("source must be an object with a \"kind\", got %r" % (spec,))
    kind = spec.get("kind")
    entry = _SOURCES.get(kind) if isinstance(kind, str) else None
    if entry is None:
        hint = _REGISTERED_ELSEWHERE.get(kind) if isinstance(kind, str) else None
        raise ValueError("source.kind: unknown source kind %r (known: %s)%s"
                         % (kind, _listed(_SOURCES), " (%s)" % hint if hint else ""))
    check_keys(spec, "source (kind %r)" % kind, entry.required, entry.optional)
    return entry


def make_source(spec, ctx):
    """Build the sample source that ``spec`` (the config's ``source``) describes."""
    return check_source(spec).factory(spec, ctx)


# -- the built-in kinds ------------------------------------------------------
def _file_source(spec, ctx):
    path = get_str(spec, "path", "source")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ValueError("source.path: cannot read %r: %s" % (path, exc)) from None
    if len(data) % 2:
        raise ValueError("source.path: %r has an odd length: not int16 samples" % path)
    if sys.byteorder != "little":  # pragma: no cover - every supported port is little-endian
        raise ValueError("big-endian hosts are not supported")
    return ArraySource(array("h", data), sample_rate_hz=ctx.sample_rate_hz, clock=ctx.clock)


_I2C_KEYS = (("bus",), ("scl", "sda", "freq_hz"))
_SPI_KEYS = (("bus", "cs"), ("freq_hz", "sck", "mosi", "miso"))
_UART_KEYS = (("port",), ("baudrate", "tx", "rx"))


def _bus_settings(spec, key, keys):
    where = "source." + key
    settings = check_keys(spec[key], where, keys[0], keys[1])
    for name in settings:
        if name != "port":
            get_int(settings, name, where, low=0)
    return settings


def _pin(spec, key):
    return get_int(spec, key, "source", low=0)


def _check_polled(ctx, what):
    """A part without a FIFO, polled once per loop pass, loses every conversion
    the loop sleeps through: the pass must be shorter than a sample period."""
    if ctx.loop_period_ms * ctx.sample_rate_hz >= 1000:
        raise ValueError(
            "%s is polled once per loop pass and keeps only its newest result: loop_period_ms"
            " must be below one sample period (at most %d ms at %d Hz), got %d"
            % (what, 999 // ctx.sample_rate_hz, ctx.sample_rate_hz, ctx.loop_period_ms))


def _data_rate(ctx, part, rates_sps):
    """The part converts at the device's sample rate, or the config is refused."""
    fs = ctx.sample_rate_hz
    if fs not in rates_sps:
        raise ValueError("sample_rate_hz %d is not an %s data rate (%s SPS)"
                         % (fs, part, ", ".join(str(r) for r in rates_sps)))
    return fs


def _ads1292_source(spec, ctx):
    from firmware.hw.bus import DEFAULT_SPI_FREQ_HZ
    from firmware.hw.drivers import ads1292
    from firmware.hw.sensors import Ads1292EcgSource

    fs = _data_rate(ctx, "ADS1292", ads1292.DATA_RATES_SPS)
    spi_settings = _bus_settings(spec, "spi", _SPI_KEYS)
    channel = get_choice(spec, "channel", "source", (1, 2), 2)
    gain = get_choice(spec, "gain", "source", ads1292.GAINS, 6)
    vref_4v = get_bool(spec, "vref_4v", "source", False)
    lead_off = get_bool(spec, "lead_off_detect", "source", True)
    use_irq = get_bool(spec, "irq", "source", True)
    drdy_number = _pin(spec, "drdy")
    if not use_irq:
        _check_polled(ctx, "an ADS1292 without its DRDY interrupt (\"irq\": false)")
    buses = ctx.buses
    spi, cs = buses.spi(spi_settings)
    drdy = buses.input_pin(drdy_number, False)
    afe = ads1292.ADS1292(spi, cs, drdy, data_rate_sps=fs, gain=(gain, gain), vref_4v=vref_4v,
                          lead_off_detect=lead_off,
                          baudrate=spi_settings.get("freq_hz", DEFAULT_SPI_FREQ_HZ))
    source = Ads1292EcgSource(afe, channel=channel, use_irq=use_irq)
    afe.start()
    return buses.guard(source)


#: ``mux`` names of the ADS1115's input pairs; the index is the MUX[2:0] code.
ADS1115_MUX_NAMES = ("ain0_ain1", "ain0_ain3", "ain1_ain3", "ain2_ain3",
                     "ain0_gnd", "ain1_gnd", "ain2_gnd", "ain3_gnd")


def _ads1115_source(spec, ctx):
    from firmware.hw.drivers import ads1115
    from firmware.hw.sensors import Ads1115EcgSource

    fs = _data_rate(ctx, "ADS1115", ads1115.DATA_RATES_SPS)
    i2c_settings = _bus_settings(spec, "i2c", _I2C_KEYS)
    address = get_int(spec, "address", "source", ads1115.DEFAULT_ADDRESS, 0x48, 0x4B)
    full_scale_mv = get_choice(spec, "full_scale_mv", "source", ads1115.FULL_SCALES_MV, 2048)
    mux = ADS1115_MUX_NAMES.index(get_choice(spec, "mux", "source", ADS1115_MUX_NAMES, "ain0_ain1"))
    gain = get_int(spec, "frontend_gain", "source", low=1, high=10000)
    alert = _pin(spec, "alert") if "alert" in spec else None
    if alert is None:
        _check_polled(ctx, "an ADS1115 without its ALERT/RDY pin (\"alert\")")
    buses = ctx.buses
    bus = buses.i2c(i2c_settings)
    ready = buses.input_pin(alert, True) if alert is not None else None
    adc = ads1115.ADS1115(bus, address, data_rate_sps=fs, full_scale_mv=full_scale_mv, mux=mux,
                          continuous=True, ready_pin=ready is not None)
    source = Ads1115EcgSource(adc, gain, ready_pin=ready, use_irq=ready is not None,
                              clock=ctx.clock)
    return buses.guard(source)


_PPG_SHIFT_BITS = 3  # 18-bit FIFO counts -> 15 bits: they fit the device's int16 buffer
_PPG_FIFO_MARGIN = 16  # a loop pass may last at most half the 32-sample FIFO


def _max30102_source(spec, ctx):
    from firmware.hw.drivers import max30102
    from firmware.hw.sensors import Max30102PpgSource

    fs = ctx.sample_rate_hz
    average = 0
    for avg in max30102.SAMPLE_AVERAGES:
        if fs * avg in max30102.SAMPLE_RATES_SPS:
            average = avg
            break
    if not average:
        raise ValueError("sample_rate_hz %d is not a MAX30102 FIFO rate (sample rate / averaging)"
                         % fs)
    if ctx.loop_period_ms * fs >= _PPG_FIFO_MARGIN * 1000:
        raise ValueError("loop_period_ms %d lets the MAX30102's FIFO overflow at %d Hz: it must"
                         " be below %d ms"
                         % (ctx.loop_period_ms, fs, _PPG_FIFO_MARGIN * 1000 // fs))
    i2c_settings = _bus_settings(spec, "i2c", _I2C_KEYS)
    address = get_int(spec, "address", "source", max30102.DEFAULT_ADDRESS, 0x08, 0x77)
    led = get_choice(spec, "led", "source", ("ir", "red"), "ir")
    width = get_choice(spec, "pulse_width_us", "source", max30102.PULSE_WIDTHS_US, 118)
    adc_range = get_choice(spec, "adc_range_na", "source", max30102.ADC_RANGES_NA, 4096)
    currents = spec.get("led_current_ma", [7.0, 7.0])
    if not isinstance(currents, list) or len(currents) != 2:
        raise ValueError("source.led_current_ma must be [red_ma, ir_ma], got %r" % (currents,))
    pair = {"red": currents[0], "ir": currents[1]}
    red_ma = _get_number(pair, "red", "source.led_current_ma", 0, max30102.LED_CURRENT_MAX_MA, 0)
    ir_ma = _get_number(pair, "ir", "source.led_current_ma", 0, max30102.LED_CURRENT_MAX_MA, 0)
    ox = max30102.MAX30102(ctx.buses.i2c(i2c_settings), address, mode=max30102.MODE_SPO2,
                           sample_rate_sps=fs * average, sample_average=average,
                           pulse_width_us=width, adc_range_na=adc_range,
                           led_current_ma=(red_ma, ir_ma))
    return ctx.buses.guard(Max30102PpgSource(ox, led=led, shift_bits=_PPG_SHIFT_BITS))


def _serial_source(spec, ctx):
    from firmware.hw.drivers.serial_ecg import SerialEcgSource

    settings = _bus_settings(spec, "uart", _UART_KEYS)
    return ctx.buses.guard(SerialEcgSource(ctx.buses.uart(settings)))


def _tmp117_refused(spec, ctx):
    raise ValueError(
        "source.kind: 'tmp117' is a thermometer (one reading per conversion cycle), not a sample"
        " source for the ECG loop, and the device has no temperature input yet: name an ECG"
        " or PPG source (%s)" % _listed(k for k in _SOURCES if k != "tmp117"))


register_source("file", _file_source, ("path",))
register_source("ads1292", _ads1292_source, ("spi", "drdy"),
                ("channel", "gain", "vref_4v", "lead_off_detect", "irq"))
register_source("ads1115", _ads1115_source, ("i2c", "frontend_gain"),
                ("address", "full_scale_mv", "mux", "alert"))
register_source("max30102", _max30102_source, ("i2c",),
                ("address", "led", "led_current_ma", "pulse_width_us", "adc_range_na"))
register_source("serial", _serial_source, ("uart",))
register_source("tmp117", _tmp117_refused, (),
                ("i2c", "address", "averages", "conversion_cycle_ms", "alert"))


# -- the config ----------------------------------------------------------------
def parse_config(text, path):
    """The config object in ``text``: TOML when ``path`` ends ``.toml`` (CPython >= 3.11,
    ``tomllib``), else JSON."""
    if path.endswith(".toml"):
        try:
            import tomllib
        except ImportError:
            raise ValueError("TOML configs need CPython >= 3.11 (tomllib): write it as JSON"
                             ) from None
        try:
            return tomllib.loads(text)
        except ValueError as exc:  # tomllib.TOMLDecodeError
            raise ValueError("not valid TOML: %s" % exc) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError("not valid JSON: %s" % exc) from None


def check_config(cfg):
    """Check every top-level key and the source's kind and key set; return ``cfg``.

    Values the device's own classes check (rate, mains, report period, id)
    are checked by building a :class:`DeviceConfig` once."""
    if not isinstance(cfg, dict):
        raise ValueError("the config must be an object")
    for key in cfg:
        if key not in _CONFIG_KEYS:
            raise ValueError("unknown config key %r (known: %s)" % (key, _listed(_CONFIG_KEYS)))
    for key in _REQUIRED_KEYS:
        if key not in cfg:
            raise ValueError("missing config key %r" % key)
    device_config(cfg)
    get_str(cfg, "broker_host", "config")
    get_int(cfg, "broker_port", "config", DEFAULT_BROKER_PORT, 1, 65535)
    get_int(cfg, "loop_period_ms", "config", DEFAULT_LOOP_PERIOD_MS, 1, 1000)
    if "state_path" in cfg and "state_dir" in cfg:
        raise ValueError("config: state_path and state_dir name the same file: give one")
    # (not *_TLS_KEYS: MicroPython has no unpacking in a tuple display)
    for key in ("state_path", "state_dir", "model", "username", "password_file") + _TLS_KEYS:  # noqa: RUF005
        if key in cfg:
            get_str(cfg, key, "config")
    if "password_file" in cfg and "username" not in cfg:
        raise ValueError("config: password_file needs a username")
    if ("tls_cert_file" in cfg) != ("tls_key_file" in cfg):
        raise ValueError("config: tls_cert_file and tls_key_file go together")
    if "tls_cert_file" in cfg and "tls_ca_file" not in cfg:
        raise ValueError("config: a client certificate needs tls_ca_file (the broker's CA)")
    if "journal" in cfg and cfg["journal"] is not True and cfg["journal"] is not False:
        raise ValueError("config: journal must be true or false")
    if "rhythm" in cfg:
        if cfg["rhythm"] is not True and cfg["rhythm"] is not False:
            raise ValueError("config: rhythm must be true or false")
        if cfg["rhythm"] and not cfg.get("model"):
            raise ValueError("config: rhythm events need the beat model (model)")
    check_source(cfg["source"])
    return cfg


def load_config(path):
    """Read and check the config file at ``path``; ValueError ``"<path>: <reason>"``."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise ValueError("%s: cannot read the config: %s" % (path, exc)) from None
    try:
        return check_config(parse_config(text, path))
    except ValueError as exc:
        raise ValueError("%s: %s" % (path, exc)) from None


def device_config(cfg):
    return DeviceConfig(
        cfg["device_id"],
        cfg["sample_rate_hz"],
        patient_id=cfg.get("patient_id", ""),
        report_period_ms=cfg.get("report_period_ms", 1000),
        mains_hz=cfg.get("mains_hz"),
        incarnation=cfg.get("incarnation"),
    )


class Credentials:
    """The broker account: ``username`` and the first line of ``password_file``."""

    def __init__(self, username, password):
        self.username = username
        self.password = password

    def __repr__(self):
        return "Credentials(%r, password=%s)" % (self.username, "***" if self.password else None)


def load_credentials(cfg):
    """:class:`Credentials` from ``username`` / ``password_file``, or None."""
    if "username" not in cfg:
        return None
    password = None
    path = cfg.get("password_file")
    if path is not None:
        try:
            with open(path) as f:
                password = f.read().split("\n")[0].rstrip("\r")
        except OSError as exc:
            raise ValueError("password_file %r: cannot read: %s" % (path, exc)) from None
        if not password:
            raise ValueError("password_file %r: the first line (the password) is empty" % path)
    return Credentials(cfg["username"], password)


def _is_dir(path):
    try:
        return bool(os.stat(path)[0] & 0x4000)  # S_IFDIR
    except OSError:
        return False


def _make_dirs(path):
    if not path or _is_dir(path):
        return
    parent = path.rstrip("/").rsplit("/", 1)[0] if "/" in path.rstrip("/") else ""
    if parent and parent != path:
        _make_dirs(parent)
    os.mkdir(path)


def state_file(cfg):
    """Where the device's state lives: ``<state_dir>/<device_id>.json`` (the
    directory made if missing; the simulator's layout), else ``state_path``."""
    if "state_dir" not in cfg:
        return cfg.get("state_path", DEFAULT_STATE_PATH)
    state_dir = cfg["state_dir"]
    try:
        _make_dirs(state_dir)
    except OSError as exc:
        raise ValueError("state_dir %r: cannot create it: %s" % (state_dir, exc)) from None
    return state_dir.rstrip("/") + "/" + cfg["device_id"] + ".json"


def tls_settings(cfg):
    """``{"ca_file", "cert_file", "key_file"}`` from the config's ``tls_*`` keys, or
    None when ``tls_ca_file`` is not given (no TLS)."""
    if "tls_ca_file" not in cfg:
        return None
    return {"ca_file": cfg["tls_ca_file"], "cert_file": cfg.get("tls_cert_file"),
            "key_file": cfg.get("tls_key_file")}


def _mpy_ssl_context(tls):
    try:
        import ssl
    except ImportError:
        raise ValueError("tls_ca_file: this MicroPython port has no ssl module") from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=tls["ca_file"])
    if tls["cert_file"]:
        ctx.load_cert_chain(tls["cert_file"], tls["key_file"])
    return ctx


def make_link(cfg, credentials=None):
    host = cfg["broker_host"]
    port = cfg.get("broker_port", DEFAULT_BROKER_PORT)
    user = credentials.username if credentials is not None else None
    password = credentials.password if credentials is not None else None
    tls = tls_settings(cfg)
    if IS_MICROPYTHON:
        from firmware.net.links.umqtt import UmqttLink

        return UmqttLink(host, port, cfg["device_id"], user=user, password=password,
                         ssl=_mpy_ssl_context(tls) if tls else None)
    from firmware.net.links.paho import PahoLink

    return PahoLink(host, port, cfg["device_id"], username=user, password=password, tls=tls)


def build(cfg, clock=None, link=None, buses=None):
    """The :class:`Device` that ``cfg`` describes.  ``buses`` replaces the
    platform's (:mod:`firmware.hw.bus`), e.g. with the simulator's emulated ones."""
    check_config(cfg)
    clock = clock or SystemClock()
    config = device_config(cfg)
    credentials = load_credentials(cfg)
    slot = None
    if cfg.get("model"):
        from firmware.ml.infer import ModelSlot

        slot = ModelSlot()
        base = cfg["model"]
        if not slot.install_files(base + ".tflite", base + ".json"):
            _error("beat model refused: %s" % slot.last_error)
    ctx = SourceContext(config.sample_rate_hz, clock,
                        cfg.get("loop_period_ms", DEFAULT_LOOP_PERIOD_MS), buses)
    source = make_source(cfg["source"], ctx)
    vitals = make_vitals(cfg.get("vitals"), ctx) if cfg.get("vitals") is not None else None
    rhythm = None
    if slot is not None and cfg.get("rhythm", True):  # rhythm events: on with a model
        from firmware.rhythm.monitor import RhythmMonitor

        rhythm = RhythmMonitor(config.sample_rate_hz)
    path = state_file(cfg)
    state = FileState(path)
    base = path[:-5] if path.endswith(".json") else path
    updater = None
    if slot is not None:  # signed model updates into <state>.model.a / .b
        from firmware.ml.update import ModelUpdater

        key = cfg.get("ota_public_key")
        updater = ModelUpdater(slot, state, base + ".model", factory=cfg["model"],
                               key=None if key is None else _update_key(key))
        if updater.boot():
            print("%s: beat model %s from update slot %s" % (PROGRAM, slot.version,
                                                             updater.active()))
        elif slot.last_error and slot.classifier is not None:
            _error(slot.last_error)
    journal = None
    if cfg.get("journal", True):  # the outbox and seq on flash (firmware/net/journal.py)
        from firmware.net.journal import Journal

        journal = Journal(base + ".journal")
    return Device(config, source, link or make_link(cfg, credentials), clock, state, model=slot,
                  vitals=vitals, rhythm=rhythm, journal=journal, updater=updater)


def _update_key(text):
    """The ``ota_public_key`` value: 130 hex digits, a P-256 key (SEC 1, 04 || X || Y)."""
    import binascii

    from firmware.ml.p256 import public_key

    try:
        raw = binascii.unhexlify(text) if isinstance(text, str) else b""
        public_key(raw)
    except ValueError as exc:
        raise ValueError("ota_public_key: %s (130 hex digits from `medge fleet ota key`)"
                         % exc) from None
    return raw


def make_vitals(spec, ctx):
    """The PPG, thermometer and NIBP of the config's ``vitals`` object
    (:func:`firmware.vitals.monitor.vital_signs_from_config`, each sensor at
    its own rate) on the buses named by its ``i2c`` and ``uart`` settings."""
    from firmware.vitals.monitor import vital_signs_from_config

    if not isinstance(spec, dict):
        raise ValueError("vitals must be an object, got %r" % (spec,))
    rest = {}
    for key in spec:
        if key not in ("i2c", "uart"):
            rest[key] = spec[key]
    i2c = ctx.buses.i2c(_bus_settings(spec, "i2c", _I2C_KEYS)) if "i2c" in spec else None
    uart = ctx.buses.uart(_bus_settings(spec, "uart", _UART_KEYS)) if "uart" in spec else None
    return vital_signs_from_config(rest, ctx.sample_rate_hz, i2c=i2c, uart=uart)


# -- running -------------------------------------------------------------------
class StopFlag:
    """Set by SIGTERM (CPython) or by whoever runs the loop on another thread."""

    def __init__(self):
        self.requested = False

    def set(self, *_):
        self.requested = True


def run(device, loop_period_ms=DEFAULT_LOOP_PERIOD_MS, drain_timeout_ms=10000, stop=None):
    """Step the device until its source is exhausted (a source with ``exhausted()``),
    ``stop`` is set, or Ctrl-C; then shut down cleanly.  Return True when the
    outbox drained.  An OSError from the source (a sensor fault) also ends the
    run cleanly and is raised again after the shutdown."""
    exhausted = getattr(device.source, "exhausted", None)
    fault = None
    try:
        while not (stop is not None and stop.requested):
            if exhausted is not None and exhausted():
                break
            if device.restart_requested:  # the reboot command: its ack goes out first
                break
            device.step()
            sleep_ms(loop_period_ms)
        device.step()
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        fault = exc
    device.stop()
    start = ticks_ms()
    while not device.drained() and ticks_diff(ticks_ms(), start) < drain_timeout_ms:
        device.service()
        sleep_ms(loop_period_ms)
    device.link.disconnect()
    if fault is not None:
        raise fault
    return device.drained()


def _error(message):
    print("%s: %s" % (PROGRAM, message), file=sys.stderr)


def _stop_on_sigterm(stop):
    if IS_MICROPYTHON:
        return
    import signal

    try:
        signal.signal(signal.SIGTERM, stop.set)
    except ValueError:  # not the main thread: the caller stops it
        pass


def main(path, buses=None, stop=None):
    """Load ``path``, build the device, run it; return the exit code (module docstring)."""
    try:
        cfg = load_config(path)
    except ValueError as exc:
        _error(exc)
        return 2
    try:
        device = build(cfg, buses=buses)
    except (ValueError, ImportError) as exc:
        _error("%s: %s" % (path, exc))
        return 2
    except OSError as exc:
        _error("%s: start-up failed: %s" % (path, exc))
        return 1
    if stop is None:
        stop = StopFlag()
        _stop_on_sigterm(stop)
    try:
        ok = run(device, cfg.get("loop_period_ms", DEFAULT_LOOP_PERIOD_MS), stop=stop)
    except OSError as exc:
        _error("%s: sensor fault, shut down: %s" % (cfg["device_id"], exc))
        return 1
    print("%s %s: %d reports, %s" % (PROGRAM, cfg["device_id"], device.reports,
                                     "all delivered" if ok else "outbox NOT drained"))
    if device.restart_requested:
        print("%s %s: restarting (reboot command)" % (PROGRAM, cfg["device_id"]))
        if IS_MICROPYTHON:
            import machine  # type: ignore[import-not-found]

            machine.reset()
        return EXIT_RESTART
    return 0 if ok else 1


def cli(argv):
    if len(argv) != 1:
        _error("usage: python -m firmware.main CONFIG.json|CONFIG.toml")
        return 2
    return main(argv[0])


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
