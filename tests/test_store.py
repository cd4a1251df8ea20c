"""The SQLite store: idempotent on (device, seq), device state from status messages."""

from __future__ import annotations

from pathlib import Path

from firmware.net import protocol
from host.services.store import Store

T0 = 1_700_000_000_000


def birth(seq: int, boot: int = 1) -> dict:
    return protocol.birth(
        "dev-1",
        seq,
        T0,
        {
            "fw_version": "0.1.0",
            "model_version": "m1",
            "patient_id": "p-1",
            "sample_rate_hz": 250,
            "boot_id": boot,
        },
    )


def test_duplicates_are_stored_once(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        doc = protocol.vitals("dev-1", 3, T0, 1000, 70, 1, protocol.QUALITY_GOOD)
        assert store.add("vitals", "dev-1", doc, T0) is True
        assert store.add("vitals", "dev-1", doc, T0 + 5) is False
        assert store.vitals_count("dev-1") == 1
        assert store.seqs("dev-1") == [3]


def test_state_follows_birth_will_and_shutdown(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        store.add("status", "dev-1", birth(0), T0)
        [row] = store.devices()
        assert (row.state, row.fw_version, row.model_version, row.patient_id) == (
            "online",
            "0.1.0",
            "m1",
            "p-1",
        )
        store.add("status", "dev-1", protocol.offline("dev-1", T0, "lost", boot_id=1), T0 + 1)
        assert store.devices()[0].state == "offline"
        assert store.devices()[0].state_reason == "lost"
        store.add("status", "dev-1", birth(1, boot=2), T0 + 2)
        assert store.devices()[0].state == "online"
        # A re-delivered (retained) old birth changes nothing.
        store.add("status", "dev-1", protocol.offline("dev-1", T0, "shutdown", seq=2), T0 + 3)
        store.add("status", "dev-1", birth(1, boot=2), T0 + 4)
        assert store.devices()[0].state == "offline"
        assert store.devices()[0].last_seen_ms == T0 + 4


def test_seq_gaps(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        for seq in (0, 1, 2, 5, 6, 9):
            store.add(
                "vitals",
                "dev-1",
                protocol.vitals("dev-1", seq, T0, 1000, None, 0, "unreliable"),
                T0,
            )
        assert store.seq_gaps("dev-1") == [(3, 4), (7, 8)]


def test_readonly_store_requires_an_existing_file(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(FileNotFoundError):
        Store(tmp_path / "missing.db", readonly=True)
