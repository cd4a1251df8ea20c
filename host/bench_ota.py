"""``make bench`` (model updates): what a signed update costs the device.

Measured in one run:

- **verify**: the device's ECDSA P-256 check (firmware/ml/p256.py) of one update
  signature, the median of ``--repeats`` (20) on CPython, beside the peer, the same
  check by ``cryptography`` (OpenSSL) in the same run (the ratio is what the
  plain-integer code costs against C), and once in the MicroPython VM (timed inside
  the VM with ``ticks_ms``: the VM's start-up is not in the figure);
- **install**: the whole update in the VM, ``model_begin`` (signature), the 7
  chunks of the shipped 14 KB model, ``model_commit`` (SHA-256, load checks, the
  self-test invoke), timed inside the VM.

CPU-bound; on a machine shared with other work the VM figures include the
neighbours (wall time inside the VM).

    .venv/bin/python -m host.bench_ota [--repeats 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "beatnet"

_VM_SCRIPT = """
import binascii, json, time
from firmware.hw.state import FileState
from firmware.ml import p256
from firmware.ml.infer import ModelSlot
from firmware.ml.update import ModelUpdater, manifest
with open("/data/cmds.json") as f:
    cmds = json.loads(f.read())
key = binascii.unhexlify(%(key)r)
begin = cmds[0][1]
signed = manifest(begin["version"], begin["sha256"],
                  binascii.hexlify(__import__("hashlib").sha256(begin["meta"].encode())
                                   .digest()).decode())
pub = p256.public_key(key)
sig = binascii.unhexlify(begin["signature"])
t = time.ticks_ms()
ok = p256.verify_message(pub, signed, sig)
verify_ms = time.ticks_diff(time.ticks_ms(), t)
slot = ModelSlot("python")
slot.install_files("/data/m.tflite", "/data/m.json")
up = ModelUpdater(slot, FileState("/data/s.json"), "/data/u", factory="/data/m", key=key,
                  runtime="python")
t = time.ticks_ms()
for name, args in cmds:
    getattr(up, name)(args)
install_ms = time.ticks_diff(time.ticks_ms(), t)
print("RESULT", 1 if ok else 0, verify_ms, install_ms, slot.version)
"""


def bench(repeats: int = 20, micropython: bool = True) -> dict[str, Any]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from firmware.ml import p256
    from firmware.ml.infer import sha256_hex
    from firmware.ml.update import manifest
    from host.services import ota

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ota"
        ota.init_key(folder)
        key = ota.load_key(folder)
        pub_hex = ota.public_key_hex(key)
        meta = json.loads(SHIPPED.with_suffix(".json").read_text())
        meta["version"] = "beatnet-bench"
        base = Path(tmp) / "beatnet-bench"
        base.with_suffix(".tflite").write_bytes(SHIPPED.with_suffix(".tflite").read_bytes())
        base.with_suffix(".json").write_text(json.dumps(meta))
        update = ota.prepare(base, key)
    begin = update.begin
    signed = manifest(begin["version"], begin["sha256"], sha256_hex(begin["meta"].encode()))
    sig = bytes.fromhex(begin["signature"])
    pub = p256.public_key(bytes.fromhex(pub_hex))
    ours, peer = [], []
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    for _ in range(repeats):
        t = time.perf_counter()
        assert p256.verify_message(pub, signed, sig)
        ours.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        key.public_key().verify(der, signed, ec.ECDSA(hashes.SHA256()))
        peer.append((time.perf_counter() - t) * 1000)
    res: dict[str, Any] = {
        "verify_ms_cpython": round(statistics.median(ours), 2),
        "verify_ms_cryptography": round(statistics.median(peer), 3),
        "ratio_vs_cryptography": round(statistics.median(ours) / statistics.median(peer), 1),
        "model_bytes": len(update.model), "chunks": len(update.chunks(2048)),
    }
    if micropython:
        try:
            sys.path.insert(0, str(REPO / "tests"))
            import mpyvm

            cmds = [("begin", begin), *[("chunk", c) for c in update.chunks(2048)],
                    ("commit", {"version": update.version})]
            out = mpyvm.run_micropython(_VM_SCRIPT % {"key": pub_hex}, extra_files={
                "/data/m.tflite": SHIPPED.with_suffix(".tflite").read_bytes(),
                "/data/m.json": SHIPPED.with_suffix(".json").read_bytes(),
                "/data/cmds.json": json.dumps(cmds).encode()}, timeout_s=600)
            line = [x for x in out.splitlines() if x.startswith("RESULT ")][-1].split()
            if line[1] != "1" or line[4] != "beatnet-bench":
                raise RuntimeError(f"the VM's update did not verify and install: {line}")
            res["verify_ms_micropython"] = int(line[2])
            res["install_ms_micropython"] = int(line[3])
        except Exception as exc:  # VM missing or failing: still report CPython
            res["micropython_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--skip-micropython", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    res = bench(args.repeats, not args.skip_micropython)
    if args.json:
        print(json.dumps({"model_update": res}, indent=2))
        return 0
    print("medge bench: signed model update (firmware/ml/p256.py, firmware/ml/update.py)")
    print(f"  signature check, CPython (plain integers): {res['verify_ms_cpython']:.2f} ms "
          f"median of {args.repeats}")
    print(f"  peer, cryptography (OpenSSL), same run:    {res['verify_ms_cryptography']:.3f} ms"
          f"  (ours / peer = {res['ratio_vs_cryptography']:g}x)")
    if "verify_ms_micropython" in res:
        print(f"  signature check, MicroPython VM:           {res['verify_ms_micropython']} ms")
        print(f"  whole update in the VM ({res['model_bytes']} B, {res['chunks']} chunks, "
              f"self-test): {res['install_ms_micropython']} ms")
    else:
        print(f"  MicroPython VM: not run ({res.get('micropython_error', 'skipped')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
