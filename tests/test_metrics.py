"""``medge ingest --metrics-port``: the worker's counters in the Prometheus text
format (host/services/metrics.py), parsed back with prometheus_client's own parser."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from firmware.net import protocol
from firmware.net.wire import encode
from host.services import metrics
from host.services.messages import Reason

MEDGE = str(Path(sys.executable).with_name("medge"))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(port: int, host: str = "127.0.0.1") -> dict:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return samples(resp.read().decode())


STATS = {"received": 10, "stored": 6, "duplicates": 1, "conflicts": 1, "ignored": 0,
         "rejected": {"schema": 2}, "errors": 3, "lag_ms": 250, "queued": 4,
         "connected": True, "storage": "ok", "storage_failing_since_ms": None}


def test_render_exposes_every_counter_and_every_reason() -> None:
    got = samples(metrics.render(lambda: STATS, {"client_id": "w1", "group": ""}).decode())
    assert got[("medge_ingest_received_total", ())] == 10
    assert got[("medge_ingest_stored_total", ())] == 6
    assert got[("medge_ingest_duplicates_total", ())] == 1
    assert got[("medge_ingest_conflicts_total", ())] == 1
    assert got[("medge_ingest_storage_errors_total", ())] == 3
    assert got[("medge_ingest_lag_seconds", ())] == 0.25
    assert got[("medge_ingest_queued", ())] == 4
    assert got[("medge_ingest_connected", ())] == 1
    assert got[("medge_ingest_storage_failing", ())] == 0
    assert got[("medge_ingest_info", (("client_id", "w1"), ("group", "")))] == 1
    for reason in Reason:  # every reason has a series from the start, 0 until it happens
        value = got[("medge_ingest_rejected_total", (("reason", reason.value),))]
        assert value == (2 if reason is Reason.SCHEMA else 0)


def test_storage_failing_is_a_gauge_with_its_start_time() -> None:
    failing = {**STATS, "connected": False, "storage_failing_since_ms": 1_700_000_000_500}
    got = samples(metrics.render(lambda: failing).decode())
    assert got[("medge_ingest_storage_failing", ())] == 1
    assert got[("medge_ingest_storage_failing_since_seconds", ())] == 1_700_000_000.5
    assert got[("medge_ingest_connected", ())] == 0


def test_parse_address() -> None:
    assert metrics.parse_address("9108") == ("127.0.0.1", 9108)
    assert metrics.parse_address("0.0.0.0:9108") == ("0.0.0.0", 9108)
    assert metrics.parse_address("[::1]:9108") == ("::1", 9108)
    for bad in ("", "x", "70000", "-1", "host:"):
        with pytest.raises(ValueError):
            metrics.parse_address(bad)


def test_server_serves_a_live_ingest_on_loopback(tmp_path: Path) -> None:
    from host.services.ingest import Ingest

    ingest = Ingest(tmp_path / "m.db", "127.0.0.1", 1)  # handle() needs no broker
    try:
        with metrics.MetricsServer(ingest.stats, 0) as server:
            assert server.host == "127.0.0.1"
            before = scrape(server.port)
            assert before[("medge_ingest_stored_total", ())] == 0
            doc = protocol.vitals("dev-1", 0, 1_700_000_000_000, 1000, 72, 1, "good")
            assert ingest.handle(protocol.topic("dev-1", "vitals"), encode(doc)) == "stored"
            assert ingest.handle(protocol.topic("dev-1", "vitals"), encode(doc)) == "duplicate"
            assert ingest.handle(protocol.topic("dev-1", "vitals"), b"{").startswith("rejected")
            after = scrape(server.port)  # read at scrape time, nothing cached
            assert after[("medge_ingest_received_total", ())] == 3
            assert after[("medge_ingest_stored_total", ())] == 1
            assert after[("medge_ingest_duplicates_total", ())] == 1
            assert after[("medge_ingest_rejected_total", (("reason", "not_json"),))] == 1
    finally:
        ingest.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_metrics_port_against_mosquitto(tmp_path: Path) -> None:
    from host.broker.launch import Broker, find_mosquitto

    if find_mosquitto() is None:
        pytest.skip("mosquitto not installed")
    port = _free_port()
    with Broker("mosquitto", data_dir=tmp_path / "broker", persistence=False) as broker:
        proc = subprocess.Popen(
            [MEDGE, "ingest", "--port", str(broker.port), "--db", str(tmp_path / "m.db"),
             "--client-id", "metrics-test", "--metrics-port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={k: v for k, v in os.environ.items() if k != "MEDGE_DB"})
        try:
            deadline = time.monotonic() + 20
            got: dict = {}
            while time.monotonic() < deadline:
                try:
                    got = scrape(port)
                    if got.get(("medge_ingest_connected", ())) == 1:
                        break
                except OSError:
                    pass
                time.sleep(0.1)
            assert got.get(("medge_ingest_connected", ())) == 1, got
            assert got[("medge_ingest_info", (("client_id", "metrics-test"), ("group", "")))] == 1
            import paho.mqtt.client as mqtt

            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="metrics-pub")
            pub.connect(broker.host, broker.port)
            pub.loop_start()
            topic = protocol.topic("dev-1", "vitals")
            for seq in range(5):
                doc = protocol.vitals("dev-1", seq, 1_700_000_000_000, 1000, 72, 1, "good")
                pub.publish(topic, encode(doc), qos=1).wait_for_publish(5)
            pub.publish(topic, json.dumps({"v": 1}), qos=1).wait_for_publish(5)
            pub.disconnect()
            pub.loop_stop()
            while time.monotonic() < deadline + 10:
                got = scrape(port)
                if got[("medge_ingest_received_total", ())] >= 6:
                    break
                time.sleep(0.1)
            assert got[("medge_ingest_stored_total", ())] == 5
            assert got[("medge_ingest_rejected_total", (("reason", "type_mismatch"),))] == 1
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert "Traceback" not in out


def test_cli_metrics_port_taken_or_bad_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MEDGE_DB"}
    bad = subprocess.run([MEDGE, "ingest", "--db", str(tmp_path / "m.db"), "--metrics-port",
                          "http"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 or "--metrics-port" in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = subprocess.run(
            [MEDGE, "ingest", "--port", "1", "--db", str(tmp_path / "m.db"), "--metrics-port",
             str(taken.getsockname()[1])], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--metrics-port" in lines[0] and "Traceback" not in proc.stderr, \
        proc.stderr
