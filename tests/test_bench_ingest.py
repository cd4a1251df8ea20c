"""A tiny run of the ingest benchmark's code (host/bench_ingest.py): the pre-built
messages are valid, and every consumer stores every published message exactly
once.  Counts only; the speed is ``make bench``'s business."""

from __future__ import annotations

import json

import pytest

from host import bench_ingest
from host.broker.launch import find_mosquitto
from host.services import messages


def test_prebuilt_messages_are_valid_with_contiguous_seqs() -> None:
    topic, template = bench_ingest.message_template("bench-0007")
    for seq in (0, 1, 2, 10**6):
        payload = bench_ingest.render(template, seq, 1_700_000_000_123)
        got = messages.check(topic, payload)
        assert isinstance(got, messages.Accepted), got
        assert got.payload["seq"] == seq and got.payload["ts_ms"] == 1_700_000_000_123
        assert got.device_id == "bench-0007"
    assert json.loads(payload)["classes"]  # the full message a device with a model sends


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")
@pytest.mark.parametrize("generator", ["raw", "paho"])
def test_small_bench_stores_everything_once(generator: str) -> None:
    consumers = ["ingest-1", "ingest-3", "peer"] if generator == "raw" else ["ingest-1"]
    result = bench_ingest.bench(["throughput"], consumers, duration_s=3.0, rate=100.0,
                                n_devices=20, clients=2, generator=generator)
    runs = result["runs"]
    assert [r["consumer"] for r in runs] == consumers
    for r in runs:
        assert 250 <= r["published"] <= 310, r
        assert r["acked"] == r["published"], r
        assert r["stored_rows"] == r["published"], r
        assert r["lost"] == 0 and r["seq_gaps"] == 0 and r["duplicates"] == 0, r
        if r["consumer"] != "peer":
            assert r["stored_counter"] == r["published"] and r["rejected"] == 0, r
        assert r["latency_samples"] > 0 and r["latency_ms_p99"] is not None, r
    if generator == "raw":
        assert "ratio_to_peer" in result["summary"]["throughput/ingest-1"]
