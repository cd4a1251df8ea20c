"""Signed beat-model updates from the host: the fleet's update key, signing, and
staged pushes (``medge fleet ota``).

The update key is an ECDSA P-256 key pair made once (:func:`init_key`): the private
key stays on the host (``<db>.d/ota/update-key.pem``, mode 0600; the CA's folder
layout, :func:`host.services.tlsca.default_dir`), the public key goes into every
device's config (``ota_public_key``, 130 hex digits: :func:`public_key_hex`).  A
device refuses any update not signed by it (firmware/ml/update.py), so a host
account on the broker, which may send commands, still cannot install a model.

:func:`prepare` reads a model (``PATH.tflite`` + ``PATH.json``), checks it as the
device will (``firmware.ml.infer.BeatClassifier``), adds a self-test (three
beat/rr inputs and the int8 logits this model gives them: the device must
reproduce them bit for bit before it switches) and signs the manifest.

A push (:func:`push`) runs a campaign over devices in order, one at a time:
``model_begin``, the chunks, ``model_commit``, each answered before the next; the
first device that fails stops the campaign (a canary: push to one device, then
to the rest).  The campaign and one job per device are recorded in
``ota_campaigns``/``ota_jobs`` (state ``pending`` -> ``installed`` | ``failed``
with the device's reason) and the audit log (``ota.push``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from host.services import audit
from host.services.store import now_ms, transaction
from host.services.tlsca import _key_pem, _write

KEY_NAME = "update-key.pem"


class OtaError(ValueError):
    """An update that cannot be prepared or sent."""


def default_dir(db: object) -> Path:
    """``<db>.d/ota`` beside a SQLite store (``var/ota`` for PostgreSQL)."""
    from host.services.tlsca import default_dir as ca_dir

    return ca_dir(db).with_name("ota")


def init_key(folder: Path) -> Path:
    """Make the update key in ``folder`` (refused when one exists); its path."""
    from cryptography.hazmat.primitives.asymmetric import ec

    path = folder / KEY_NAME
    if path.exists():
        raise OtaError(f"{path}: an update key exists (not replaced: every device "
                       "trusts it)")
    _write(path, _key_pem(ec.generate_private_key(ec.SECP256R1())), private=True)
    return path


def load_key(folder: Path) -> Any:
    from cryptography.hazmat.primitives import serialization

    path = folder / KEY_NAME
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise OtaError(f"{path}: no update key (medge fleet ota key --init)") from None


def public_key_hex(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.X962,
                                         serialization.PublicFormat.UncompressedPoint).hex()


def sign(key: Any, message: bytes) -> str:
    """ECDSA P-256 / SHA-256 of ``message`` as hex ``r || s`` (what the device reads)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex()


@dataclass(frozen=True)
class Update:
    version: str
    model: bytes
    meta: dict[str, Any]
    begin: dict[str, Any]  # the model_begin args (signed; ``meta`` as its JSON text)

    def chunks(self, size: int) -> list[dict[str, Any]]:
        return [{"version": self.version, "offset": off,
                 "data": base64.b64encode(self.model[off:off + size]).decode()}
                for off in range(0, len(self.model), size)]


def _selftest(model: bytes, meta: dict[str, Any]) -> dict[str, Any]:
    """Three inputs (flat, a synthetic beat, its mirror) and the logits they give."""
    from array import array

    from firmware.ml.infer import BeatClassifier, ModelError
    from firmware.params import BEAT_CHANNELS, BEAT_WINDOW_POINTS, RR_FEATURES

    try:
        clf = BeatClassifier(model, meta, "python")
    except ModelError as exc:
        raise OtaError(f"the model fails the device's checks: {exc}") from None
    n = BEAT_WINDOW_POINTS * BEAT_CHANNELS
    beat = [max(-127, min(127, (32 * ((i * 37) % 23 - 11)) // 11)) for i in range(n)]
    rr = [(i * 13) % 41 - 20 for i in range(RR_FEATURES)]
    # One vector set (the device's selftest is one invoke); the beat is not flat so
    # every layer's arithmetic takes part.
    logits = list(clf.logits(array("b", beat), array("b", rr)))
    return {"beat": beat, "rr": rr, "logits": logits}


def prepare(model_path: Path, key: Any) -> Update:
    """Read, check, self-test and sign ``model_path`` (``.tflite`` + ``.json``)."""
    from firmware.ml.infer import sha256_hex
    from firmware.ml.update import MODEL_MAX, manifest

    base = str(model_path)
    for ext in (".tflite", ".json"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    try:
        model = Path(base + ".tflite").read_bytes()
        meta = json.loads(Path(base + ".json").read_text())
    except OSError as exc:
        raise OtaError(f"{base}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise OtaError(f"{base}.json: not JSON ({exc})") from None
    if len(model) > MODEL_MAX:
        raise OtaError(f"{base}.tflite: {len(model)} bytes, the device takes {MODEL_MAX}")
    meta = dict(meta)
    meta.pop("selftest", None)
    meta["selftest"] = _selftest(model, meta)
    digest = hashlib.sha256(model).hexdigest()
    if meta.get("sha256") != digest:
        raise OtaError(f"{base}.json: sha256 does not match {base}.tflite")
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"))
    signed = manifest(meta["version"], digest, sha256_hex(text.encode()))
    begin = {"version": meta["version"], "size_bytes": len(model), "sha256": digest,
             "meta": text, "signature": sign(key, signed)}
    return Update(meta["version"], model, meta, begin)


#: ``send(device_id, name, args) -> ack`` (the ack dict, or None: no answer).
Sender = Callable[[str, str, dict[str, Any]], "dict[str, Any] | None"]


def _job(store: Any, campaign: str, device_id: str, state: str, detail: str | None,
         attempts: int) -> None:
    with transaction(store) as db:
        db.execute("UPDATE ota_jobs SET state = ?, detail = ?, attempts = ?, updated_ms = ? "
                   "WHERE campaign_id = ? AND device_id = ?",
                   (state, detail, attempts, now_ms(), campaign, device_id))


def push(store: Any, update: Update, devices: list[str], send: Sender, actor: str, *,
         chunk_bytes: int = 2048, progress: Callable[[str, str], None] | None = None
         ) -> dict[str, Any]:
    """Install ``update`` on ``devices`` one after another (module docstring): the
    campaign's document, with each device's outcome."""
    from firmware.ml.update import CHUNK_MAX

    chunk_bytes = min(chunk_bytes, CHUNK_MAX)
    created = now_ms()
    campaign = f"ota-{created}-{hashlib.sha256(update.model).hexdigest()[:8]}"
    rollout = {"devices": devices, "order": "one at a time, stop at the first failure"}
    with transaction(store) as db:
        db.execute("INSERT INTO ota_campaigns (campaign_id, artifact_kind, version, sha256, "
                   "signature, created_ms, created_by, state, rollout) VALUES "
                   "(?, 'model', ?, ?, ?, ?, ?, 'running', ?)",
                   (campaign, update.version, update.begin["sha256"],
                    update.begin["signature"], created, actor, json.dumps(rollout)))
        for dev in devices:
            db.execute("INSERT INTO ota_jobs (campaign_id, device_id, state, updated_ms) "
                       "VALUES (?, ?, 'pending', ?)", (campaign, dev, created))
        audit.record(store, actor, "ota.push", campaign, None,
                     {"version": update.version, "sha256": update.begin["sha256"],
                      "devices": devices})
    outcomes: dict[str, dict[str, Any]] = {}
    failed = False
    for dev in devices:
        if failed:
            outcomes[dev] = {"state": "skipped", "reason": "an earlier device failed"}
            _job(store, campaign, dev, "skipped", "an earlier device failed", 0)
            continue
        steps = [("model_begin", update.begin), *[("model_chunk", c) for c in
                                                  update.chunks(chunk_bytes)],
                 ("model_commit", {"version": update.version})]
        reason = None
        sent = 0
        for name, args in steps:
            ack = send(dev, name, args)
            sent += 1
            if ack is None:
                reason = f"{name}: no answer"
            elif ack["result"] != "ok":
                reason = f"{name}: {ack['result']}: {ack.get('reason', '')}"
            if reason is not None:
                break
        if reason is None:
            outcomes[dev] = {"state": "installed", "commands": sent}
            _job(store, campaign, dev, "installed", None, sent)
        else:
            failed = True
            outcomes[dev] = {"state": "failed", "reason": reason, "commands": sent}
            _job(store, campaign, dev, "failed", reason, sent)
        if progress is not None:
            progress(dev, outcomes[dev]["state"])
    state = "failed" if failed else "done"
    with transaction(store) as db:
        db.execute("UPDATE ota_campaigns SET state = ? WHERE campaign_id = ?", (state, campaign))
    return {"campaign_id": campaign, "version": update.version, "state": state,
            "devices": outcomes}


def campaigns(store: Any, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` model campaigns with their jobs."""
    rows = store.db.execute(
        "SELECT campaign_id, version, sha256, created_ms, created_by, state FROM "
        "ota_campaigns ORDER BY created_ms DESC, campaign_id DESC LIMIT ?", (limit,)).fetchall()
    out = []
    for cid, version, digest, created, by, state in rows:
        jobs = store.db.execute(
            "SELECT device_id, state, updated_ms, attempts, detail FROM ota_jobs WHERE "
            "campaign_id = ? ORDER BY device_id", (cid,)).fetchall()
        out.append({"campaign_id": cid, "version": version, "sha256": digest,
                    "created_ms": int(created), "created_by": by, "state": state,
                    "jobs": [{"device_id": d, "state": st, "updated_ms": int(u),
                              "commands": int(a), "reason": det} for d, st, u, a, det in jobs]})
    return out
