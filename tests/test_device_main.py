"""``python -m firmware.main CONFIG``: the Raspberry Pi entry point, against a real broker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from firmware.main import load_config
from host.broker.launch import Broker
from host.services.ingest import Ingest
from host.services.store import Store
from sim.ecgsyn import EcgsynParams, ecgsyn
from sim.sources import mv_to_counts


def write_config(tmp_path: Path, **cfg: object) -> Path:
    path = tmp_path / "device.json"
    path.write_text(json.dumps(cfg))
    return path


def test_device_main_replays_a_recording_to_the_store(tmp_path: Path) -> None:
    ecg = ecgsyn(6, EcgsynParams(sample_rate_hz=250, heart_rate_mean_bpm=66),
                 np.random.default_rng(5))
    recording = tmp_path / "ecg.bin"
    recording.write_bytes(mv_to_counts(ecg.signal_mv).astype("<i2").tobytes())
    db = tmp_path / "medge.db"
    with Broker("auto", data_dir=tmp_path / "broker") as broker:
        ingest = Ingest(db, broker.host, broker.port)
        ingest.start()
        try:
            assert ingest.wait_connected(10)
            cfg = write_config(tmp_path, device_id="bed-12", sample_rate_hz=250,
                               patient_id="p-12", broker_host=broker.host,
                               broker_port=broker.port, state_path=str(tmp_path / "st.json"),
                               source={"kind": "file", "path": str(recording)})
            result = subprocess.run([sys.executable, "-m", "firmware.main", str(cfg)],
                                    capture_output=True, text=True, timeout=60, check=False)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "6 reports, all delivered" in result.stdout
            deadline = time.monotonic() + 10
            while ingest.stats()["stored"] < 8 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            ingest.stop()
    with Store(db, readonly=True) as store:
        assert store.seqs("bed-12") == list(range(8))  # birth, 6 vitals, shutdown
        [device] = store.devices()
        assert (device.state, device.state_reason, device.patient_id) == (
            "offline", "shutdown", "p-12")
        assert device.hr_bpm is not None and abs(device.hr_bpm - 66) <= 4
    assert json.loads((tmp_path / "st.json").read_text())["seq"] == 8


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"device_id": "d", "sample_rate_hz": 250, "broker_host": "h"}, "missing config key"),
        ({"device_id": "d", "sample_rate_hz": 250, "broker_host": "h", "source": {},
          "sample_rate": 250}, "unknown config key 'sample_rate'"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, cfg: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(str(write_config(tmp_path, **cfg)))
