"""The device loop inside the real MicroPython VM publishes what CPython publishes.

One script (below) runs the firmware device loop over a 60-second synthetic
ECG with the in-memory MQTT link, a broker outage in the middle, and a clean
shutdown, and prints every message the "broker" accepted.  It runs once in
the MicroPython VM (Node.js) and once under CPython; the outputs must be equal
byte for byte.
"""

from __future__ import annotations

import io
import json
import runpy
from array import array
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np

from sim.ecgsyn import EcgsynParams, ecgsyn
from sim.sources import mv_to_counts

FS = 250

SCRIPT = """
from array import array
from firmware.device import Device, DeviceConfig
from firmware.net.links.memory import MemoryLink
from firmware.hw.sources import ArraySource
from firmware.hw.state import MemoryState

class StepClock:
    def __init__(self):
        self.ms = 0
    def epoch_ms(self):
        return 1764000000000 + self.ms
    def ticks_ms(self):
        return self.ms & 0x3FFFFFFF

with open(ECG_PATH, "rb") as f:
    samples = array("h", f.read())
import firmware.device  # the platform's resources differ by nature: fixed for the compare
_resources = (firmware.device.mem_free, firmware.device.storage_free_kb)
firmware.device.mem_free = lambda: 4096
firmware.device.storage_free_kb = lambda path: 512
clock = StepClock()
link = MemoryLink()
source = ArraySource(samples, sample_rate_hz=250, clock=clock)
dev = Device(DeviceConfig("dev-mpy-1", 250, patient_id="p-1", incarnation="Inc-07_a"), source,
             link, clock, MemoryState())
while not source.exhausted():
    clock.ms += 40
    if clock.ms == 20000:
        link.online = False
        link.drop()
    elif clock.ms == 31000:
        link.online = True
    elif clock.ms == 10000:  # commands: answered, duplicate, rejected, not answerable
        cmd = '{"v":1,"type":"cmd","device_id":"dev-mpy-1","ts_ms":1,"cmd_id":"%s",' \
              '"name":"%s","args":%s}'
        for c in (cmd % ("a1", "ping", "{}"), cmd % ("a1", "ping", "{}"),
                  cmd % ("a2", "set_config", '{"patient_id":"p-2"}'),
                  cmd % ("a3", "set_config", '{"report_period_ms":1001}'),
                  cmd % ("a4", "fly", "{}"), cmd % ("a5", "ecg_strip", '{"seconds":2}'),
                  "{oops"):
            link.inbox.append(("medge/v1/dev/dev-mpy-1/cmd", c.encode()))
    dev.step()
dev.stop()
for _ in range(50):
    clock.ms += 40
    dev.service()
print("will", link.will[0], link.will[1].decode())
for topic, payload, retain in link.published:
    print(topic, 1 if retain else 0, payload.decode())
print("beats", dev.beats, "reports", dev.reports, "failures", dev.connect_failures)
firmware.device.mem_free, firmware.device.storage_free_kb = _resources  # in this process too
"""


def ecg_bytes(seconds: int) -> bytes:
    ecg = ecgsyn(seconds, EcgsynParams(sample_rate_hz=FS, heart_rate_mean_bpm=68),
                 np.random.default_rng(3))
    return array("h", mv_to_counts(ecg.signal_mv).tobytes()).tobytes()


def test_device_loop_publishes_identical_bytes_on_micropython(micropython, tmp_path: Path) -> None:
    data = ecg_bytes(60)
    vm_out = micropython('ECG_PATH = "/data/ecg.bin"\n' + SCRIPT,
                         extra_files={"/data/ecg.bin": data})

    path = tmp_path / "ecg.bin"
    path.write_bytes(data)
    script = tmp_path / "device_run.py"
    script.write_text(f"ECG_PATH = {str(path)!r}\n" + SCRIPT)
    buf = io.StringIO()
    with redirect_stdout(buf):
        runpy.run_path(str(script), run_name="__main__")
    cpython_out = buf.getvalue()

    assert vm_out == cpython_out
    lines = cpython_out.splitlines()
    messages = [json.loads(line.split(" ", 2)[2]) for line in lines[1:-1]]
    vitals = [m for m in messages if m["type"] == "vitals"]
    assert len(vitals) == 60
    assert sorted({m["seq"] for m in messages}) == list(range(max(m["seq"] for m in messages) + 1))
    assert any(m["hr_bpm"] for m in vitals)
    assert {m["incarnation"] for m in messages} == {"Inc-07_a"}
    assert lines[-1].startswith("beats ")
    acks = [(m["cmd_id"], m["result"], m.get("reason", "")) for m in messages
            if m["type"] == "ack"]
    assert [a[:2] for a in acks] == [("a1", "ok"), ("a2", "ok"), ("a3", "rejected"),
                                     ("a4", "rejected"), ("a5", "ok")]
    ping = next(m for m in messages if m["type"] == "ack" and m["cmd_id"] == "a1")["data"]
    assert (ping["mem_free"], ping["storage_free_kb"], ping["dropped"]) == (4096, 512, 0)
    strip = next(m for m in messages if m["type"] == "ack" and m["cmd_id"] == "a5")["data"]
    assert strip["seconds"] == 2 and len(strip["samples_b64"]) == 4 * -(-2 * 500 // 3)
    assert "whole number of samples" in acks[2][2] and "unknown command" in acks[3][2]
    births = [m for m in messages if m["type"] == "status" and m["state"] == "online"]
    assert births[-1]["patient_id"] == "p-2"


BROKER_SCRIPT = """
from firmware.device import Device, DeviceConfig
from firmware.net.links.umqtt import UmqttLink
from firmware.hw.sources import ArraySource
from firmware.hw.state import MemoryState


class FakeBroker:
    # A scripted MQTT peer: CONNACK for CONNECT, PUBACK for each QoS 1 PUBLISH.
    def __init__(self):
        self.rx = bytearray()   # bytes the client wrote, not yet parsed
        self.tx = bytearray()   # bytes queued for the client to read
        self.packets = []       # every complete packet the client sent

    def write(self, buf):
        self.rx.extend(bytes(buf))
        self._parse()
        return len(buf)

    def _parse(self):
        while len(self.rx) >= 2:
            n, mult, i = 0, 1, 1
            while True:
                if i >= len(self.rx):
                    return
                b = self.rx[i]
                n += (b & 127) * mult
                mult *= 128
                i += 1
                if not b & 128:
                    break
            if len(self.rx) < i + n:
                return
            pkt = bytes(self.rx[: i + n])
            self.rx = self.rx[i + n :]
            self.packets.append(pkt)
            kind = pkt[0] & 0xF0
            if kind == 0x10:
                self.tx.extend(b"\\x20\\x02\\x00\\x00")
            elif kind == 0x30 and (pkt[0] >> 1) & 3 == 1:
                tlen = (pkt[i] << 8) | pkt[i + 1]
                pid = pkt[i + 2 + tlen : i + 4 + tlen]
                self.tx.extend(b"\\x40\\x02" + pid)
            elif kind == 0x80:  # SUBSCRIBE: grant QoS 1
                self.tx.extend(b"\\x90\\x03" + pkt[i : i + 2] + b"\\x01")
            elif kind == 0xC0:
                self.tx.extend(b"\\xd0\\x00")

    def read(self, n):
        if not self.tx:
            return None
        out = bytes(self.tx[:n])
        self.tx = self.tx[n:]
        return out

    def setblocking(self, flag):
        pass

    def close(self):
        pass


class StepClock:
    def __init__(self):
        self.ms = 0
    def epoch_ms(self):
        return 1764000000000 + self.ms
    def ticks_ms(self):
        return self.ms


peer = FakeBroker()
clock = StepClock()
samples = [0] * (250 * 5)
link = UmqttLink("broker.invalid", 1883, "dev-mpy-2", sock_factory=lambda host, port: peer)
dev = Device(DeviceConfig("dev-mpy-2", 250), ArraySource(samples), link, clock, MemoryState())
dev.step()
for _ in range(5):
    clock.ms += 100
    dev.service()
dev.stop()
dev.service()
dev.service()
link.disconnect()
for pkt in peer.packets:
    print("".join("%02x" % b for b in pkt))
print("drained", dev.drained(), "reports", dev.reports)
"""


def test_umqtt_board_path_writes_identical_bytes_on_micropython(micropython) -> None:
    """The MicroPython board path (UmqttLink over firmware/net/mqtt_client.py) in the real VM:
    every MQTT packet it writes equals CPython's, byte for byte."""
    vm_out = micropython(BROKER_SCRIPT)
    buf = io.StringIO()
    with redirect_stdout(buf):
        exec(compile(BROKER_SCRIPT, "broker_script", "exec"), {"__name__": "__main__"})
    assert vm_out == buf.getvalue()
    lines = vm_out.splitlines()
    assert lines[-1] == "drained True reports 5"
    packets = [bytes.fromhex(line) for line in lines[:-1]]
    assert packets[0][0] == 0x10 and b"medge/v1/dev/dev-mpy-2/status" in packets[0]  # will
    publishes = [p for p in packets if p[0] & 0xF0 == 0x30]
    assert len(publishes) == 7  # birth, 5 vitals, shutdown
    subscribes = [p for p in packets if p[0] == 0x82]
    assert len(subscribes) == 1 and subscribes[0].endswith(b"medge/v1/dev/dev-mpy-2/cmd\x01")
    assert all(p[0] & 0x06 == 0x02 for p in publishes)  # QoS 1
    assert packets[-1] == b"\xe0\x00"  # DISCONNECT


def test_the_resources_ping_reports_are_read_in_micropython(micropython) -> None:
    out = micropython("from firmware.hw import compat\n"
                      "print(type(compat.mem_free()).__name__, compat.mem_free() > 0)\n"
                      "kb = compat.storage_free_kb('/')\n"
                      "print(kb is None or kb >= 0)")
    assert out.split() == ["int", "True", "True"]
