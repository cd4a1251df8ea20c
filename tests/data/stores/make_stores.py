"""Make the committed fixture stores with the store code of earlier releases, taken
from git history (run from the repository root; rewrites the .db files):

    python tests/data/stores/make_stores.py

``schema1.db``: the store of commit 8ffb5d8 (host/store.py, schema 1, before issue 10).
``schema2.db``: the store of commit d86f5e1 (host/services/store.py, schema 2: the
release before versioned migrations), including a reset unit whose new
incarnation reuses seqs (vitals kept in ``messages`` only under schema 2).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
T0 = 1_700_000_000_000
RELEASES = {"schema1.db": ("8ffb5d8", "host/store.py"),
            "schema2.db": ("d86f5e1", "host/services/store.py")}


def old_store(commit: str, path: str):
    source = subprocess.run(["git", "show", f"{commit}:{path}"], check=True,
                            capture_output=True, text=True).stdout
    tmp = Path(tempfile.mkdtemp()) / f"store_{commit}.py"
    tmp.write_text(source)
    spec = importlib.util.spec_from_file_location(f"store_{commit}", tmp)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def birth(device: str, seq: int, ts: int, boot: int, **extra: object) -> dict:
    return {"v": 1, "type": "status", "device_id": device, "ts_ms": ts, "seq": seq,
            "state": "online", "fw_version": "0.1.0", "model_version": "m1",
            "patient_id": f"p-{device}", "sample_rate_hz": 250, "boot_id": boot, **extra}


def vitals(device: str, seq: int, ts: int, hr: int | None, **extra: object) -> dict:
    return {"v": 1, "type": "vitals", "device_id": device, "ts_ms": ts, "seq": seq,
            "window_ms": 8000, "hr_bpm": hr, "beats": 0 if hr is None else hr // 8,
            "quality": "good" if hr is not None else "unreliable", **extra}


def fill(store, schema: int) -> None:
    for n, device in enumerate(("dev-a", "dev-b", "dev-c")):
        t = T0 + n * 100_000
        store.add("status", device, birth(device, 0, t, 1), t + 5)
        for seq in range(1, 5):
            hr = None if (device, seq) == ("dev-b", 3) else 60 + 3 * n + seq
            store.add("vitals", device, vitals(device, seq, t + seq * 8000, hr), t + seq * 8000)
    store.add("status", "dev-c", {"v": 1, "type": "status", "device_id": "dev-c",
                                  "ts_ms": T0 + 240_000, "state": "offline",
                                  "reason": "lost", "boot_id": 1}, T0 + 240_010)
    store.add_rejection("schema", "hr_bpm: 900 is greater than the maximum of 300",
                        "medge/v1/dev/dev-a/vitals", b'{"hr_bpm": 900}', T0 + 50)
    store.add_rejection("not_json", "Expecting value", "medge/v1/dev/dev-b/vitals",
                        b"\xff\xfe", T0 + 60)
    if schema >= 2:  # dev-a reset: a new incarnation counting from seq 0 again
        t = T0 + 1_000_000
        store.add("status", "dev-a", birth("dev-a", 0, t, 1, incarnation="i2"), t)
        for seq in (1, 2):
            store.add("vitals", "dev-a", vitals("dev-a", seq, t + seq * 8000, 90 + seq,
                                                incarnation="i2"), t + seq * 8000)
        store.add_rejection("topic", "not a medge topic", "x/y", b"{}", T0 + 70)


def main() -> None:
    for name, (commit, path) in RELEASES.items():
        module = old_store(commit, path)
        db = HERE / name
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        store = module.Store(db)
        fill(store, module.SCHEMA_VERSION)
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.db.execute("PRAGMA journal_mode=DELETE")
        store.close()
        print(f"{db}: schema {module.SCHEMA_VERSION} ({commit}:{path})")


if __name__ == "__main__":
    main()
