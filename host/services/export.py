"""Export of the stored vitals (contract item 9): CSV for people and
spreadsheets, a FHIR R4 ``Bundle`` of vital-sign ``Observation`` resources for
the hospital's other systems.

What is read
------------
Every stored ``vitals`` message, from its payload as the device published it
(the ``messages`` table keeps it whole), so every published field is exported,
not only the columns of the ``vitals`` table.  Messages are ordered by device,
then ``seq``.  A filter keeps ``since_ms <= ts_ms < until_ms`` (half open, so
consecutive exports, a day each, neither overlap nor leave a gap).  The store
is opened read-only through :class:`host.services.store.Store` (its path checks
and one-line :class:`~host.services.store.StoreError`); the queries themselves
are this module's own (:class:`VitalsSource`), and nothing here writes to it.

CSV
---
Columns: ``device_id,seq,ts_ms,time_utc``, then every other field of the v1
vitals schema (``host/schemas/v1/vitals.schema.json``) in the schema's order,
named as published: ``window_ms,hr_bpm,beats,quality,signal``, and an object
field flattened to one column per member: ``classes`` as ``class_N, class_S,
class_V, class_F, class_Q`` (the AAMI EC57 labels), any other object ``F`` as
``F_MEMBER``.  ``time_utc`` is ``ts_ms`` (the window's end, device clock) in
ISO 8601 UTC with milliseconds, for people; the envelope's constant ``v`` and
``type`` are left out.  The columns come from the schema, so a field added to
it is exported without a change here.  A value the device published as null
(unreliable) or did not publish (an optional field) is an empty cell.

FHIR
----
A ``Bundle`` of type ``collection`` (no ``timestamp``: the output is a function of
the store alone), one entry per published, non-null vital (:data:`FHIR_VITALS`)
per message, in the CSV's order and then the table's.  Each ``Observation``:

- ``id``: a UUID (version 5) made from device, ``seq`` and field, so a re-export
  gives the same ids; ``fullUrl`` ``urn:uuid:<id>``; ``identifier``
  ``{device}/{seq}/{field}`` (``{device}/{incarnation}/{seq}/{field}`` when the
  message carries an incarnation) in the system :data:`IDENTIFIER_SYSTEM`.
- ``status`` ``final``; ``category`` ``vital-signs``
  (terminology.hl7.org ``observation-category``); ``code`` the LOINC code;
  ``valueQuantity`` in UCUM (``/min``, ``%``, ``Cel``, ``mm[Hg]``), the
  device's integer scaled by the field's unit (``temp_centi_c`` / 100 is ``Cel``).
- ``subject``: the pseudonymous patient assigned to the device at ``ts_ms``
  (:meth:`VitalsSource.patient_at`), ``Patient/<id>`` plus its identifier in
  :data:`PATIENT_SYSTEM`; no ``subject`` when no patient is known (a device
  that never sent a birth, or published an empty ``patient_id``).  ``device``:
  ``Device/<device_id>`` plus its identifier in :data:`DEVICE_SYSTEM`.  An id
  that is not a valid FHIR id (device ids may hold ``_``, FHIR ids may not) is
  given by identifier only.
- ``effectiveDateTime``: the window's end (``ts_ms``), ISO 8601 UTC.
- A value the device withheld (null: unreliable) is not exported at all: no
  Observation, rather than one with ``dataAbsentReason`` per second per vital.
  The gap is visible in the CSV.  ``beats``, ``signal``, ``quality`` and
  ``classes`` are not vital signs and go to the CSV only.
- Blood pressure: systolic, diastolic and mean are one Observation each with
  their own LOINC codes (contract 9), not components of an 85354-9 panel.  A
  vitals message repeats the cuff's last good reading (``nibp_*``) with its age
  (``nibp_age_s``): it is exported once, from the message in whose window it
  arrived (``nibp_age_s * 1000 < window_ms``), ``effectiveDateTime`` the time it
  was taken (``ts_ms - nibp_age_s * 1000``).
- Temperature ``temp_centi_c`` is 0.01 degC: divided by 100 into ``Cel``.

Known limits: ``patient_at`` answers with the patient of the device's latest
birth message (the ``devices`` table) until patient-assignment history exists
(issue 10's storage work); it is the one function to replace then.
tests/test_export.py fails when the schema has a field that is neither mapped
in :data:`FHIR_VITALS` nor listed in :data:`NOT_FHIR_FIELDS`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import IO, Any

from host.services.store import Store

log = logging.getLogger(__name__)


class ExportFormat(str, Enum):
    CSV = "csv"
    FHIR = "fhir"


@dataclass(frozen=True)
class VitalsFilter:
    """Which vitals to export: one device or all, ``since_ms <= ts_ms < until_ms``."""

    device_id: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None


class UnknownDevice(LookupError):
    """The store has never heard of the device (a typo, most likely)."""


# -- reading the store (read-only) -----------------------------------------------
class VitalsSource:
    """Read-only queries over a medge store's tables for the export."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self._patients: dict[str, str | None] = {}

    def knows_device(self, device_id: str) -> bool:
        return self.db.execute(
            "SELECT 1 FROM devices WHERE device_id = ? UNION ALL "
            "SELECT 1 FROM messages WHERE device_id = ? LIMIT 1",
            (device_id, device_id)).fetchone() is not None

    def vitals(self, flt: VitalsFilter) -> Iterator[dict[str, Any]]:
        """The stored vitals payloads, ordered by device then seq (streamed; ties
        between a device's incarnations, each counting from 0, by time)."""
        where, params = ["type = 'vitals'"], []
        if flt.device_id is not None:
            where.append("device_id = ?")
            params.append(flt.device_id)
        if flt.since_ms is not None:
            where.append("ts_ms >= ?")
            params.append(flt.since_ms)
        if flt.until_ms is not None:
            where.append("ts_ms < ?")
            params.append(flt.until_ms)
        cur = self.db.execute(
            f"SELECT payload FROM messages WHERE {' AND '.join(where)} "
            "ORDER BY device_id, seq, ts_ms", params)
        for (payload,) in cur:
            yield json.loads(payload)

    def patient_at(self, device_id: str, ts_ms: int) -> str | None:
        """The pseudonymous patient assigned to ``device_id`` at ``ts_ms``.

        Today: the ``patient_id`` of the device's latest birth message, whatever
        ``ts_ms`` is (the store keeps no assignment history yet).  When
        device-patient assignments over time are stored, this is the one place
        to answer from them.
        """
        if device_id not in self._patients:
            row = self.db.execute("SELECT patient_id FROM devices WHERE device_id = ?",
                                  (device_id,)).fetchone()
            self._patients[device_id] = row[0] if row else None
        return self._patients[device_id]


# -- time ----------------------------------------------------------------------
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso_utc_ms(ts_ms: int) -> str:
    """``ts_ms`` as ISO 8601 UTC with milliseconds: ``2025-11-24T16:00:00.000Z``."""
    return (_EPOCH + timedelta(milliseconds=ts_ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?(Z|[+-]\d{2}:\d{2}))?")


def parse_iso8601_ms(text: str) -> int:
    """An instant in strict ISO 8601 as milliseconds since 1970 UTC.

    Accepted: a date (``2025-11-24``, its midnight UTC) or a date and time with
    an explicit zone (``2025-11-24T16:00Z``, ``...T16:00:05.250+01:00``).  A time
    without a zone is refused (whose local time?).  ``ValueError`` says why.
    """
    m = _ISO.fullmatch(text)
    if m is None:
        raise ValueError(f"expected an ISO 8601 date or date-time with a zone "
                         f"(2025-11-24, 2025-11-24T16:00:00Z, ...+01:00), got {text!r}")
    year, month, day, hour, minute, second, frac, zone = m.groups()
    offset = timedelta(0)
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError(f"bad zone offset in {text!r}")
        offset = sign * timedelta(hours=hours, minutes=minutes)
    try:
        when = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                        int(second or 0), int((frac or "0").ljust(6, "0")),
                        tzinfo=timezone(offset))
    except ValueError as exc:
        raise ValueError(f"not a valid date-time {text!r}: {exc}") from None
    delta = when - _EPOCH
    return (delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000)


# -- CSV ----------------------------------------------------------------------
_LEADING = ("device_id", "seq", "ts_ms")
_ENVELOPE_CONSTANTS = ("v", "type")
#: How an object field's members are named in the CSV (default: ``FIELD_MEMBER``).
_MEMBER_PREFIX = {"classes": "class_"}


@dataclass(frozen=True)
class Column:
    name: str
    field: str
    member: str | None = None

    def value(self, doc: dict[str, Any]) -> Any:
        value = doc.get(self.field)
        if self.member is not None:
            value = value.get(self.member) if isinstance(value, dict) else None
        return value


def vitals_schema() -> dict[str, Any]:
    from host.services.messages import schema_path  # the schemas' one home

    with open(schema_path("vitals"), encoding="utf-8") as f:
        return json.load(f)


def csv_columns(schema: dict[str, Any]) -> list[Column]:
    """The CSV's columns from the vitals schema (see the module docstring)."""
    columns = [Column(name, name) for name in _LEADING]
    columns.append(Column("time_utc", "ts_ms"))
    for field, spec in schema["properties"].items():
        if field in _LEADING or field in _ENVELOPE_CONSTANTS:
            continue
        members = spec.get("properties") if spec.get("type") == "object" else None
        if members:
            prefix = _MEMBER_PREFIX.get(field, f"{field}_")
            columns.extend(Column(prefix + member, field, member) for member in members)
        else:
            columns.append(Column(field, field))
    return columns


def _cell(column: Column, doc: dict[str, Any]) -> str:
    value = column.value(doc)
    if value is None:
        return ""
    if column.name == "time_utc":
        return iso_utc_ms(value)
    return str(value)


def write_csv(docs: Iterator[dict[str, Any]], out: IO[str],
              columns: list[Column]) -> int:
    """The header and one row per message; returns the number of rows."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.name for c in columns])
    rows = 0
    for doc in docs:
        writer.writerow([_cell(c, doc) for c in columns])
        rows += 1
    return rows


# -- FHIR ---------------------------------------------------------------------
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
IDENTIFIER_SYSTEM = "https://medge.example/fhir/sid/vitals"
DEVICE_SYSTEM = "https://medge.example/fhir/sid/device-id"
PATIENT_SYSTEM = "https://medge.example/fhir/sid/patient-id"
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, IDENTIFIER_SYSTEM)
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@dataclass(frozen=True)
class FhirVital:
    """One published field as a vital-sign Observation: LOINC code, UCUM unit,
    and the divisor from the device's integer to that unit."""

    field: str
    loinc: str
    display: str
    ucum: str
    unit: str
    divisor: int = 1


#: The vitals fields exported as Observations, in the order they are written.
FHIR_VITALS = (
    FhirVital("hr_bpm", "8867-4", "Heart rate", "/min", "beats/minute"),
    FhirVital("pulse_bpm", "8889-8", "Heart rate by Pulse oximetry", "/min", "beats/minute"),
    FhirVital("spo2_pct", "59408-5",
              "Oxygen saturation in Arterial blood by Pulse oximetry", "%", "%"),
    FhirVital("resp_rate_per_min", "9279-1", "Respiratory rate", "/min", "breaths/minute"),
    FhirVital("temp_centi_c", "8310-5", "Body temperature", "Cel", "C", 100),
    FhirVital("nibp_systolic_mmhg", "8480-6", "Systolic blood pressure", "mm[Hg]", "mmHg"),
    FhirVital("nibp_diastolic_mmhg", "8462-4", "Diastolic blood pressure", "mm[Hg]", "mmHg"),
    FhirVital("nibp_map_mmhg", "8478-0", "Mean blood pressure", "mm[Hg]", "mmHg"),
)
#: Schema fields that are deliberately not Observations (they go to the CSV): the
#: envelope, signal bookkeeping, each vital's quality index and withheld reason,
#: bad-input counters, HRV and perfusion (no vital-sign LOINC code in contract 9).
NOT_FHIR_FIELDS = frozenset({
    "v", "type", "device_id", "incarnation", "seq", "ts_ms", "window_ms", "beats",
    "quality", "signal", "classes", "pulse_quality", "spo2_quality", "perfusion_centi_pct",
    "resp_quality", "temp_quality", "hrv_sdnn_ms", "hrv_rmssd_ms", "hrv_quality",
    "hr_pulse_delta_bpm", "withheld", "faults", "nibp_age_s", "nibp_last_failure"})
#: The cuff's fields: a message repeats the last good reading; it is exported once.
_NIBP = "nibp_"


def _nibp_taken_ms(doc: dict[str, Any]) -> int | None:
    """When the NIBP reading in ``doc`` was taken, if it arrived in this message's
    window (else None: a repeat of an exported reading, or no reading)."""
    age_s = doc.get("nibp_age_s")
    if not isinstance(age_s, int) or age_s * 1000 >= doc.get("window_ms", 0):
        return None
    return doc["ts_ms"] - age_s * 1000


_CATEGORY = [{"coding": [{"system": CATEGORY_SYSTEM, "code": "vital-signs",
                          "display": "Vital Signs"}], "text": "Vital Signs"}]


def _reference(kind: str, system: str, value: str) -> dict[str, Any]:
    ref: dict[str, Any] = {"identifier": {"system": system, "value": value}}
    if _FHIR_ID.fullmatch(value):
        ref = {"reference": f"{kind}/{value}", **ref}
    return ref


def _quantity(vital: FhirVital, value: int) -> dict[str, Any]:
    number: int | float = value if vital.divisor == 1 else value / vital.divisor
    return {"value": number, "unit": vital.unit, "system": UCUM, "code": vital.ucum}


def observations(doc: dict[str, Any], patient_id: str | None) -> Iterator[dict[str, Any]]:
    """The Observations of one vitals message: one per published, non-null vital."""
    device_id, seq = doc["device_id"], doc["seq"]
    nibp_ms = _nibp_taken_ms(doc)
    for vital in FHIR_VITALS:
        value = doc.get(vital.field)
        if value is None:
            continue
        ts_ms = doc["ts_ms"]
        if vital.field.startswith(_NIBP):
            if nibp_ms is None:
                continue
            ts_ms = nibp_ms
        key = "/".join(str(part) for part in (
            device_id, doc.get("incarnation"), seq, vital.field) if part is not None)
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "id": str(uuid.uuid5(_UUID_NAMESPACE, key)),
            "identifier": [{"system": IDENTIFIER_SYSTEM, "value": key}],
            "status": "final",
            "category": _CATEGORY,
            "code": {"coding": [{"system": LOINC, "code": vital.loinc,
                                 "display": vital.display}], "text": vital.display},
        }
        if patient_id:  # None, or "" (published as unknown): no subject
            obs["subject"] = _reference("Patient", PATIENT_SYSTEM, patient_id)
        obs["effectiveDateTime"] = iso_utc_ms(ts_ms)
        obs["valueQuantity"] = _quantity(vital, value)
        obs["device"] = _reference("Device", DEVICE_SYSTEM, device_id)
        yield obs


def write_fhir(source: VitalsSource, docs: Iterator[dict[str, Any]], out: IO[str]) -> int:
    """The Bundle, written entry by entry (a year of vitals never sits in memory);
    returns the number of Observations."""
    out.write('{"resourceType": "Bundle", "type": "collection", "entry": [')
    count = 0
    for doc in docs:
        patient_id = source.patient_at(doc["device_id"], doc["ts_ms"])
        for obs in observations(doc, patient_id):
            entry = {"fullUrl": f"urn:uuid:{obs['id']}", "resource": obs}
            out.write(("\n  " if count == 0 else ",\n  ") + json.dumps(entry, sort_keys=False))
            count += 1
    out.write("\n]}\n" if count else "]}\n")
    return count


# -- the export -----------------------------------------------------------------
@contextmanager
def atomic_text_file(path: Path) -> Iterator[IO[str]]:
    """A file written in full or not at all: a temporary file beside ``path``,
    flushed to disk and renamed over it only when the block succeeds."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export(db: Path, fmt: ExportFormat, flt: VitalsFilter, out: IO[str]) -> int:
    """Write the stored vitals matching ``flt`` to ``out`` as ``fmt``; returns the
    number of rows (CSV) or Observations (FHIR).

    Raises ``FileNotFoundError`` (no store), :class:`~host.services.store.StoreError`
    (not a usable store) or :class:`UnknownDevice`.
    """
    with Store(db, readonly=True) as store:
        source = VitalsSource(store.db)
        if flt.device_id is not None and not source.knows_device(flt.device_id):
            raise UnknownDevice(flt.device_id)
        docs = source.vitals(flt)
        if fmt is ExportFormat.CSV:
            count = write_csv(docs, out, csv_columns(vitals_schema()))
        else:
            count = write_fhir(source, docs, out)
    log.info("exported %d %s", count, "rows" if fmt is ExportFormat.CSV else "observations")
    return count
