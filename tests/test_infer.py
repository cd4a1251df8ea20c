"""The shipped beat model and the device's model handling (firmware/ml/infer.py).

- The shipped ``models/beatnet.tflite`` and its metadata pass the device's
  checks; the file is at most 32 KB.
- The pure-Python int8 engine equals LiteRT's reference kernels on every
  output of the committed real-beat excerpt (tests/data/beats, 1,300+ DS1
  beats, every class), and inside the MicroPython VM on 200 of them.
- The runtimes agree: auto (LiteRT's reference kernels here) and python give
  the same class for every beat; LiteRT's optimized kernels for all but 1 %.
- A model whose sha256, labels, layout or quantization do not match, or that
  is truncated, corrupt or uses an unsupported operator, is refused with a
  message naming the problem, and ModelSlot keeps the previous model.
- The device publishes per-class beat counts when it has a model.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from firmware.ml.infer import (
    AAMI_LABELS,
    BeatClassifier,
    ModelError,
    ModelSlot,
    PythonRuntime,
    sha256_hex,
)
from firmware.ml.litert import LiteRtRuntime

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "beatnet.tflite"
META = ROOT / "models" / "beatnet.json"
BEATS = ROOT / "tests" / "data" / "beats" / "ds1_beats.npz"
TFLITE_FIXTURES = ROOT / "tests" / "data" / "tflite"


@pytest.fixture(scope="module")
def model() -> bytes:
    return MODEL.read_bytes()


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads(META.read_text())


@pytest.fixture(scope="module")
def beats():
    z = np.load(BEATS)
    return z["beat"], z["rr"], z["label"]


def order_of(meta: dict, runtime) -> list[str]:
    by_tensor = {i["tensor"]: i["name"] for i in meta["inputs"]}
    return [by_tensor[t.name] for t in runtime.inputs]


def test_shipped_model_passes_the_device_checks(model, meta):
    assert len(model) <= 32 * 1024
    assert meta["sha256"] == sha256_hex(model)
    assert meta["labels"] == list(AAMI_LABELS)
    clf = BeatClassifier(model, meta, runtime="python")
    assert clf.version == meta["version"]
    for inp in meta["inputs"]:
        assert inp["scale"] == 1 / 32 and inp["zero_point"] == 0


def test_engine_equals_litert_reference_kernels_on_real_beats(model, meta, beats):
    beat, rr, label = beats
    assert len(beat) >= 1000 and set(np.unique(label)) >= {0, 1, 2, 3}
    ref_rt = LiteRtRuntime(model, reference=True)
    py_rt = PythonRuntime(model)
    order = order_of(meta, py_rt)
    assert order == order_of(meta, ref_rt)
    feats = {"beat": beat, "rr": rr}
    mismatches = 0
    for i in range(len(beat)):
        ins = [feats[k][i] for k in order]
        want = np.asarray(ref_rt.invoke(ins)[0]).tolist()
        got = list(py_rt.invoke([x.tolist() for x in ins])[0])
        mismatches += want != got
    assert mismatches == 0


def test_auto_runtime_gives_the_engines_class_and_optimized_kernels_nearly(model, meta, beats):
    beat, rr, _ = beats
    auto = BeatClassifier(model, meta, runtime="auto")  # LiteRT reference kernels here
    assert auto.runtime.name == "litert-ref"
    fast = BeatClassifier(model, meta, runtime="litert")
    py = BeatClassifier(model, meta, runtime="python")
    differ = 0
    for i in range(len(beat)):
        c = py.classify(beat[i].tolist(), rr[i].tolist())
        assert auto.classify(beat[i], rr[i]) == c
        differ += fast.classify(beat[i], rr[i]) != c
    assert differ <= len(beat) // 100  # optimized kernels: a rare near-tie flips


def test_model_classifies_the_excerpt_beats_sensibly(model, meta, beats):
    # Not a validation figure (these beats come from the training records):
    # a check that the shipped model is the trained one, not noise.
    beat, rr, label = beats
    clf = BeatClassifier(model, meta, runtime="auto")
    pred = np.array([clf.classify(beat[i], rr[i]) for i in range(len(beat))])
    for c in (0, 2):  # N and V
        sel = label == c
        assert np.mean(pred[sel] == c) > 0.8


MPY_SCRIPT = """
from firmware.ml.tflite import Model
with open("/model.tflite", "rb") as f:
    m = Model(f.read())
with open("/feats.bin", "rb") as f:
    raw = f.read()
sizes = %(sizes)r
step = sum(sizes)
for i in range(len(raw) // step):
    off = i * step
    ins = []
    for s in sizes:
        ins.append([(b - 256 if b > 127 else b) for b in raw[off:off + s]])
        off += s
    print(" ".join(str(v) for v in m.invoke(ins)[0]))
"""


def test_engine_in_the_micropython_vm_equals_litert_reference(micropython, model, meta, beats):
    beat, rr, _ = beats
    n = 200
    idx = np.linspace(0, len(beat) - 1, n).astype(int)
    ref_rt = LiteRtRuntime(model, reference=True)
    order = order_of(meta, ref_rt)
    feats = {"beat": beat[idx], "rr": rr[idx]}
    raw = b"".join(feats[k][i].tobytes() for i in range(n) for k in order)
    out = micropython(MPY_SCRIPT % {"sizes": [feats[k].shape[1] for k in order]},
                      extra_files={"/model.tflite": model, "/feats.bin": raw}, timeout_s=300)
    got = [[int(v) for v in line.split()] for line in out.strip().splitlines()]
    want = [np.asarray(ref_rt.invoke([feats[k][i] for k in order])[0]).tolist()
            for i in range(n)]
    assert len(got) == n
    assert got == want


# ------------------------------------------------------------ refusals


def refused(model: bytes, meta: dict, match: str) -> None:
    slot = ModelSlot(runtime="python")
    good_model = MODEL.read_bytes()
    good_meta = json.loads(META.read_text())
    assert slot.install(good_model, good_meta)
    before = slot.classifier
    assert not slot.install(model, meta)
    assert slot.classifier is before  # the previous model stays in use
    assert slot.rejected == 1
    assert match in slot.last_error, slot.last_error
    with pytest.raises(ModelError, match=match):
        BeatClassifier(model, meta, runtime="python")


def with_sha(meta: dict, model: bytes) -> dict:
    m = copy.deepcopy(meta)
    m["sha256"] = sha256_hex(model)
    return m


def test_wrong_sha256_is_refused(model, meta):
    bad = bytearray(model)
    bad[len(bad) // 2] ^= 0x01  # one flipped bit in the weights
    refused(bytes(bad), meta, "sha256 mismatch")


def test_truncated_model_is_refused_naming_the_problem(model, meta):
    cut = model[: len(model) // 2]
    refused(cut, with_sha(meta, cut), "truncated")


def test_not_a_tflite_file_is_refused(model, meta):
    bad = bytearray(model)
    bad[4:8] = b"XXXX"
    refused(bytes(bad), with_sha(meta, bytes(bad)), "TFL3")


def test_unsupported_operator_is_refused(meta):
    tanh = (TFLITE_FIXTURES / "tanh.tflite").read_bytes()
    refused(tanh, with_sha(meta, tanh), "unsupported operator")


@pytest.mark.parametrize("path,value,match", [
    ("labels", ["N", "S", "V", "F"], "labels"),
    ("window.points", 64, "window.points"),
    ("window.before_ms", 300, "window.before_ms"),
    ("rr_features", 8, "rr_features"),
    ("format", "other/1", "format"),
    ("version", "", "version"),
])
def test_metadata_for_other_firmware_is_refused(model, meta, path, value, match):
    m = copy.deepcopy(meta)
    cur = m
    parts = path.split(".")
    for p in parts[:-1]:
        cur = cur[p]
    cur[parts[-1]] = value
    refused(model, m, match)


def test_metadata_with_wrong_input_shape_or_scale_is_refused(model, meta):
    m = copy.deepcopy(meta)
    m["inputs"][0]["shape"] = [1, 99]
    refused(model, m, "shape")
    m = copy.deepcopy(meta)
    m["inputs"][0]["scale"] = 0.05
    refused(model, m, "scale")
    m = copy.deepcopy(meta)
    m["inputs"][0]["tensor"] = "no_such_tensor"
    refused(model, m, "not in the metadata")


def test_missing_fields_and_bad_json_are_refused(model, meta):
    m = copy.deepcopy(meta)
    del m["sha256"]
    refused(model, m, "missing field sha256")
    refused(model, "{not json", "not valid JSON")


def test_missing_files_count_as_a_rejection(tmp_path):
    slot = ModelSlot(runtime="python")
    assert not slot.install_files(str(tmp_path / "x.tflite"), str(tmp_path / "x.json"))
    assert slot.classifier is None and slot.rejected == 1
    assert "cannot read" in slot.last_error


# ----------------------------------------------------------- the device


def test_device_publishes_beat_classes(model, meta):
    from firmware.device import Device, DeviceConfig
    from firmware.hw.sources import ArraySource
    from firmware.hw.state import MemoryState
    from firmware.net.links.memory import MemoryLink
    from sim.ecgsyn import EcgsynParams, ecgsyn
    from sim.sources import mv_to_counts

    fs = 250
    sig = ecgsyn(30, EcgsynParams(sample_rate_hz=fs, heart_rate_mean_bpm=72),
                 np.random.default_rng(5))
    samples = mv_to_counts(sig.signal_mv).astype(int).tolist()

    class Clock:
        ms = 0

        def epoch_ms(self):
            return 1764000000000 + self.ms

        def ticks_ms(self):
            return self.ms

    clock = Clock()
    slot = ModelSlot(runtime="python")
    assert slot.install(model, meta)
    link = MemoryLink()
    cfg = DeviceConfig("dev-model-1", fs, mains_hz=50)
    dev = Device(cfg, ArraySource(samples), link, clock, MemoryState(), model=slot)
    for _ in range(40):
        clock.ms += 1000
        dev.step()
    msgs = [json.loads(p) for t, p, *_ in link.published if t.endswith("/vitals")]
    status = [json.loads(p) for t, p, *_ in link.published if t.endswith("/status")]
    assert status and status[0]["model_version"] == meta["version"]
    assert msgs and all(set(m["classes"]) == set(AAMI_LABELS) for m in msgs)
    total = {c: sum(m["classes"][c] for m in msgs) for c in AAMI_LABELS}
    assert sum(total.values()) == dev.classified >= 25
    assert total["N"] >= 0.9 * dev.classified  # a normal sinus rhythm


def test_device_without_mains_cannot_take_a_model():
    from firmware.device import Device, DeviceConfig

    with pytest.raises(ValueError, match="mains_hz"):
        Device(DeviceConfig("dev-x", 250), None, None, None, _State(), model=ModelSlot())


class _State:
    def load(self, key, default):
        return default

    def save(self, key, value):
        pass


DEVICE_SCRIPT = """
from array import array
from firmware.device import Device, DeviceConfig
from firmware.ml.infer import ModelSlot
from firmware.net.links.memory import MemoryLink
from firmware.hw.sources import ArraySource
from firmware.hw.state import MemoryState

class Clock:
    ms = 0
    def epoch_ms(self):
        return 1764000000000 + self.ms
    def ticks_ms(self):
        return self.ms & 0x3FFFFFFF

with open(%(ecg)r, "rb") as f:
    samples = array("h", f.read())
slot = ModelSlot(runtime="python")
print("installed", slot.install_files(%(model)r, %(meta)r), slot.last_error)
clock = Clock()
link = MemoryLink()
dev = Device(DeviceConfig("dev-mpy-model", 250, mains_hz=50), ArraySource(samples), link,
             clock, MemoryState(), model=slot)
for _ in range(32):
    clock.ms += 1000
    dev.step()
for topic, payload, retain in link.published:
    print(topic, payload.decode())
print("classified", dev.classified)
"""


def test_device_with_model_in_the_micropython_vm_publishes_what_cpython_does(
        micropython, tmp_path, model, meta):
    from sim.ecgsyn import EcgsynParams, ecgsyn
    from sim.sources import mv_to_counts

    sig = ecgsyn(30, EcgsynParams(sample_rate_hz=250, heart_rate_mean_bpm=80),
                 np.random.default_rng(9))
    ecg = mv_to_counts(sig.signal_mv).astype("<i2").tobytes()
    vm = DEVICE_SCRIPT % {"ecg": "/ecg.bin", "model": "/m.tflite", "meta": "/m.json"}
    got = micropython(vm, extra_files={"/ecg.bin": ecg, "/m.tflite": model,
                                       "/m.json": json.dumps(meta)}, timeout_s=300)
    (tmp_path / "ecg.bin").write_bytes(ecg)
    (tmp_path / "m.tflite").write_bytes(model)
    (tmp_path / "m.json").write_text(json.dumps(meta))
    local = DEVICE_SCRIPT % {"ecg": str(tmp_path / "ecg.bin"), "model": str(tmp_path / "m.tflite"),
                             "meta": str(tmp_path / "m.json")}
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(local, "<device>", "exec"), {})
    assert got == buf.getvalue()
    assert got.startswith("installed True None")
    assert '"classes":{' in got
    assert int(got.strip().splitlines()[-1].split()[-1]) >= 30
