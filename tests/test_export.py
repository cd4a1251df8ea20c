"""``medge export`` (contract 9): a real store filled through Store.add with valid
messages, the CLI run as ``host.cli.main``; CSV compared exactly, every FHIR
resource validated with ``fhir.resources`` (its R4B models: the 8.x releases
carry no R4 4.0.1 package; Observation and Bundle are the same in R4 and R4B)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation

from firmware.net import protocol
from host.cli import main
from host.services import export
from host.services.store import Store

T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z
CLASSES = {"N": 2, "S": 0, "V": 1, "F": 0, "Q": 0}


def birth(device_id: str, patient_id: str, seq: int = 0) -> dict:
    return protocol.birth(device_id, seq, T0, {
        "fw_version": "0.1.0", "model_version": "none", "patient_id": patient_id,
        "sample_rate_hz": 250, "boot_id": 1})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """bed-2 stored before bed-1 and seqs out of order: the export sorts."""
    path = tmp_path / "medge.db"
    with Store(path) as store:
        store.add("status", "bed-2", birth("bed-2", "p_two"), T0)
        for seq, hr in ((3, 90), (1, 88)):
            store.add("vitals", "bed-2", protocol.vitals(
                "bed-2", seq, T0 + seq * 1000, 1000, hr, 1, protocol.QUALITY_GOOD), T0)
        store.add("status", "bed-1", birth("bed-1", "p-1"), T0)
        store.add("vitals", "bed-1", protocol.vitals(
            "bed-1", 2, T0 + 2000, 1000, None, 0, protocol.QUALITY_UNRELIABLE, "lead_off"), T0)
        store.add("vitals", "bed-1", protocol.vitals(
            "bed-1", 1, T0 + 1000, 1000, 72, 3, protocol.QUALITY_GOOD, "good", CLASSES), T0)
        # No birth: no patient known; "_" is not allowed in a FHIR id.
        store.add("vitals", "cart_7", protocol.vitals(
            "cart_7", 5, T0 + 5000, 1000, 61, 1, protocol.QUALITY_GOOD), T0)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["export", *argv])
    out, err = capsys.readouterr()
    return code, out, err


FIRST = ("v", "type", "device_id", "seq", "incarnation", "ts_ms", "window_ms", "hr_bpm",
         "beats", "quality", "signal", "classes")


def later_columns() -> list[str]:
    """The columns of the fields the schema has after ``classes`` (the vital signs
    of issue 12 and any later ones), flattened as the module docstring says."""
    cols: list[str] = []
    for name, spec in export.vitals_schema()["properties"].items():
        if name in FIRST:
            continue
        members = spec.get("properties") if spec.get("type") == "object" else None
        cols += [f"{name}_{m}" for m in members] if members else [name]
    return cols


def header() -> str:
    # ``incarnation`` (an optional envelope field) is a column once the schema has it.
    inc = ["incarnation"] if "incarnation" in export.vitals_schema()["properties"] else []
    return ",".join(["device_id", "seq", "ts_ms", "time_utc", *inc, "window_ms", "hr_bpm",
                     "beats", "quality", "signal", "class_N", "class_S", "class_V", "class_F",
                     "class_Q", *later_columns()]) + "\n"


def csv_rows(*rows: str) -> str:
    """The rows of messages that carry none of the later fields: empty cells there."""
    inc = "incarnation" in export.vitals_schema()["properties"]
    fixed = []
    for row in rows:
        cells = row.split(",")
        fixed.append(",".join(cells[:4] + ([""] if inc else []) + cells[4:]
                              + [""] * len(later_columns())))
    return header() + "".join(line + "\n" for line in fixed)


ALL_CSV_ROWS = (
    "bed-1,1,1764000001000,2025-11-24T16:00:01.000Z,1000,72,3,good,good,2,0,1,0,0",
    "bed-1,2,1764000002000,2025-11-24T16:00:02.000Z,1000,,0,unreliable,lead_off,,,,,",
    "bed-2,1,1764000001000,2025-11-24T16:00:01.000Z,1000,88,1,good,,,,,,",
    "bed-2,3,1764000003000,2025-11-24T16:00:03.000Z,1000,90,1,good,,,,,,",
    "cart_7,5,1764000005000,2025-11-24T16:00:05.000Z,1000,61,1,good,,,,,,",
)


# -- CSV ---------------------------------------------------------------------------
def test_csv_every_field_ordered_by_device_then_seq(db: Path, capsys) -> None:
    code, out, err = run(capsys, "--db", str(db), "--format", "csv")
    assert (code, err) == (0, "")
    assert out == csv_rows(*ALL_CSV_ROWS)


def test_csv_filters(db: Path, capsys) -> None:
    code, out, _ = run(capsys, "--db", str(db), "--format", "csv", "--device", "bed-2")
    assert (code, out) == (0, csv_rows(*ALL_CSV_ROWS[2:4]))
    # --since inclusive, --until exclusive; zones are honoured.
    code, out, _ = run(capsys, "--db", str(db), "--format", "csv",
                       "--since", "2025-11-24T16:00:02Z", "--until", "2025-11-24T17:00:05+01:00")
    assert (code, out) == (0, csv_rows(ALL_CSV_ROWS[1], ALL_CSV_ROWS[3]))
    code, out, _ = run(capsys, "--db", str(db), "--format", "csv", "--device", "bed-1",
                       "--since", "2025-11-24T16:00:01.500Z")
    assert (code, out) == (0, csv_rows(ALL_CSV_ROWS[1]))
    # A known device with nothing in the range: the header only.
    code, out, _ = run(capsys, "--db", str(db), "--format", "csv", "--device", "bed-1",
                       "--since", "2025-11-25")
    assert (code, out) == (0, header())


def test_csv_columns_follow_the_schema() -> None:
    schema = {"properties": {"v": {}, "type": {}, "device_id": {}, "seq": {}, "ts_ms": {},
                             "spo2_pct": {"type": ["integer", "null"]},
                             "nibp": {"type": "object", "properties": {"sys": {}, "dia": {}}},
                             "classes": {"type": "object", "properties": {"N": {}, "V": {}}}}}
    assert [c.name for c in export.csv_columns(schema)] == [
        "device_id", "seq", "ts_ms", "time_utc", "spo2_pct", "nibp_sys", "nibp_dia",
        "class_N", "class_V"]


# -- FHIR --------------------------------------------------------------------------
def fhir(capsys, db: Path, *argv: str) -> dict:
    code, out, err = run(capsys, "--db", str(db), "--format", "fhir", *argv)
    assert (code, err) == (0, "")
    doc = json.loads(out)
    Bundle.model_validate(doc)
    for entry in doc["entry"]:
        Observation.model_validate(entry["resource"])
    return doc


def test_fhir_bundle_of_vital_sign_observations(db: Path, capsys) -> None:
    doc = fhir(capsys, db)
    assert (doc["resourceType"], doc["type"]) == ("Bundle", "collection")
    entries = doc["entry"]
    # The null heart rate (bed-1 seq 2) is not exported.
    assert [e["resource"]["identifier"][0]["value"] for e in entries] == [
        "bed-1/1/hr_bpm", "bed-2/1/hr_bpm", "bed-2/3/hr_bpm", "cart_7/5/hr_bpm"]
    for e in entries:
        obs = e["resource"]
        assert e["fullUrl"] == f"urn:uuid:{obs['id']}"
        assert obs["status"] == "final"
        assert obs["category"][0]["coding"][0] == {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs", "display": "Vital Signs"}
        assert obs["code"]["coding"][0]["system"] == "http://loinc.org"
        assert obs["code"]["coding"][0]["code"] == "8867-4"
        assert {k: obs["valueQuantity"][k] for k in ("system", "code")} == {
            "system": "http://unitsofmeasure.org", "code": "/min"}
    got = [(e["resource"]["valueQuantity"]["value"], e["resource"]["effectiveDateTime"],
            e["resource"].get("subject"), e["resource"]["device"]) for e in entries]

    def ref(kind: str, system: str, value: str, by_id: bool = True) -> dict:
        ident = {"identifier": {"system": system, "value": value}}
        return {"reference": f"{kind}/{value}", **ident} if by_id else ident

    assert got == [
        (72, "2025-11-24T16:00:01.000Z", ref("Patient", export.PATIENT_SYSTEM, "p-1"),
         ref("Device", export.DEVICE_SYSTEM, "bed-1")),
        (88, "2025-11-24T16:00:01.000Z", ref("Patient", export.PATIENT_SYSTEM, "p_two", False),
         ref("Device", export.DEVICE_SYSTEM, "bed-2")),
        (90, "2025-11-24T16:00:03.000Z", ref("Patient", export.PATIENT_SYSTEM, "p_two", False),
         ref("Device", export.DEVICE_SYSTEM, "bed-2")),
        (61, "2025-11-24T16:00:05.000Z", None,
         ref("Device", export.DEVICE_SYSTEM, "cart_7", False)),
    ]
    # Ids are stable across exports.
    assert fhir(capsys, db) == doc


def test_fhir_filters(db: Path, capsys) -> None:
    doc = fhir(capsys, db, "--device", "bed-2", "--until", "2025-11-24T16:00:03Z")
    assert [e["resource"]["identifier"][0]["value"] for e in doc["entry"]] == ["bed-2/1/hr_bpm"]
    doc = fhir(capsys, db, "--since", "2025-11-24T16:00:04Z")
    assert [e["resource"]["identifier"][0]["value"] for e in doc["entry"]] == ["cart_7/5/hr_bpm"]
    doc = fhir(capsys, db, "--since", "2025-11-25")
    assert doc == {"resourceType": "Bundle", "type": "collection", "entry": []}


def test_fhir_every_mapped_vital(tmp_path: Path, capsys) -> None:
    """The vital signs the device publishes: codes, UCUM units, scaling; a cuff
    reading, repeated in every message, is exported once, at the time it was taken."""
    db = tmp_path / "v.db"
    docs = []
    for seq in (1, 2):  # the reading arrived 0 s before message 1; message 2 repeats it
        doc = protocol.vitals("bed-9", seq, T0 + seq * 1000, 1000, 70, 1, protocol.QUALITY_GOOD)
        doc.update({"pulse_bpm": 71, "spo2_pct": 97, "resp_rate_per_min": 16,
                    "temp_centi_c": 3685, "nibp_systolic_mmhg": 120, "nibp_diastolic_mmhg": 80,
                    "nibp_map_mmhg": None, "nibp_age_s": seq - 1})
        docs.append(doc)
    with Store(db) as store:
        store.add("status", "bed-9", birth("bed-9", "p-9"), T0)
        for doc in docs:
            store.add("vitals", "bed-9", doc, T0)
    got = [(o["code"]["coding"][0]["code"], o["valueQuantity"]["value"],
            o["valueQuantity"]["code"], o["effectiveDateTime"])
           for o in (e["resource"] for e in fhir(capsys, db)["entry"])]
    first = ["8867-4", "8889-8", "59408-5", "9279-1", "8310-5"]
    assert [g[:3] for g in got[:7]] == [
        ("8867-4", 70, "/min"), ("8889-8", 71, "/min"), ("59408-5", 97, "%"),
        ("9279-1", 16, "/min"), ("8310-5", 36.85, "Cel"),
        ("8480-6", 120, "mm[Hg]"), ("8462-4", 80, "mm[Hg]")]
    assert {g[3] for g in got[:7]} == {"2025-11-24T16:00:01.000Z"}
    assert [g[0] for g in got[7:]] == first  # message 2: no second copy of the reading


def test_every_schema_field_is_mapped_or_deliberately_not() -> None:
    """A new vitals field must be given a LOINC mapping (or be listed as not one)."""
    mapped = {v.field for v in export.FHIR_VITALS}
    unmapped = set(export.vitals_schema()["properties"]) - mapped - export.NOT_FHIR_FIELDS
    assert not unmapped, f"map these in host/services/export.py FHIR_VITALS: {unmapped}"


# -- --out, errors -------------------------------------------------------------------
def test_out_writes_the_file_atomically(db: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.csv"
    code, stdout, _ = run(capsys, "--db", str(db), "--format", "csv", "--out", str(out))
    assert (code, stdout) == (0, "")
    assert out.read_text() == csv_rows(*ALL_CSV_ROWS)
    # A failed export leaves the old file as it was, and no temporary file.
    code, _, err = run(capsys, "--db", str(db), "--format", "csv", "--device", "nope",
                       "--out", str(out))
    assert code == 2
    assert err == "medge export: --device nope: no such device in the store\n"
    assert out.read_text() == csv_rows(*ALL_CSV_ROWS)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize(("argv", "message"), [
    (["--since", "2025-11-24T16:00:00"], "--since: expected an ISO 8601 date or date-time "
     "with a zone (2025-11-24, 2025-11-24T16:00:00Z, ...+01:00), got '2025-11-24T16:00:00' "
     "(see: medge export --help)"),
    (["--until", "yesterday"], "--until: expected an ISO 8601 date or date-time with a zone "
     "(2025-11-24, 2025-11-24T16:00:00Z, ...+01:00), got 'yesterday' "
     "(see: medge export --help)"),
    (["--since", "2025-02-30"], "--since: not a valid date-time '2025-02-30': day is out of "
     "range for month (see: medge export --help)"),
    (["--since", "2025-11-24T10:00Z", "--until", "2025-11-24T10:00Z"],
     "--since must be before --until"),
    (["--device", "ghost"], "--device ghost: no such device in the store"),
    (["--format", "xml"], "--format: invalid choice: 'xml' (choose from csv, fhir) "
     "(see: medge export --help)"),
])
def test_bad_input_is_one_line_exit_2(db: Path, capsys, argv: list[str], message: str) -> None:
    if "--format" not in argv:
        argv = [*argv, "--format", "csv"]
    try:
        code, out, err = run(capsys, "--db", str(db), *argv)
    except SystemExit as exc:  # argparse
        code, (out, err) = exc.code, capsys.readouterr()
    assert (code, out) == (2, "")
    if "invalid choice" in message:  # argparse quotes choices differently across versions
        assert err.startswith("medge export: --format: invalid choice: 'xml'")
    else:
        assert err == f"medge export: {message}\n"


def test_bad_store_is_one_line(tmp_path: Path, capsys) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    for db, says in ((tmp_path / "none.db", "no medge store"), (tmp_path, "is a folder"),
                     (text, "not a SQLite database")):
        code, out, err = run(capsys, "--db", str(db), "--format", "fhir")
        assert (code, out) == (2, ""), err
        assert says in err and err.count("\n") == 1 and err.startswith("medge export: ")
    code, _, err = run(capsys, "--db", str(tmp_path / "none.db"), "--format", "csv",
                       "--out", str(tmp_path / "missing" / "x.csv"))
    assert code == 2 and err == f"medge export: --out {tmp_path / 'missing' / 'x.csv'}: " \
        f"no folder {tmp_path / 'missing'}\n"


def test_help_imports_nothing_heavy() -> None:
    probe = ("import sys, host.cli\n"
             "try:\n    host.cli.main(['export', '--help'])\nexcept SystemExit:\n    pass\n"
             "print([m for m in ('numpy', 'scipy', 'wfdb', 'amqtt', 'jsonschema') "
             "if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"
