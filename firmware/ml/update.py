"""Signed beat-model updates on the device: staged in the spare slot, self-tested,
switched, and rolled back (A/B).

The host (``medge fleet ota push``) sends three commands (docs/protocol.md):

``model_begin``  ``version``, ``size_bytes``, ``sha256`` (of the ``.tflite``),
                 ``meta`` (the model's metadata, ``models/beatnet.json``, as JSON
                 text: the device hashes and stores exactly these bytes, never
                 a re-serialisation, whose float digits differ between CPython
                 and MicroPython) and ``signature``: hex ``r || s``, ECDSA P-256 by the fleet's
                 update key over :func:`manifest` (version, the model's and the
                 metadata's SHA-256).  Checked first: an unsigned or wrongly
                 signed update is refused before a byte is written.
``model_chunk``  ``version``, ``offset`` (the bytes received so far: chunks
                 come in order; a repeated chunk is answered with the offset
                 expected, so a lost ack costs nothing) and ``data`` (base64, at
                 most :data:`CHUNK_MAX` bytes decoded).
``model_commit`` ``version``: the staged file's size and SHA-256 must match,
                 then the self-test: the model must load (every check of
                 :class:`firmware.ml.infer.BeatClassifier`) and, when the
                 metadata carries ``selftest`` (``beat``, ``rr`` and the int8
                 ``logits`` they must give), reproduce them exactly.  Only then
                 is it switched in: the running classifier is replaced, the
                 state names the new slot, the previous one is kept for
                 ``model_rollback``.

``model_rollback`` switches back to the previous model (the other slot, or
the factory model of the config's ``model`` key) after the same load check.
One step back only: the next update is staged in the slot that held the
previous model, which is then no longer kept (``model_prev`` is cleared at
``model_begin``, so a rollback says so instead of loading half a file).

Slots: ``<base>.a.tflite``/``.json`` and ``<base>.b.tflite``/``.json`` beside
the state file; the state keys ``model_slot`` (``a``, ``b`` or absent: the
factory model) and ``model_prev``.  A power cut at any point leaves the model in
use or the new one, never half of one: the staged files are complete and
checked before the one state write that switches.  At boot
(:meth:`ModelUpdater.boot`) the slot the state names is loaded; if it fails its
checks the factory model stays and the state is reset.

Every refusal raises ValueError (the command's ack: ``rejected`` with the
reason); nothing is switched.  MicroPython-clean (``hashlib``, ``binascii``,
file I/O; rare commands, so allocation is fine).
"""

import binascii
import hashlib
import json

from firmware.ml import p256
from firmware.ml.infer import BeatClassifier, ModelError, sha256_hex

try:
    import os
except ImportError:  # pragma: no cover - MicroPython ports without os
    import uos as os  # type: ignore[import-not-found,no-redef]

#: Largest model accepted, bytes (the shipped one is ~14 KB; the issue's cap is 32 KB).
MODEL_MAX = 65536
#: Largest chunk, bytes decoded (base64 of it fits a 4 KiB command).
CHUNK_MAX = 2048
MANIFEST_FORMAT = "medge-model-update/1"
SLOTS = ("a", "b")


def manifest(version, model_sha256, meta_sha256):
    """The bytes the update key signs: format, version, the two SHA-256s (hex)."""
    return ("%s\n%s\n%s\n%s\n" % (MANIFEST_FORMAT, version, model_sha256,
                                  meta_sha256)).encode()


def _unhex(text, nbytes, what):
    if not isinstance(text, str) or len(text) != 2 * nbytes:
        raise ValueError("%s must be %d hex digits" % (what, 2 * nbytes))
    try:
        return binascii.unhexlify(text)
    except ValueError:
        raise ValueError("%s must be hex" % what) from None


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


class ModelUpdater:
    """The device side of model updates (module docstring).  ``slot`` is the
    device's :class:`firmware.ml.infer.ModelSlot`; ``base`` the path prefix of
    the update slots; ``factory`` the config's model path (without extension) or
    None; ``key`` the update key (65 bytes SEC 1) or None: then every update is
    refused."""

    def __init__(self, slot, state, base, factory=None, key=None, runtime="auto"):
        self.slot = slot
        self.state = state
        self.base = base
        self.factory = factory
        self.key = None if key is None else p256.public_key(key)
        self.runtime = runtime
        self._staging = None  # dict of the update being received
        self.installed = 0
        self.refused = 0

    # -- paths and loading --------------------------------------------------------
    def _paths(self, slot):
        if slot is None:
            return self.factory + ".tflite", self.factory + ".json"
        return "%s.%s.tflite" % (self.base, slot), "%s.%s.json" % (self.base, slot)

    def _load(self, slot):
        """A checked classifier from a slot's files (ModelError / OSError otherwise)."""
        if slot is None and self.factory is None:
            raise ModelError("no factory model configured")
        tflite, meta = self._paths(slot)
        with open(tflite, "rb") as f:
            model = f.read()
        with open(meta) as f:
            text = f.read()
        return BeatClassifier(model, text, self.runtime)

    def active(self):
        slot = self.state.load("model_slot", None)
        return slot if slot in SLOTS else None

    def boot(self):
        """Load the slot the state names (after a successful update); if it fails its
        checks, keep the factory model and reset the state.  True if a slot is in use."""
        slot = self.active()
        if slot is None:
            return False
        try:
            self.slot.classifier = self._load(slot)
            return True
        except (ModelError, OSError, ValueError) as exc:
            self.slot.last_error = "update slot %s refused at boot: %s" % (slot, exc)
            self.state.save("model_slot", None)
            self.state.save("model_prev", None)
            return False

    # -- the commands ---------------------------------------------------------------
    def _refuse(self, why):
        self.refused += 1
        raise ValueError(why)

    def begin(self, args, cmd=None):
        if self.key is None:
            self._refuse("no update key configured (config key ota_public_key)")
        for name in ("version", "size_bytes", "sha256", "meta", "signature"):
            if name not in args:
                self._refuse("missing %r" % name)
        version, size, digest, text = (args["version"], args["size_bytes"], args["sha256"],
                                       args["meta"])
        if not isinstance(text, str) or len(text) > MODEL_MAX:
            self._refuse("meta must be the metadata's JSON text")
        try:
            meta = json.loads(text)
        except ValueError:
            self._refuse("meta is not JSON")
        if not isinstance(version, str) or not 1 <= len(version) <= 64:
            self._refuse("version must be a str of 1..64 characters")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MODEL_MAX:
            self._refuse("size_bytes must be an int in 1..%d" % MODEL_MAX)
        _unhex(digest, 32, "sha256")
        if not isinstance(meta, dict) or meta.get("version") != version:
            self._refuse("meta must be the model's metadata, of version %r" % version)
        if meta.get("sha256") != digest or meta.get("size_bytes", size) != size:
            self._refuse("meta's sha256/size_bytes differ from the update's")
        signature = _unhex(args["signature"], 64, "signature")
        mbytes = text.encode()
        signed = manifest(version, digest, sha256_hex(mbytes))
        if not p256.verify_message(self.key, signed, signature):
            self._refuse("bad signature: not signed by this fleet's update key")
        active = self.active()
        target = "b" if active == "a" else "a"
        if self.state.load("model_prev", None) == target:
            # the spare slot held the model kept for rollback: it is being replaced
            self.state.save("model_prev", None)
        tflite, _ = self._paths(target)
        self._staging = {"version": version, "size": size, "sha256": digest, "meta": mbytes,
                         "slot": target, "received": 0, "hash": hashlib.sha256()}
        with open(tflite, "wb"):
            pass  # truncated: the chunks append
        return {"slot": target, "next_offset": 0}

    def _current(self, args):
        st = self._staging
        if st is None:
            self._refuse("no update in progress (model_begin first)")
        if args.get("version") != st["version"]:
            self._refuse("update in progress is version %r" % st["version"])
        return st

    def chunk(self, args, cmd=None):
        st = self._current(args)
        offset, data = args.get("offset"), args.get("data")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            self._refuse("offset must be a non-negative int")
        if offset < st["received"]:  # a repeat (its ack was lost): say where we are
            return {"next_offset": st["received"]}
        if offset > st["received"]:
            self._refuse("chunk at %d, expected %d" % (offset, st["received"]))
        if not isinstance(data, str):
            self._refuse("data must be base64 text")
        try:
            raw = binascii.a2b_base64(data.encode())
        except ValueError:
            self._refuse("data is not base64")
        if not raw or len(raw) > CHUNK_MAX or st["received"] + len(raw) > st["size"]:
            self._refuse("chunk of %d bytes: 1..%d, and no more than size_bytes in all"
                         % (len(raw), CHUNK_MAX))
        tflite, _ = self._paths(st["slot"])
        with open(tflite, "ab") as f:
            f.write(raw)
        st["hash"].update(raw)
        st["received"] += len(raw)
        return {"next_offset": st["received"]}

    def commit(self, args, cmd=None):
        st = self._current(args)
        self._staging = None
        tflite, meta_path = self._paths(st["slot"])
        if st["received"] != st["size"]:
            _remove(tflite)
            self._refuse("%d of %d bytes received" % (st["received"], st["size"]))
        got = binascii.hexlify(st["hash"].digest()).decode()
        if got != st["sha256"]:
            _remove(tflite)
            self._refuse("sha256 of the received model is %s, expected %s"
                         % (got, st["sha256"]))
        with open(meta_path, "wb") as f:
            f.write(st["meta"])
        try:
            clf = self._load(st["slot"])
            self._selftest(clf)
        except (ModelError, OSError, ValueError) as exc:
            _remove(tflite)
            _remove(meta_path)
            self._refuse("self-test failed: %s" % exc)
        previous = self.active()
        self.state.save("model_prev", "factory" if previous is None else previous)
        self.state.save("model_slot", st["slot"])  # the one write that switches
        self.slot.classifier = clf
        self.installed += 1
        return {"model_version": clf.version, "slot": st["slot"]}

    def _selftest(self, clf):
        test = clf.meta.get("selftest")
        if test is None:
            return
        if not isinstance(test, dict):
            raise ValueError("selftest must be an object")
        beat, rr, want = test.get("beat"), test.get("rr"), test.get("logits")
        if not (isinstance(beat, list) and isinstance(rr, list) and isinstance(want, list)):
            raise ValueError("selftest needs beat, rr and logits lists")
        from array import array

        got = list(clf.logits(array("b", beat), array("b", rr)))
        if got != want:
            raise ValueError("selftest logits %r, expected %r" % (got, want))

    def rollback(self, args, cmd=None):
        if args:
            self._refuse("model_rollback takes no args")
        prev = self.state.load("model_prev", None)
        if prev is None:
            self._refuse("no previous model to go back to")
        target = None if prev == "factory" else prev
        try:
            clf = self._load(target)
        except (ModelError, OSError, ValueError) as exc:
            self._refuse("the previous model does not load: %s" % exc)
        current = self.active()
        self.state.save("model_prev", None)
        self.state.save("model_slot", target)
        self.slot.classifier = clf
        return {"model_version": clf.version, "slot": target or "factory",
                "from": current or "factory"}
