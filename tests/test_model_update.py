"""Signed beat-model updates (firmware/ml/p256.py, firmware/ml/update.py,
host/services/ota.py): the device's P-256 check agrees with ``cryptography`` (on
CPython and in the MicroPython VM); an update is staged, self-tested and switched,
or refused with the reason and the old model kept; rollback; the slot survives a
restart and a corrupt one does not."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from firmware.hw.state import FileState
from firmware.ml import p256
from firmware.ml.infer import ModelSlot
from firmware.ml.update import ModelUpdater
from host.services import ota

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "beatnet"


def pub_bytes(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962,
                                         serialization.PublicFormat.UncompressedPoint)


def test_p256_verify_agrees_with_cryptography() -> None:
    for _ in range(8):
        key = ec.generate_private_key(ec.SECP256R1())
        pub = p256.public_key(pub_bytes(key))
        msg = os.urandom(57)
        sig = bytes.fromhex(ota.sign(key, msg))
        assert p256.verify_message(pub, msg, sig)
        assert not p256.verify_message(pub, msg + b"!", sig)
        assert not p256.verify_message(pub, msg, sig[:-1] + bytes([sig[-1] ^ 1]))
        other = p256.public_key(pub_bytes(ec.generate_private_key(ec.SECP256R1())))
        assert not p256.verify_message(other, msg, sig)
    assert not p256.verify_message(pub, msg, bytes(64))  # r = s = 0
    with pytest.raises(ValueError, match="not a point of P-256"):
        p256.public_key(b"\x04" + bytes(64))
    with pytest.raises(ValueError, match="65 bytes"):
        p256.public_key(pub_bytes(key)[:-1])


def test_p256_verify_in_the_micropython_vm(micropython) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    msg = b"medge-model-update/1\nv2\n"
    sig = ota.sign(key, msg)
    script = f"""
import binascii
from firmware.ml import p256
pub = p256.public_key(binascii.unhexlify({pub_bytes(key).hex()!r}))
sig = binascii.unhexlify({sig!r})
print(p256.verify_message(pub, {msg!r}, sig), p256.verify_message(pub, {msg!r} + b"x", sig))
"""
    assert micropython(script).split() == ["True", "False"]


@pytest.fixture()
def keyed(tmp_path: Path):
    key = ota.load_key(ota.init_key(tmp_path / "ota").parent)
    return key, pub_bytes(key)


def variant(tmp_path: Path, version: str, **meta_changes) -> Path:
    """The shipped model under another version (same weights), as a model path."""
    base = tmp_path / version
    base.with_suffix(".tflite").write_bytes(SHIPPED.with_suffix(".tflite").read_bytes())
    meta = json.loads(SHIPPED.with_suffix(".json").read_text())
    meta["version"] = version
    meta.update(meta_changes)
    base.with_suffix(".json").write_text(json.dumps(meta))
    return base


def updater(tmp_path: Path, pub: bytes | None) -> tuple[ModelUpdater, ModelSlot]:
    slot = ModelSlot("python")
    assert slot.install_files(str(SHIPPED) + ".tflite", str(SHIPPED) + ".json")
    state = FileState(str(tmp_path / "dev.json"))
    return ModelUpdater(slot, state, str(tmp_path / "dev.model"), factory=str(SHIPPED),
                        key=pub, runtime="python"), slot


def install(up: ModelUpdater, update: ota.Update, chunk: int = 2048) -> dict:
    up.begin(update.begin)
    for c in update.chunks(chunk):
        up.chunk(c)
    return up.commit({"version": update.version})


def test_an_update_is_staged_self_tested_switched_and_rolled_back(tmp_path, keyed) -> None:
    key, pub = keyed
    up, slot = updater(tmp_path, pub)
    factory = slot.version
    update = ota.prepare(variant(tmp_path, "beatnet-test-2"), key)
    assert len(update.chunks(2048)) == 7  # 14,160 bytes
    begun = up.begin(update.begin)
    assert begun == {"slot": "a", "next_offset": 0}
    chunks = update.chunks(2048)
    assert up.chunk(chunks[0]) == {"next_offset": 2048}
    assert up.chunk(chunks[0]) == {"next_offset": 2048}  # a repeat: where we are
    with pytest.raises(ValueError, match="chunk at 6144, expected 2048"):
        up.chunk(chunks[3])
    for c in chunks[1:]:
        up.chunk(c)
    assert slot.version == factory  # nothing switched before the commit
    assert up.commit({"version": "beatnet-test-2"}) == {"model_version": "beatnet-test-2",
                                                        "slot": "a"}
    assert slot.version == "beatnet-test-2" and up.state.load("model_slot") == "a"
    # a restart loads the slot the state names
    again, slot2 = updater(tmp_path, pub)
    assert again.boot() and slot2.version == "beatnet-test-2"
    # the next update goes to the other slot; rollback returns to the one before
    third = ota.prepare(variant(tmp_path, "beatnet-test-3"), key)
    assert install(again, third)["slot"] == "b"
    assert again.rollback({}) == {"model_version": "beatnet-test-2", "slot": "a", "from": "b"}
    with pytest.raises(ValueError, match="no previous model"):
        again.rollback({})
    # an update begun over the slot kept for rollback (a in use, b kept, after one more
    # switch) clears it: a failed update then cannot roll back onto half a file
    install(again, ota.prepare(variant(tmp_path, "beatnet-test-8"), key))  # b, prev a
    assert (again.active(), again.state.load("model_prev")) == ("b", "a")
    again.begin(ota.prepare(variant(tmp_path, "beatnet-test-9"), key).begin)  # into a
    with pytest.raises(ValueError, match="no previous model"):
        again.rollback({})
    # corrupt the slot in use: the next boot keeps the factory model and says why
    (tmp_path / f"dev.model.{again.active()}.tflite").write_bytes(b"junk")
    third_boot, slot3 = updater(tmp_path, pub)
    assert not third_boot.boot() and slot3.version == factory
    assert "refused at boot" in slot3.last_error and third_boot.active() is None


def test_refusals_change_nothing(tmp_path, keyed) -> None:
    key, pub = keyed
    up, slot = updater(tmp_path, pub)
    factory = slot.version
    good = ota.prepare(variant(tmp_path, "beatnet-test-4"), key)
    forged = ota.prepare(variant(tmp_path, "beatnet-test-4"),
                         ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ValueError, match="bad signature"):
        up.begin(forged.begin)
    tampered = dict(good.begin, meta=good.begin["meta"].replace('"N"', '"X"'))
    with pytest.raises(ValueError, match="bad signature"):
        up.begin(tampered)  # the metadata is signed too
    with pytest.raises(ValueError, match="no update in progress"):
        up.chunk(good.chunks(2048)[0])
    # the bytes differ from the signed sha256: refused at the commit, old model kept
    up.begin(good.begin)
    for c in good.chunks(2048):
        raw = bytearray(base64.b64decode(c["data"]))
        raw[0] ^= 0xFF
        up.chunk(dict(c, data=base64.b64encode(bytes(raw)).decode()))
    with pytest.raises(ValueError, match="sha256 of the received model"):
        up.commit({"version": "beatnet-test-4"})
    # a self-test the model does not reproduce (signed: the check is the device's)
    bad = ota.prepare(variant(tmp_path, "beatnet-test-5"), key)
    meta = dict(bad.meta, selftest=dict(bad.meta["selftest"],
                                        logits=[v + 1 for v in bad.meta["selftest"]["logits"]]))
    from firmware.ml.infer import sha256_hex
    from firmware.ml.update import manifest

    text = json.dumps(meta)
    begin = dict(bad.begin, meta=text, signature=ota.sign(key, manifest(
        "beatnet-test-5", bad.begin["sha256"], sha256_hex(text.encode()))))
    with pytest.raises(ValueError, match="self-test failed: selftest logits"):
        install(up, ota.Update("beatnet-test-5", bad.model, meta, begin))
    assert slot.version == factory and up.active() is None and up.refused == 5
    assert not (tmp_path / "dev.model.a.tflite").exists()
    (tmp_path / "u").mkdir()
    unkeyed, _ = updater(tmp_path / "u", None)
    with pytest.raises(ValueError, match="no update key configured"):
        unkeyed.begin(good.begin)


def test_an_update_installs_in_the_micropython_vm(micropython, tmp_path, keyed) -> None:
    key, pub = keyed
    update = ota.prepare(variant(tmp_path, "beatnet-test-6"), key)
    cmds = [("begin", update.begin), *[("chunk", c) for c in update.chunks(2048)],
            ("commit", {"version": update.version})]
    script = f"""
import binascii, json
from firmware.hw.state import FileState
from firmware.ml.infer import ModelSlot
from firmware.ml.update import ModelUpdater
slot = ModelSlot("python")
print(slot.install_files("/data/m.tflite", "/data/m.json"))
up = ModelUpdater(slot, FileState("/data/s.json"), "/data/u", factory="/data/m",
                  key=binascii.unhexlify({pub.hex()!r}), runtime="python")
with open("/data/cmds.json") as f:
    cmds = json.loads(f.read())
for name, args in cmds:
    out = getattr(up, name)(args)
print(out["model_version"], out["slot"], slot.version)
"""
    out = micropython(script, extra_files={
        "/data/m.tflite": SHIPPED.with_suffix(".tflite").read_bytes(),
        "/data/m.json": SHIPPED.with_suffix(".json").read_bytes(),
        "/data/cmds.json": json.dumps(cmds).encode()})
    assert out.split() == ["True", "beatnet-test-6", "a", "beatnet-test-6"]


def test_the_device_config_takes_the_update_key_and_boots_the_updated_slot(
        tmp_path, keyed) -> None:
    from test_device_main import base_config

    from firmware.main import build
    from firmware.net.links.memory import MemoryLink

    key, pub = keyed
    raw = tmp_path / "ecg.raw"
    raw.write_bytes(bytes(2 * 250))
    cfg = base_config(tmp_path, {"kind": "file", "path": str(raw)}, model=str(SHIPPED),
                      mains_hz=50, journal=False, ota_public_key=pub.hex())
    dev = build(dict(cfg), link=MemoryLink())
    assert dev.updater is not None and dev.updater.key == p256.public_key(pub)
    assert "model_commit" in dev.commands.names()
    install(dev.updater, ota.prepare(variant(tmp_path, "beatnet-test-7"), key))
    again = build(dict(cfg), link=MemoryLink())  # a restart: the updated slot is loaded
    assert again.model.version == "beatnet-test-7"
    for bad in ("04" + "00" * 64, "zz", pub.hex()[:-2]):
        with pytest.raises(ValueError, match="ota_public_key: "):
            build(dict(cfg, ota_public_key=bad), link=MemoryLink())
