"""``python -m firmware.main CONFIG``: the device program built from its config.

Every source kind is built from a config against emulated hardware *below*
the driver (``sim.bus`` + ``sim.parts`` through
``sim.device_source.emulate_source``), so the real driver and source code
runs; the README's example config is parsed out of README.md and built the
same way; bad configs are refused naming the key; the CLI prints one line and
exits 2 for a config it cannot use; ``file`` replays end to end through a
real broker into the store, and a ``sim`` device runs until SIGTERM with its
sequence numbers contiguous across two runs.
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

import sim.device_source  # noqa: F401  (registers the "sim" kind)
from firmware import main as device_main
from firmware.hw.bus import LinuxBuses
from firmware.main import build, check_config, load_config, load_credentials, source_kinds
from firmware.net.links.memory import MemoryLink
from host.broker.launch import Broker
from host.services.ingest import Ingest
from host.services.store import Store
from sim.clock import SimClock
from sim.device_source import EmulatedBuses, emulate_source
from sim.ecgsyn import EcgsynParams, ecgsyn
from sim.sources import mv_to_counts

REPO = Path(__file__).resolve().parents[1]
FS = 250
DC_MV = 1.5  # a constant electrode voltage: 300 device counts (200 per mV)
DC_COUNTS = 300
BUILT_IN = ("ads1115", "ads1292", "file", "max30102", "serial", "tmp117")


def write_config(tmp_path: Path, name: str = "device.json", **cfg: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    return path


def base_config(tmp_path: Path, source: dict[str, Any], **extra: object) -> dict[str, Any]:
    cfg: dict[str, Any] = {"device_id": "bed-7", "sample_rate_hz": FS, "broker_host": "h",
                           "state_dir": str(tmp_path / "state"), "source": source}
    cfg.update(extra)
    return cfg


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware.main", *args], capture_output=True,
                          text=True, timeout=timeout, check=False, cwd=REPO)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("medge device: "), result.stderr
    assert text in lines[0]
    assert "Traceback" not in result.stderr


@contextmanager
def broker_and_ingest(tmp_path: Path) -> Iterator[tuple[Broker, Ingest]]:
    """A real broker and the ingest service storing into ``tmp_path/medge.db``."""
    with Broker("auto", data_dir=tmp_path / "broker") as broker:
        ingest = Ingest(tmp_path / "medge.db", broker.host, broker.port)
        ingest.start()
        try:
            assert ingest.wait_connected(10)
            yield broker, ingest
        finally:
            ingest.stop()


def wait_stored(ingest: Ingest, count: int, timeout_s: float = 30) -> None:
    """Wait (bounded) until ingest has stored ``count`` messages; fail if it has not."""
    deadline = time.monotonic() + timeout_s
    while ingest.stats()["stored"] < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ingest.stats()["stored"] >= count, (ingest.stats(), count)


# -- file: end to end through a real broker -----------------------------------
def test_device_main_replays_a_recording_to_the_store(tmp_path: Path) -> None:
    ecg = ecgsyn(6, EcgsynParams(sample_rate_hz=250, heart_rate_mean_bpm=66),
                 np.random.default_rng(5))
    recording = tmp_path / "ecg.bin"
    recording.write_bytes(mv_to_counts(ecg.signal_mv).astype("<i2").tobytes())
    db = tmp_path / "medge.db"
    with broker_and_ingest(tmp_path) as (broker, ingest):
        cfg = write_config(tmp_path, device_id="bed-12", sample_rate_hz=250,
                           patient_id="p-12", broker_host=broker.host,
                           broker_port=broker.port, state_path=str(tmp_path / "st.json"),
                           source={"kind": "file", "path": str(recording)})
        result = cli(str(cfg))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "6 reports, all delivered" in result.stdout
        wait_stored(ingest, 8)
    with Store(db, readonly=True) as store:
        assert store.seqs("bed-12") == list(range(8))  # birth, 6 vitals, shutdown
        [device] = store.devices()
        assert (device.state, device.state_reason, device.patient_id) == (
            "offline", "shutdown", "p-12")
        assert device.hr_bpm is not None and abs(device.hr_bpm - 66) <= 4
    assert json.loads((tmp_path / "st.json").read_text())["seq"] == 8


# -- sim: until SIGTERM, seq contiguous across runs ----------------------------
def test_sim_device_runs_until_sigterm_and_seq_stays_contiguous(tmp_path: Path) -> None:
    db = tmp_path / "medge.db"
    with broker_and_ingest(tmp_path) as (broker, ingest):
        source = {"kind": "sim", "scenario": "stable", "speed": 4, "seed": 1}
        cfg = write_config(tmp_path, **base_config(
            tmp_path, source, broker_host=broker.host, broker_port=broker.port))
        proc = subprocess.Popen([sys.executable, "-m", "sim.device_source", str(cfg)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=REPO)
        try:
            wait_stored(ingest, 6, 60)  # start-up imports are slow on a loaded machine
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, out + err
        assert "all delivered" in out
        # A second run that ends by itself (duration_s) carries on from the saved seq,
        # started the contract's way: medge device run --config PATH (contract 13).
        source2 = dict(source, duration_s=2)
        cfg2 = write_config(tmp_path, "again.json", **base_config(
            tmp_path, source2, broker_host=broker.host, broker_port=broker.port))
        again = subprocess.run([sys.executable, "-m", "host.cli", "device", "run", "--config",
                                str(cfg2)],
                               capture_output=True, text=True, timeout=60, check=False,
                               cwd=REPO)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "2 reports, all delivered" in again.stdout
        state = json.loads((tmp_path / "state" / "bed-7.json").read_text())
        wait_stored(ingest, state["seq"])
    with Store(db, readonly=True) as store:
        assert store.seqs("bed-7") == list(range(state["seq"]))  # none skipped, none reused
        [device] = store.devices()
        assert (device.state, device.state_reason, device.boot_id) == ("offline", "shutdown", 2)


def test_sigkill_at_any_moment_skips_and_loses_no_number(tmp_path: Path) -> None:
    """Contract 13: medge device run killed with SIGKILL twice, then run to its end:
    the store holds every number from 0, none skipped, none reused (the message
    journal, firmware/net/journal.py, re-sends what was committed but not
    acknowledged)."""
    db = tmp_path / "medge.db"
    with broker_and_ingest(tmp_path) as (broker, ingest):
        source = {"kind": "sim", "scenario": "stable", "speed": 4, "seed": 3}
        cfg = write_config(tmp_path, **base_config(
            tmp_path, source, broker_host=broker.host, broker_port=broker.port))
        command = [sys.executable, "-m", "host.cli", "device", "run", "--config", str(cfg)]
        for want in (5, 12):
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, cwd=REPO)
            try:
                wait_stored(ingest, want, 60)
            finally:
                proc.kill()  # SIGKILL: no offline message, no saved counter
                proc.wait(10)
        cfg2 = write_config(tmp_path, "end.json", **base_config(
            tmp_path, dict(source, duration_s=2), broker_host=broker.host,
            broker_port=broker.port))
        last = subprocess.run([*command[:-1], str(cfg2)], capture_output=True, text=True,
                              timeout=60, check=False, cwd=REPO)
        assert last.returncode == 0, last.stdout + last.stderr
        state = json.loads((tmp_path / "state" / "bed-7.json").read_text())
        wait_stored(ingest, state["seq"])
        assert ingest.stats()["conflicts"] == 0
    with Store(db, readonly=True) as store:
        assert store.seqs("bed-7") == list(range(state["seq"]))  # none skipped, none reused
        assert state["seq"] > 14 and store.devices()[0].boot_id == 3


# -- every kind, built from its config against emulated parts -------------------
def read_now(device: Any) -> list[int]:
    """Every sample the device's source has ready."""
    from array import array

    buf = array("h", bytes(128))
    got: list[int] = []
    while n := device.source.read_samples(buf, 64):
        got.extend(buf[:n])
    return got


def read_for(device: Any, clock: SimClock, seconds: float, step_ms: int) -> list[int]:
    """What the device's source delivers over ``seconds`` of simulated time."""
    got: list[int] = []
    for _ in range(round(seconds * 1000 / step_ms)):
        clock.advance(step_ms)
        got.extend(read_now(device))
    return got


PPG_SIGNAL_NA_PER_MA = 200.0
# 200 nA/mA x 7 mA = 1400 nA of a 4096 nA range, 18-bit left-justified at 16-bit
# resolution (118 us: low 2 bits 0), shifted to 15 bits.
PPG_COUNTS = ((round(PPG_SIGNAL_NA_PER_MA * 7.0 / 4096 * 2**18) & ~3) >> 3)

# Single-ended (AIN0 against GND): the AFE's 1.65 V reference rides on the signal,
# (1.65 V + 100 x 1.5 mV) / 100 = 18 mV at the electrodes.
SINGLE_ENDED_COUNTS = 18 * 200

KINDS = {
    "ads1292 (DRDY irq)": ({"kind": "ads1292", "spi": {"bus": 0, "cs": 0}, "drdy": 25},
                           DC_MV * 1e-3, DC_COUNTS, {}, False),
    "ads1292 (polled)": ({"kind": "ads1292", "spi": {"bus": 0, "cs": 0, "freq_hz": 2000000},
                          "drdy": 25, "irq": False, "gain": 6, "channel": 1},
                         DC_MV * 1e-3, DC_COUNTS, {"loop_period_ms": 2}, False),
    "ads1115 (ALERT/RDY)": ({"kind": "ads1115", "i2c": {"bus": 1}, "address": 72,
                             "frontend_gain": 100, "alert": 17},
                            DC_MV * 1e-3, DC_COUNTS, {}, False),
    "ads1115 (smbus2, ALERT/RDY)": ({"kind": "ads1115", "i2c": {"bus": 1}, "address": 73,
                                     "frontend_gain": 100, "alert": 17, "mux": "ain0_gnd",
                                     "full_scale_mv": 4096},
                                    DC_MV * 1e-3, SINGLE_ENDED_COUNTS, {}, True),
    "ads1115 (polled)": ({"kind": "ads1115", "i2c": {"bus": 1, "freq_hz": 100000},
                          "frontend_gain": 100},
                         DC_MV * 1e-3, DC_COUNTS, {"loop_period_ms": 2}, False),
    "max30102": ({"kind": "max30102", "i2c": {"bus": 1}}, PPG_SIGNAL_NA_PER_MA, PPG_COUNTS,
                 {}, False),
    "max30102 (smbus2, red)": ({"kind": "max30102", "i2c": {"bus": 0}, "led": "red",
                                "led_current_ma": [7.0, 3.0]},
                               PPG_SIGNAL_NA_PER_MA, PPG_COUNTS, {}, True),
}


@pytest.mark.parametrize("name", list(KINDS))
def test_each_driver_kind_builds_from_its_config_and_delivers_the_signal(
        tmp_path: Path, name: str) -> None:
    spec, signal_value, expected, extra, smbus = KINDS[name]
    clock = SimClock(1_764_000_000_000)
    buses = emulate_source(spec, clock, signal_value, smbus=smbus)
    cfg = base_config(tmp_path, spec, **extra)
    device = build(check_config(cfg), clock=clock, link=MemoryLink(), buses=buses)
    step_ms = cfg.get("loop_period_ms", 20)
    got = read_for(device, clock, 1.0, step_ms)
    assert abs(len(got) - FS) <= 2, len(got)
    settled = got[5:]
    assert settled == [expected] * len(settled)
    # ... and the device loop consumes it: one report per second.
    for _ in range(round(2000 / step_ms)):
        clock.advance(step_ms)
        device.step()
    assert device.reports == 2
    assert (tmp_path / "state" / "bed-7.json").is_file()


def test_serial_kind_reads_a_board_on_a_pty_through_pyserial(tmp_path: Path) -> None:
    spec = {"kind": "serial", "uart": {"port": "/dev/ttyUSB0", "baudrate": 230400}}
    clock = SimClock(1_764_000_000_000)
    buses = emulate_source(spec, clock, float(DC_COUNTS))
    try:
        device = build(base_config(tmp_path, spec), clock=clock, link=MemoryLink(), buses=buses)
        got = read_for(device, clock, 1.0, 20)
        deadline = time.monotonic() + 5
        while len(got) < FS and time.monotonic() < deadline:  # the pty delivers asynchronously
            time.sleep(0.01)
            got.extend(read_now(device))
        assert got == [DC_COUNTS] * FS
    finally:
        buses.close()


def test_serial_kind_on_linux_opens_the_port_with_pyserial(tmp_path: Path) -> None:
    """The real Linux adapter (no emulated bus): pyserial on the board's pty."""
    from sim.serialboard import SerialEcgBoard

    with SerialEcgBoard(float(DC_COUNTS), FS) as board:
        board.start()
        spec = {"kind": "serial", "uart": {"port": board.port_name}}
        device = build(base_config(tmp_path, spec), link=MemoryLink(), buses=LinuxBuses())
        deadline = time.monotonic() + 10
        while device.samples < 2 * FS and time.monotonic() < deadline:
            device.step()
            time.sleep(0.02)
        assert device.samples >= 2 * FS
        assert device.reports >= 2


@pytest.mark.parametrize("sensor", ["direct", "ads1292", "ads1115"])
def test_sim_kind_builds_a_virtual_patient_on_each_sensor_path(tmp_path: Path,
                                                               sensor: str) -> None:
    spec = {"kind": "sim", "scenario": "stable", "speed": 4, "seed": 2, "sensor": sensor,
            "duration_s": 6}
    clock = SimClock(1_764_000_000_000)
    device = build(base_config(tmp_path, spec), clock=clock, link=MemoryLink())
    steps = 0
    while not device.source.exhausted() and steps < 1000:
        clock.advance(20)
        device.step()
        steps += 1
    assert device.samples == 6 * FS
    assert steps == round(6000 / 4 / 20)  # speed 4: 6 simulated seconds in 1.5 s of clock
    assert device.reports == 6
    truth_hr = device.source.patient.heart_rate_bpm(6.0)
    assert device.heart_rate_bpm() is not None
    assert abs(device.heart_rate_bpm() - truth_hr) < 8


def test_tmp117_is_refused_as_the_source_with_the_reason(tmp_path: Path) -> None:
    spec = {"kind": "tmp117", "i2c": {"bus": 1}, "address": 72}
    clock = SimClock(0)
    with pytest.raises(ValueError, match=r"'tmp117' is a thermometer.*not a sample source") as exc:
        build(base_config(tmp_path, spec), clock=clock, link=MemoryLink(),
              buses=emulate_source(spec, clock, 36.6))
    for kind in ("ads1115", "ads1292", "file", "max30102", "serial"):
        assert kind in str(exc.value)


# -- refusals ------------------------------------------------------------------
def test_unknown_kind_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown source kind 'ads1293' \(known: (.*)\)") as exc:
        load_config(str(write_config(tmp_path, **base_config(tmp_path, {"kind": "ads1293"}))))
    known = re.search(r"known: ([^)]*)\)", str(exc.value)).group(1).split(", ")  # type: ignore
    assert known == source_kinds() == sorted((*BUILT_IN, "sim"))


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"device_id": "d", "sample_rate_hz": 250, "broker_host": "h"},
         "missing config key 'source'"),
        ({"device_id": "d", "sample_rate_hz": 250, "broker_host": "h", "source": {},
          "sample_rate": 250}, "unknown config key 'sample_rate'"),
        ({"device_id": "d", "sample_rate_hz": 500, "broker_host": "h",
          "source": {"kind": "file", "path": "x"}}, "sample_rate_hz 500"),
        ({"device_id": "d", "sample_rate_hz": 250, "broker_host": "h", "broker_port": 0,
          "source": {"kind": "file", "path": "x"}}, "broker_port must be in 1..65535"),
        ({"device_id": "d", "sample_rate_hz": 250, "broker_host": "h", "loop_period_ms": "20",
          "source": {"kind": "file", "path": "x"}}, "loop_period_ms must be an int"),
        ({"device_id": "d", "sample_rate_hz": 250, "broker_host": "h", "state_dir": "a",
          "state_path": "b", "source": {"kind": "file", "path": "x"}},
         "state_path and state_dir name the same file"),
        ({"device_id": "d", "sample_rate_hz": 250, "broker_host": "h", "password_file": "p",
          "source": {"kind": "file", "path": "x"}}, "password_file needs a username"),
        ({"device_id": "d", "sample_rate_hz": 250, "broker_host": "h",
          "source": {"path": "x"}}, "unknown source kind None"),
        ({"device_id": "d", "sample_rate_hz": 250, "broker_host": "h",
          "source": {"kind": "file", "path": "x", "loop": True}},
         "source (kind 'file'): unknown key 'loop' (known: kind, path)"),
        ({"device_id": "d", "sample_rate_hz": 250, "broker_host": "h",
          "source": {"kind": "ads1115", "i2c": {"bus": 1}}},
         "source (kind 'ads1115'): missing key 'frontend_gain'"),
        ({"device_id": "d", "sample_rate_hz": 250, "broker_host": "h",
          "source": {"kind": "sim", "scenario": "stable"}},
         "source (kind 'sim'): missing key 'speed'"),
        ({"device_id": "d", "sample_rate_hz": 250, "broker_host": "h", "rhythm": 1,
          "source": {"kind": "file", "path": "x"}}, "rhythm must be true or false"),
        ({"device_id": "d", "sample_rate_hz": 250, "broker_host": "h", "rhythm": True,
          "source": {"kind": "file", "path": "x"}}, "rhythm events need the beat model"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, cfg: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(str(write_config(tmp_path, **cfg)))


ADS1115 = {"kind": "ads1115", "i2c": {"bus": 1}, "frontend_gain": 100, "alert": 17}


@pytest.mark.parametrize(
    ("source", "extra", "message"),
    [
        (dict(ADS1115, i2c={"bus": 1, "speed": 4}), {}, "source.i2c: unknown key 'speed'"),
        (dict(ADS1115, i2c={"freq_hz": 4}), {}, "source.i2c: missing key 'bus'"),
        (dict(ADS1115, i2c={"bus": "1"}), {}, "source.i2c.bus must be an int, got '1'"),
        (dict(ADS1115, address=0x50), {}, "source.address must be in 72..75, got 80"),
        (dict(ADS1115, mux="ain0"), {}, "source.mux must be one of ain0_ain1"),
        (dict(ADS1115, frontend_gain=100.0), {}, "source.frontend_gain must be an int"),
        (dict(ADS1115, full_scale_mv=2048.0), {}, "source.full_scale_mv must be one of"),
        (ADS1115, {"sample_rate_hz": 360}, "sample_rate_hz 360 is not an ADS1115 data rate"),
        ({"kind": "ads1115", "i2c": {"bus": 1}, "frontend_gain": 100}, {},
         "loop_period_ms must be below one sample period (at most 3 ms at 250 Hz), got 20"),
        ({"kind": "ads1292", "spi": {"bus": 0}, "drdy": 25}, {}, "source.spi: missing key 'cs'"),
        ({"kind": "ads1292", "spi": {"bus": 0, "cs": 0}, "drdy": 25, "gain": 5}, {},
         "source.gain must be one of 6, 1, 2, 3, 4, 8, 12, got 5"),
        ({"kind": "ads1292", "spi": {"bus": 0, "cs": 0}, "drdy": 25, "irq": 0}, {},
         "source.irq must be true or false"),
        ({"kind": "max30102", "i2c": {"bus": 1}, "led_current_ma": [7.0, 60]}, {},
         "source.led_current_ma.ir must be a number in 0..51"),
        ({"kind": "max30102", "i2c": {"bus": 1}}, {"sample_rate_hz": 360},
         "sample_rate_hz 360 is not a MAX30102 FIFO rate"),
        ({"kind": "serial", "uart": {"port": "/dev/ttyUSB0", "parity": "N"}}, {},
         "source.uart: unknown key 'parity' (known: baudrate, port, rx, tx)"),
        ({"kind": "file", "path": "no-such.bin"}, {}, "source.path: cannot read 'no-such.bin'"),
        ({"kind": "sim", "scenario": "sepsis2", "speed": 1}, {},
         "source.scenario: unknown scenario 'sepsis2' (known: copd_oxygen"),
        ({"kind": "sim", "scenario": "sepsis", "speed": 0}, {}, "source.speed must be a number"),
        ({"kind": "sim", "scenario": "sepsis", "speed": 100, "sensor": "ads1292"}, {},
         "more than its ring holds"),
    ],
)
def test_bad_source_settings_are_refused_naming_the_key(tmp_path: Path, source: dict,
                                                        extra: dict, message: str) -> None:
    clock = SimClock(0)
    buses = EmulatedBuses()
    with pytest.raises(ValueError, match=re.escape(message)):
        build(base_config(tmp_path, source, **extra), clock=clock, link=MemoryLink(),
              buses=buses)
    assert not (tmp_path / "state").exists()  # nothing started


def test_linux_buses_refuse_what_linux_fixes_and_name_missing_libraries(monkeypatch) -> None:
    linux = LinuxBuses(gpio_chip="/dev/null")
    for settings, message in [
        ({"bus": 1, "scl": 3, "sda": 2}, "source.i2c.scl: on Linux the I2C pins are fixed"),
        ({"bus": 1, "freq_hz": 100000}, "source.i2c.freq_hz: Linux sets the I2C clock at boot"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            linux.i2c(settings)
    with pytest.raises(ValueError, match=re.escape("source.spi.sck: on Linux the SPI pins")):
        linux.spi({"bus": 0, "cs": 0, "sck": 11})
    with pytest.raises(ValueError, match=re.escape("source.uart.tx: on Linux")):
        linux.uart({"port": "/dev/ttyS0", "tx": 14})
    with pytest.raises(ValueError, match=re.escape("source.uart.port: on Linux a device path")):
        linux.uart({"port": 1})
    for module, call, package in [
        ("smbus2", lambda: linux.i2c({"bus": 1}), "pip install smbus2"),
        ("spidev", lambda: linux.spi({"bus": 0, "cs": 0}), "pip install spidev"),
        ("gpiod", lambda: linux.input_pin(17, False), "pip install gpiod"),
        ("serial", lambda: linux.uart({"port": "/dev/ttyS0"}), "pip install pyserial"),
    ]:
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
        with pytest.raises(ImportError, match=re.escape(package)):
            call()


def test_a_part_that_does_not_answer_is_a_one_line_start_up_failure(tmp_path: Path,
                                                                     capsys) -> None:
    spec = dict(ADS1115, address=73)
    clock = SimClock(0)
    buses = emulate_source(dict(ADS1115), clock, 0.0)  # the part answers at 72, not 73
    cfg = write_config(tmp_path, **base_config(tmp_path, spec))
    assert device_main.main(str(cfg), buses=buses) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"medge device: {cfg}: start-up failed: [Errno 19] ADS1115 at 0x49")


# -- state, credentials, TOML ----------------------------------------------------
def test_state_dir_holds_the_state_file_and_is_made(tmp_path: Path) -> None:
    recording = tmp_path / "ecg.bin"
    recording.write_bytes(bytes(2 * FS))
    cfg = base_config(tmp_path, {"kind": "file", "path": str(recording)},
                      state_dir=str(tmp_path / "var" / "lib" / "medge"))
    device = build(cfg, clock=SimClock(0), link=MemoryLink())
    state = json.loads((tmp_path / "var" / "lib" / "medge" / "bed-7.json").read_text())
    assert state["boots"] == device.boot_id == 1


def test_credentials_are_checked_and_kept(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\nignored\n")
    cfg = base_config(tmp_path, {"kind": "file", "path": "x"}, username="bed-7",
                      password_file=str(secret))
    creds = load_credentials(check_config(cfg))
    assert (creds.username, creds.password) == ("bed-7", "s3cret")
    assert "s3cret" not in repr(creds)
    secret.write_text("\n")
    with pytest.raises(ValueError, match=r"the first line .* is empty"):
        load_credentials(cfg)
    cfg["password_file"] = str(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"password_file .*missing.*: cannot read"):
        load_credentials(cfg)
    assert load_credentials(base_config(tmp_path, {"kind": "file", "path": "x"})) is None


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is CPython >= 3.11")
def test_a_toml_config_reads_as_the_same_json_one(tmp_path: Path) -> None:
    toml = tmp_path / "device.toml"
    toml.write_text('device_id = "bed-7"\nsample_rate_hz = 250\nbroker_host = "h"\n'
                    'state_dir = "/var/lib/medge"\n\n[source]\nkind = "ads1115"\n'
                    'frontend_gain = 100\nalert = 17\n\n[source.i2c]\nbus = 1\n')
    as_json = write_config(tmp_path, device_id="bed-7", sample_rate_hz=250, broker_host="h",
                           state_dir="/var/lib/medge",
                           source={"kind": "ads1115", "frontend_gain": 100, "alert": 17,
                                   "i2c": {"bus": 1}})
    assert load_config(str(toml)) == load_config(str(as_json))
    toml.write_text("device_id = \n")
    with pytest.raises(ValueError, match=re.escape("device.toml: not valid TOML")):
        load_config(str(toml))


# -- the README's example -------------------------------------------------------
def readme_example() -> dict[str, Any]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Deploying to a Raspberry Pi", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```json\n(.*?)```", section, re.S)
    assert "python -m firmware.main" in section and "docs/device.md" in section
    return json.loads(block)


def _password_file(tmp_path: Path) -> str:
    """The README example's password file, where the test can have one."""
    path = tmp_path / "bed-12.pw"
    path.write_text("example-password\n")
    return str(path)


def test_readme_example_config_is_valid_and_builds_on_emulated_hardware(
        tmp_path: Path, monkeypatch) -> None:
    cfg = check_config(readme_example())
    assert cfg["source"]["kind"] in BUILT_IN
    assert {"username", "password_file", "incarnation"} <= set(cfg)  # an account, as deployed
    monkeypatch.chdir(REPO)  # "model" is relative to the checkout, as on the Pi
    cfg["state_dir"] = str(tmp_path / "state")
    cfg["password_file"] = _password_file(tmp_path)
    clock = SimClock(1_764_000_000_000)
    buses = emulate_source(cfg["source"], clock, DC_MV * 1e-3, smbus=True)
    device = build(cfg, clock=clock, link=MemoryLink(), buses=buses)
    assert device.model is not None and device.model.classifier is not None
    assert device.rhythm is not None  # rhythm events: on with a model
    got = read_for(device, clock, 1.0, cfg.get("loop_period_ms", 20))
    assert abs(len(got) - FS) <= 2 and got[5:] == [DC_COUNTS] * (len(got) - 5)
    buses = emulate_source(cfg["source"], clock, DC_MV * 1e-3, smbus=True)
    assert build({**cfg, "rhythm": False}, clock=clock, link=MemoryLink(),
                 buses=buses).rhythm is None


def test_readme_example_on_a_machine_without_the_bus_library_is_one_line(
        tmp_path: Path, monkeypatch, capsys) -> None:
    cfg = readme_example()
    cfg["state_dir"] = str(tmp_path / "state")
    cfg["password_file"] = _password_file(tmp_path)
    path = write_config(tmp_path, **cfg)
    monkeypatch.chdir(REPO)
    monkeypatch.setitem(sys.modules, "smbus2", None)
    assert device_main.main(str(path), buses=LinuxBuses()) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == (f"medge device: {path}: I2C on Linux needs the Python package smbus2:"
                    " pip install smbus2 (in the 'device' extra)")


# -- the CLI ---------------------------------------------------------------------
def test_medge_device_run_refuses_a_missing_config_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "host.cli", "device", "run", "--config",
                             str(tmp_path / "nope.json")], capture_output=True, text=True,
                            timeout=60, check=False, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"medge device run: --config: no such file: {tmp_path / 'nope.json'}"]


def test_cli_bad_configs_print_one_line_and_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(cli(), 2, "usage: python -m firmware.main CONFIG")
    assert_one_line_error(cli(str(tmp_path / "none.json")), 2, "cannot read the config")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert_one_line_error(cli(str(bad)), 2, "bad.json: not valid JSON")
    old_readme = write_config(tmp_path, "old.json", device_id="bed-12", sample_rate_hz=250,
                              mains_hz=50, broker_host="192.0.2.10",
                              state_path=str(tmp_path / "st.json"),
                              source={"kind": "file", "path": "ecg.bin"})
    assert_one_line_error(cli(str(old_readme)), 2, "source.path: cannot read 'ecg.bin'")
    sim_cfg = write_config(tmp_path, "sim.json", **base_config(
        tmp_path, {"kind": "sim", "scenario": "stable", "speed": 1}))
    assert_one_line_error(cli(str(sim_cfg)), 2,
                          "unknown source kind 'sim' (known: ads1115, ads1292, file, max30102,"
                          " serial, tmp117) (registered by the simulator: run  python -m"
                          " sim.device_source CONFIG)")
    tmp = write_config(tmp_path, "tmp.json", **base_config(
        tmp_path, {"kind": "tmp117", "i2c": {"bus": 1}}))
    assert_one_line_error(cli(str(tmp)), 2, "'tmp117' is a thermometer")


# -- MicroPython -------------------------------------------------------------------
MPY_SCRIPT = """
import json
import firmware.main as m
from firmware.net.links.memory import MemoryLink

class StepClock:
    def __init__(self):
        self.ms = 0
    def epoch_ms(self):
        return 1764000000000 + self.ms
    def ticks_ms(self):
        return self.ms & 0x3FFFFFFF

with open("/cfg.json", "w") as f:
    f.write(json.dumps({"device_id": "bed-9", "sample_rate_hz": 250, "broker_host": "h",
                        "state_dir": "/flash/state",
                        "source": {"kind": "file", "path": "/ecg.bin"}}))
cfg = m.load_config("/cfg.json")
clock = StepClock()
link = MemoryLink()
dev = m.build(cfg, clock=clock, link=link)
while not dev.source.exhausted():
    clock.ms += 40
    dev.step()
ok = m.run(dev, 1, 2000)
print("reports", dev.reports, "drained", ok, "published", len(link.published))
with open("/flash/state/bed-9.json") as f:
    print("state", f.read())
with open("/bad.json", "w") as f:
    f.write(json.dumps({"device_id": "bed-9", "sample_rate_hz": 250, "broker_host": "h",
                        "source": {"kind": "ads1293"}}))
print("exit", m.main("/bad.json"))
try:
    m.load_config("/bad.json")
except ValueError as exc:
    print("error", exc)
"""


def test_the_entry_point_runs_on_micropython(micropython) -> None:
    data = bytes(2 * FS * 3)
    out = micropython(MPY_SCRIPT, extra_files={"/ecg.bin": data}).splitlines()
    assert out[0] == "reports 3 drained True published 5"  # birth, 3 vitals, shutdown
    assert json.loads(out[1].split(" ", 1)[1])["seq"] == 5
    assert out[2] == "exit 2"
    assert out[3] == ("error /bad.json: source.kind: unknown source kind 'ads1293' (known:"
                      " ads1115, ads1292, file, max30102, serial, tmp117)")


def test_speed_clock_runs_the_patient_faster() -> None:
    from sim.device_source import SpeedClock

    base = SimClock(0)
    fast = SpeedClock(base, 2.5)
    base.advance(400)
    assert fast.elapsed_ms == 1000
    assert math.isclose(fast.ticks_ms(), 1000)


# -- the platform adapters, with fake platform libraries over emulated parts -----
class _Recorder:
    """A ``machine`` class that records how it was made."""

    IN, OUT, PULL_UP = "IN", "OUT", "PULL_UP"

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.args, self.kw = args, kw

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and (other.args, other.kw) == (self.args, self.kw)


def test_machine_buses_make_what_the_settings_say(monkeypatch) -> None:
    from types import ModuleType

    from firmware.hw.bus import MachineBuses

    machine = ModuleType("machine")
    for name in ("Pin", "I2C", "SPI", "UART"):
        setattr(machine, name, type(name, (_Recorder,), {}))
    monkeypatch.setitem(sys.modules, "machine", machine)
    pin = machine.Pin
    buses = MachineBuses()
    i2c = buses.i2c({"bus": 0, "scl": 5, "sda": 4, "freq_hz": 100000})
    assert (i2c.args, i2c.kw) == ((0,), {"freq": 100000, "scl": pin(5), "sda": pin(4)})
    assert buses.i2c({"bus": 1}).kw == {"freq": 400000}
    with pytest.raises(ValueError, match="scl and sda are given together"):
        buses.i2c({"bus": 0, "scl": 5})
    spi, cs = buses.spi({"bus": 1, "cs": 9, "sck": 10, "mosi": 11, "miso": 12})
    assert (spi.args, spi.kw) == ((1,), {"baudrate": 1000000, "polarity": 0, "phase": 0,
                                         "sck": pin(10), "mosi": pin(11), "miso": pin(12)})
    assert (cs.args, cs.kw) == ((9, "OUT"), {"value": 1})
    assert buses.input_pin(17, True).args == (17, "IN", "PULL_UP")
    assert buses.input_pin(18, False).args == (18, "IN", None)
    uart = buses.uart({"port": 1, "baudrate": 9600, "tx": 4, "rx": 5})
    assert (uart.args, uart.kw) == ((1,), {"baudrate": 9600, "tx": pin(4), "rx": pin(5)})
    with pytest.raises(ValueError, match="on MicroPython the UART id"):
        buses.uart({"port": "/dev/ttyUSB0"})
    source = object()
    assert buses.guard(source) is source


def _fake_spidev(wired: dict[tuple[int, int], tuple[Any, Any]]) -> Any:
    """``spidev`` whose ``SpiDev`` talks to emulated SPI parts, chip select per transfer."""
    from types import ModuleType

    class SpiDev:
        def open(self, bus: int, dev: int) -> None:
            if (bus, dev) not in wired:
                raise FileNotFoundError(2, f"/dev/spidev{bus}.{dev}")
            self._spi, self._cs = wired[(bus, dev)]
            self.max_speed_hz = 500000
            self._mode = 0

        @property
        def mode(self) -> int:
            return self._mode

        @mode.setter
        def mode(self, value: int) -> None:
            self._mode = value
            self._spi.init(self.max_speed_hz, polarity=value >> 1, phase=value & 1)

        def xfer2(self, data: list[int]) -> list[int]:
            out = bytearray(len(data))
            self._cs.value(0)
            self._spi.write_readinto(bytes(data), out)
            self._cs.value(1)
            return list(out)

        def writebytes2(self, data: Any) -> None:
            self._cs.value(0)
            self._spi.write(bytes(data))
            self._cs.value(1)

    module = ModuleType("spidev")
    module.SpiDev = SpiDev  # type: ignore[attr-defined]
    return module


def _fake_gpiod(pins: dict[int, Any]) -> tuple[Any, Any]:
    """``gpiod`` (v2 API) whose lines are emulated pins; edges queue as kernel events."""
    import threading
    from enum import Enum
    from types import ModuleType, SimpleNamespace

    class Value(Enum):
        INACTIVE = 0
        ACTIVE = 1

    line = ModuleType("gpiod.line")
    line.Value = Value  # type: ignore[attr-defined]
    line.Direction = SimpleNamespace(INPUT="input")  # type: ignore[attr-defined]
    line.Edge = SimpleNamespace(FALLING="falling")  # type: ignore[attr-defined]
    line.Bias = SimpleNamespace(PULL_UP="pull-up", AS_IS="as-is")  # type: ignore[attr-defined]

    class Request:
        def __init__(self, number: int) -> None:
            self._pin = pins[number]
            self._events: list[int] = []
            self._ready = threading.Event()
            self._pin.irq(self._edge, trigger=self._pin.IRQ_FALLING)

        def _edge(self, pin: Any) -> None:
            self._events.append(1)
            self._ready.set()

        def get_value(self, number: int) -> Value:
            return Value.ACTIVE if self._pin.value() else Value.INACTIVE

        def wait_edge_events(self, timeout: float) -> bool:
            return self._ready.wait(timeout)

        def read_edge_events(self) -> list[int]:
            self._ready.clear()
            events, self._events = self._events, []
            return events

        def release(self) -> None:
            pass

    gpiod = ModuleType("gpiod")
    gpiod.line = line  # type: ignore[attr-defined]
    gpiod.LineSettings = lambda **kw: kw  # type: ignore[attr-defined]
    gpiod.request_lines = (  # type: ignore[attr-defined]
        lambda chip, consumer, config: Request(next(iter(config))))
    return gpiod, line


@pytest.mark.parametrize("irq", [False, True], ids=["polled DRDY", "DRDY edge thread"])
def test_linux_buses_run_the_ads1292_over_spidev_and_gpiod(tmp_path: Path, monkeypatch,
                                                           irq: bool) -> None:
    spec = {"kind": "ads1292", "spi": {"bus": 0, "cs": 1}, "drdy": 25, "irq": irq}
    clock = SimClock(1_764_000_000_000)
    emulated = emulate_source(spec, clock, DC_MV * 1e-3)
    [part] = emulated.parts
    gpiod, line = _fake_gpiod(emulated.pins)
    monkeypatch.setitem(sys.modules, "spidev", _fake_spidev(emulated.spi_buses))
    monkeypatch.setitem(sys.modules, "gpiod", gpiod)
    monkeypatch.setitem(sys.modules, "gpiod.line", line)
    linux = LinuxBuses(gpio_chip="/dev/gpiochip0")
    cfg = base_config(tmp_path, spec, **({} if irq else {"loop_period_ms": 2}))
    device = build(cfg, clock=clock, link=MemoryLink(), buses=linux)
    from array import array

    buf = array("h", bytes(128))
    got: list[int] = []
    try:
        for _ in range(FS // 2):  # half a second, one conversion (4 ms) at a time
            clock.advance(4)
            if irq:
                with linux.lock:  # the part's time passes: DRDY falls, an edge event
                    part.update()
                deadline = time.monotonic() + 2
                while not (n := device.source.read_samples(buf, 64)):
                    assert time.monotonic() < deadline, "the edge thread read nothing"
                    time.sleep(0.0005)
            else:
                n = device.source.read_samples(buf, 64)
            got.extend(buf[:n])
        [drdy] = linux.lines
    finally:
        linux.close()
    assert got[2:] == [DC_COUNTS] * (len(got) - 2)
    assert len(got) == FS // 2
    assert (drdy.handler_errors, drdy.missed_edges) == (0, 0)
