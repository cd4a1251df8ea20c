"""The device loop on CPython with the in-memory link: reporting, outbox, reconnect."""

from __future__ import annotations

import json

import numpy as np
import pytest

from firmware.device import Device, DeviceConfig
from firmware.hw.sources import ArraySource
from firmware.hw.state import FileState, MemoryState, SeqCounter
from firmware.net.links.memory import MemoryLink
from firmware.net.outbox import Outbox
from sim.ecgsyn import EcgsynParams, ecgsyn
from sim.sources import mv_to_counts

FS = 250


class StepClock:
    def __init__(self) -> None:
        self.ms = 0

    def epoch_ms(self) -> int:
        return 1_700_000_000_000 + self.ms

    def ticks_ms(self) -> int:
        return self.ms & ((1 << 30) - 1)


def synthetic_counts(seconds: float, hr_bpm: float, seed: int = 1) -> list[int]:
    ecg = ecgsyn(
        seconds,
        EcgsynParams(sample_rate_hz=FS, heart_rate_mean_bpm=hr_bpm),
        np.random.default_rng(seed),
    )
    return [int(v) for v in mv_to_counts(ecg.signal_mv)]


@pytest.mark.parametrize("hr_bpm", [45, 72, 130])
def test_device_heart_rate_on_synthetic_ecg(hr_bpm: float) -> None:
    link = MemoryLink()
    dev = run_device(link, synthetic_counts(30, hr_bpm))
    vitals = [json.loads(p) for _, p, _ in link.published if b'"vitals"' in p]
    rates = [v["hr_bpm"] for v in vitals[5:]]
    assert all(r is not None and abs(r - hr_bpm) <= 3 for r in rates), rates
    assert all(v["signal"] == "good" for v in vitals[5:])
    assert abs(dev.beats - 30 * hr_bpm / 60) <= 3


def test_flat_line_reports_lead_off_and_no_rate() -> None:
    link = MemoryLink()
    run_device(link, [100] * (FS * 10))
    vitals = [json.loads(p) for _, p, _ in link.published if b'"vitals"' in p]
    assert [v["beats"] for v in vitals] == [0] * 10
    assert all(v["hr_bpm"] is None and v["quality"] == "unreliable" for v in vitals)
    assert vitals[-1]["signal"] == "lead_off"


def test_outbox_drops_oldest_when_full_and_counts() -> None:
    box = Outbox(3)
    for i in range(5):
        box.push("t", str(i).encode(), False)
    assert (len(box), box.dropped) == (3, 2)
    sent: list[bytes] = []
    box.send_some(lambda t, p, r: sent.append(p) or len(sent), max_inflight=10)
    assert sent == [b"2", b"3", b"4"]
    box.ack(2)  # out-of-order ack: nothing leaves until the head is acknowledged
    assert len(box) == 3
    box.ack(1)
    assert len(box) == 1
    box.ack(99)  # unknown tokens are ignored
    box.requeue_inflight()
    box.send_some(lambda t, p, r: sent.append(p) or 7, max_inflight=10)
    assert sent[-1] == b"4"


def test_seq_counter_reserves_blocks_and_never_reuses(tmp_path) -> None:
    path = str(tmp_path / "state.json")
    seq = SeqCounter(FileState(path), block=4)
    assert [seq.next() for _ in range(6)] == [0, 1, 2, 3, 4, 5]
    # Power cut: no close().  The next boot skips the reserved block.
    seq2 = SeqCounter(FileState(path), block=4)
    first = seq2.next()
    assert first >= 6
    seq2.close()
    assert SeqCounter(FileState(path), block=4).next() == first + 1


def run_device(
    link: MemoryLink, samples: list[int], outage: tuple[int, int] | None = None, step_ms: int = 50,
    incarnation: str | None = None,
) -> Device:
    clock = StepClock()
    src = ArraySource(samples, sample_rate_hz=FS, clock=clock)
    dev = Device(
        DeviceConfig("dev-1", FS, patient_id="p-1", backoff_max_ms=1000,
                     incarnation=incarnation),
        src,
        link,
        clock,
        MemoryState(),
    )
    while not src.exhausted():
        clock.ms += step_ms
        if outage and clock.ms == outage[0]:
            link.online = False
            link.drop()
        if outage and clock.ms == outage[1]:
            link.online = True
        dev.step()
    dev.stop()
    for _ in range(100):
        clock.ms += step_ms
        dev.service()
    return dev


def test_device_publishes_birth_then_one_vitals_per_second() -> None:
    link = MemoryLink()
    dev = run_device(link, synthetic_counts(20, 75))
    docs = [json.loads(p) for _, p, _ in link.published]
    assert docs[0]["state"] == "online" and link.published[0][2] is True
    vitals = [d for d in docs if d["type"] == "vitals"]
    assert len(vitals) == 20 == dev.reports
    assert [d["seq"] for d in docs] == list(range(len(docs)))
    assert docs[-1] == {**docs[-1], "state": "offline", "reason": "shutdown"}
    good = [d["hr_bpm"] for d in vitals if d["quality"] == "good"]
    assert len(good) >= 15 and all(abs(hr - 75) <= 4 for hr in good)
    assert json.loads(link.will[1])["reason"] == "lost"


def test_the_provisioned_incarnation_is_in_every_sequenced_message() -> None:
    link = MemoryLink()
    run_device(link, synthetic_counts(5, 75), incarnation="9f2c41d07ab35e68")
    docs = [json.loads(p) for _, p, _ in link.published]
    assert len(docs) >= 6 and {d["incarnation"] for d in docs} == {"9f2c41d07ab35e68"}
    assert json.loads(link.will[1])["incarnation"] == "9f2c41d07ab35e68"
    plain = MemoryLink()
    run_device(plain, synthetic_counts(2, 75))
    assert all("incarnation" not in json.loads(p) for _, p, _ in plain.published)
    for bad in ("", "x" * 65, "a b", "ü1", 7):
        with pytest.raises(ValueError, match="incarnation"):
            DeviceConfig("dev-1", 250, incarnation=bad)


def test_outage_loses_nothing() -> None:
    link = MemoryLink()
    dev = run_device(link, synthetic_counts(30, 80), outage=(5000, 12000))
    docs = [json.loads(p) for _, p, _ in link.published]
    seqs = sorted({d["seq"] for d in docs})
    assert seqs == list(range(dev.seq.peek()))  # every number delivered at least once
    assert link.connects >= 2
    assert dev.connect_failures >= 2  # backoff kept trying during the outage
    assert dev.outbox.dropped == 0 and dev.drained()


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="sample_rate_hz"):
        DeviceConfig("dev-1", None)
    with pytest.raises(ValueError, match="device id"):
        DeviceConfig("Dev/1", 250)
    with pytest.raises(ValueError, match="report_period_ms"):
        DeviceConfig("dev-1", 250, report_period_ms=0)


def test_config_refuses_a_backoff_cap_ticks_cannot_measure() -> None:
    with pytest.raises(ValueError, match="backoff_max_ms must be <= 268435456"):
        DeviceConfig("dev-1", 250, backoff_max_ms=1 << 29)
    assert DeviceConfig("dev-1", 250, backoff_max_ms=1 << 28).backoff_max_ms == 1 << 28


def test_config_refuses_an_unsupported_rate_listing_the_supported_ones() -> None:
    with pytest.raises(ValueError, match=r"sample_rate_hz 500 Hz is not supported; "
                                         r"supported rates: 250, 360 Hz"):
        DeviceConfig("dev-1", 500)
