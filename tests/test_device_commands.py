"""Device commands (firmware/net/commands.py, firmware/device.py) on CPython with the
in-memory link: one ack per command id, rejections with reasons, set_config applied,
kept across a restart and checked, reboot asked of the main loop; every ack valid
against the v1 schema."""

from __future__ import annotations

import json

import pytest
from test_device_umqtt import StepClock

from firmware.device import Device, DeviceConfig
from firmware.hw.sources import ArraySource
from firmware.hw.state import FileState, MemoryState
from firmware.net.commands import RECENT_IDS
from firmware.net.links.memory import MemoryLink
from host.services.messages import Accepted, check

FS = 250
DEV = "bed-7"
CMD_TOPIC = f"medge/v1/dev/{DEV}/cmd"


def cmd(cmd_id: str, name: str, args: dict | None = None, **extra) -> bytes:
    doc = {"v": 1, "type": "cmd", "device_id": DEV, "cmd_id": cmd_id, "ts_ms": 1,
           "name": name, "args": {} if args is None else args, **extra}
    return json.dumps(doc).encode()


class PacedSource:
    """Flat-line samples, only as many as the test has let through (``allowed``)."""

    def __init__(self) -> None:
        self.allowed = 0

    def read_samples(self, buf, max_count: int) -> int:
        n = min(max_count, self.allowed)
        for i in range(n):
            buf[i] = 0
        self.allowed -= n
        return n


def make(state=None) -> tuple[Device, MemoryLink, StepClock]:
    link, clock = MemoryLink(), StepClock()
    dev = Device(DeviceConfig(DEV, FS, patient_id="p-1"), PacedSource(),
                 link, clock, MemoryState() if state is None else state)
    dev.service()  # connect, subscribe, birth
    return dev, link, clock


def deliver(dev: Device, link: MemoryLink, *payloads: bytes) -> list[dict]:
    """Put payloads on the cmd topic; return the acks the device published for them."""
    before = len(link.published)
    link.inbox.extend((CMD_TOPIC, p) for p in payloads)
    dev.service()
    dev.service()  # the acks go out
    out = []
    for topic, payload, retain in link.published[before:]:
        if topic.endswith("/ack"):
            got = check(topic, payload)
            assert isinstance(got, Accepted), got  # the host's schema accepts every ack
            assert not retain
            out.append(json.loads(payload))
    return out


def test_the_device_subscribes_to_its_own_cmd_topic_on_every_connect() -> None:
    dev, link, _ = make()
    assert link.subscriptions == [CMD_TOPIC]
    link.drop()
    dev.service()
    assert link.connects == 2 and link.subscriptions == [CMD_TOPIC]


def test_ping_answers_ok_once_per_cmd_id_even_when_delivered_twice() -> None:
    dev, link, _ = make()
    acks = deliver(dev, link, cmd("c1", "ping"), cmd("c1", "ping"))
    assert len(acks) == 1
    ack = acks[0]
    assert (ack["cmd_id"], ack["result"]) == ("c1", "ok")
    assert ack["data"]["fw_version"] == dev.cfg.fw_version and ack["data"]["boot_id"] == 1
    assert "seq" in ack and ack["device_id"] == DEV
    assert ack["data"]["mem_free"] is None  # CPython: no gc.mem_free
    assert ack["data"]["storage_free_kb"] > 0 and ack["data"]["connect_failures"] == 0
    assert dev.commands.duplicates == 1
    assert deliver(dev, link, cmd("c1", "ping")) == []  # later too


@pytest.mark.parametrize("payload, reason", [
    (cmd("c2", "selfdestruct"), "unknown command 'selfdestruct'"),
    (cmd("c3", "ping", expires_ms=1_764_000_000_000 - 5), "expired 5 ms ago"),
    (cmd("c4", "ping", {"x": 1}), "bad args: ping takes no args"),
    (cmd("c5", "set_config", {"sample_rate_hz": 360}), "bad args: 'sample_rate_hz' cannot be set"),
    (cmd("c6", "set_config", {"report_period_ms": 1002}), "whole number of samples"),
    (cmd("c7", "set_config", {}), "nothing to set"),
])
def test_bad_commands_are_rejected_with_the_reason_and_change_nothing(payload, reason) -> None:
    dev, link, _ = make()
    acks = deliver(dev, link, payload)
    assert len(acks) == 1 and acks[0]["result"] == "rejected", acks
    assert reason in acks[0]["reason"]
    assert dev.cfg.report_period_ms == 1000 and dev.commands.answered["rejected"] == 1


def test_payloads_that_cannot_be_answered_are_counted_and_dropped() -> None:
    dev, link, _ = make()
    other = json.loads(cmd("c8", "ping"))
    other["device_id"] = "bed-8"
    acks = deliver(dev, link, b"{not json", b"[1]", json.dumps({"name": "ping"}).encode(),
                   json.dumps(other).encode(), b"x" * 5000)
    assert acks == []
    assert dev.commands.invalid == 5 and dev.commands.last_invalid.startswith("payload longer")
    assert deliver(dev, link, cmd("c9", "ping"))[0]["result"] == "ok"  # still answering


def test_set_config_applies_from_the_next_window_and_holds_after_a_restart(tmp_path) -> None:
    state = FileState(str(tmp_path / "state.json"))
    dev, link, clock = make(state)
    dev.source.allowed = FS * 5 // 2
    dev.step()  # two windows, and the third half full when the command comes
    ack = deliver(dev, link, cmd("c10", "set_config",
                                 {"report_period_ms": 2000, "patient_id": "p-2"}))[0]
    assert ack["result"] == "ok" and ack["data"] == {"report_period_ms": 2000,
                                                     "patient_id": "p-2"}
    births = [json.loads(p) for t, p, _ in link.published if t.endswith("/status")]
    assert births[-1]["patient_id"] == "p-2"  # the retained status names the new patient
    dev.source.allowed = FS * 11 // 2
    dev.step()
    windows = [json.loads(p)["window_ms"] for t, p, _ in link.published
               if t.endswith("/vitals")]
    assert windows == [1000, 1000, 1000, 2000, 2000], windows  # the open window kept 1 s
    again = Device(DeviceConfig(DEV, FS, patient_id="p-1"), ArraySource([]), MemoryLink(),
                   clock, FileState(str(tmp_path / "state.json")))
    assert (again.cfg.report_period_ms, again.cfg.patient_id) == (2000, "p-2")
    assert again.commands.names() == ["ecg_strip", "ping", "reboot", "set_config"]
    assert deliver(again, again.link, cmd("c10", "set_config", {"patient_id": "p-3"})) == []


def test_a_saved_config_that_no_longer_fits_is_dropped_not_fatal() -> None:
    state = MemoryState({"config": {"report_period_ms": 1000}})
    dev = Device(DeviceConfig(DEV, 360), ArraySource([]), MemoryLink(), StepClock(), state)
    assert dev.cfg.report_period_ms == 1000  # fits at 360 Hz too: kept
    state = MemoryState({"config": {"report_period_ms": 1001}})
    dev = Device(DeviceConfig(DEV, 250), ArraySource([]), MemoryLink(), StepClock(), state)
    assert dev.cfg.report_period_ms == 1000 and state.load("config") == {}


def test_reboot_acks_first_then_asks_the_main_loop_to_restart() -> None:
    dev, link, _ = make()
    assert not dev.restart_requested
    ack = deliver(dev, link, cmd("c11", "reboot"))[0]
    assert ack["result"] == "ok" and dev.restart_requested


def test_a_failing_handler_is_answered_failed_and_the_device_runs_on() -> None:
    dev, link, _ = make()

    def broken(args, cmd):
        raise RuntimeError("sensor bus busy")

    dev.commands.register("selftest", broken)
    ack = deliver(dev, link, cmd("c12", "selftest"))[0]
    assert (ack["result"], ack["reason"]) == ("failed", "RuntimeError: sensor bus busy")
    assert deliver(dev, link, cmd("c13", "ping"))[0]["result"] == "ok"


def test_only_the_last_ids_are_remembered() -> None:
    dev, link, _ = make()
    ids = [f"k{i}" for i in range(RECENT_IDS + 1)]
    assert len(deliver(dev, link, *[cmd(i, "ping") for i in ids])) == RECENT_IDS + 1
    assert dev.state.load("cmd_ids") == ids[1:]
    assert deliver(dev, link, cmd(ids[-1], "ping")) == []
    assert len(deliver(dev, link, cmd(ids[0], "ping"))) == 1  # forgotten: answered again


def test_the_main_loop_stops_cleanly_after_reboot_and_the_readme_unit_restarts_it() -> None:
    import re
    from pathlib import Path

    from firmware.main import EXIT_RESTART, run

    class Trickle(PacedSource):  # a block per pass, for ever: only the command stops it
        fresh = False

        def read_samples(self, buf, max_count: int) -> int:
            self.fresh = not self.fresh  # samples, then "none ready", then samples ...
            self.allowed = 64 if self.fresh else 0
            return super().read_samples(buf, max_count)

    dev, link, _ = make()
    dev.source = Trickle()
    link.inbox.append((CMD_TOPIC, cmd("c14", "reboot")))
    assert run(dev, loop_period_ms=1) is True  # drained: the ack went out before the stop
    kinds = [(t.rsplit("/", 1)[1], json.loads(p).get("state")) for t, p, _ in link.published]
    assert ("ack", None) in kinds and kinds[-1] == ("status", "offline")
    assert dev.reports < 5  # it stopped at once
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    [unit] = re.findall(r"```ini\n(.*?)```", readme, re.S)
    assert "ExecStart=" in unit and "-m firmware.main" in unit
    assert "Restart=always" in unit and f"exit code {EXIT_RESTART}" in readme


def test_ecg_strip_returns_the_last_seconds_and_their_beats() -> None:
    import base64
    from array import array

    from test_device import synthetic_counts

    counts = synthetic_counts(15, 75)
    link, clock = MemoryLink(), StepClock()
    dev = Device(DeviceConfig(DEV, FS), ArraySource(counts), link, clock, MemoryState())
    assert deliver(dev, link, cmd("s0", "ecg_strip"))[0]["reason"] == \
        "bad args: no ECG samples yet"
    dev.step()  # all 15 s
    ack = deliver(dev, link, cmd("s1", "ecg_strip", {"seconds": 4}))[0]
    assert ack["result"] == "ok"
    data = ack["data"]
    from firmware.params import ECG_COUNTS_PER_MV

    assert (data["fs_hz"], data["seconds"], data["counts_per_mv"]) == (FS, 4, ECG_COUNTS_PER_MV)
    raw = array("h", base64.b64decode(data["samples_b64"]))
    assert list(raw) == counts[-4 * FS:]  # exactly the last 4 s, oldest first
    beats = [s for s, label in data["beats"] if label == "?"]
    assert 4 <= len(beats) <= 6 and all(0 <= s < 4 * FS for s in beats)  # 75 bpm, 4 s
    peaks = [s for s in range(1, 4 * FS - 1) if raw[s] == max(raw[max(0, s - 20):s + 20])]
    assert all(min(abs(b - p) for p in peaks) <= 10 for b in beats)  # on the R peaks
    for i, (args, why) in enumerate((({"seconds": 11}, "seconds must be an int in 1..10"),
                                     ({"secs": 1}, "'secs' is not an argument"))):
        assert why in deliver(dev, link, cmd(f"bad{i}", "ecg_strip", args))[0]["reason"]
    full = deliver(dev, link, cmd("s2", "ecg_strip"))[0]
    assert full["data"]["seconds"] == 10
    assert len(full["data"]["samples_b64"]) == 4 * -(-2 * 2500 // 3)  # base64 of 2,500 int16
    assert len(json.dumps(full)) < 16 * 1024  # under ingest's payload limit at 250 Hz
