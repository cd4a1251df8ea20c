"""``medge fleet``: the device fleet and its broker accounts (host.services.store,
host.services.accounts, host.services.tlsca)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from host.commands.common import (
    PORT,
    CliError,
    add_broker_account,
    add_broker_addr,
    add_command,
    add_db,
    add_json,
    broker_password,
    positive_number,
    whole_number,
)

NAME = "fleet"


def add_actor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--actor", metavar="NAME",
                   help="who is making the change, for the audit log (default: the OS user)")


def add_password_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("--password-file", type=Path, metavar="F",
                   help="write the password to this new file (0600) instead of printing it")


def add_operator_options(p: argparse.ArgumentParser, what: str, func: Any, *,
                         wait_s: float = 10.0) -> None:
    """The options of a command that talks to devices as an operator: how long to wait
    for each answer, the broker, the operator account, the audit actor, --json, the
    store; and its handler."""
    p.add_argument("--wait", type=positive_number, default=wait_s, metavar="SECONDS",
                   help=f"how long to wait for each answer ({wait_s:g})")
    add_broker_addr(p)
    add_broker_account(p)
    add_actor(p)
    add_json(p, what)
    add_db(p)
    p.set_defaults(func=func, prog=p.prog)


def _account_id(text: str) -> str:
    from host.services.accounts import AccountError, check_username

    try:
        return check_username(text)
    except AccountError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, NAME, help="device fleet and broker accounts",
                    description="The device fleet and its broker accounts.",
                    example=["medge fleet list --json", "medge fleet add bed-1 --json",
                             "medge fleet add ingest --role host --password-file ingest.pw"])
    fleet_sub = p.add_subparsers(dest="fleet_command", required=True, metavar="FLEET_COMMAND")
    q = add_command(
        fleet_sub, "list", help="every known device",
        description="Every device the store knows: id, state (online/offline), firmware and "
        "model\nversions, last-seen time (UTC), patient, last heart rate, messages stored, "
        "its role\nand whether it has credentials.  --accounts adds every account no "
        "device row has:\nhost accounts (state null) and provisioned devices never seen "
        "(offline, last seen null).",
        example=["medge fleet list", "medge fleet list --json --db var/medge.db",
                 "medge fleet list --accounts"])
    q.add_argument("--accounts", action="store_true",
                   help="also list the host accounts and the devices never seen")
    q.add_argument("--stale-after", type=_positive_seconds, metavar="SECONDS", default=None,
                   help="an online device not heard from for this long is shown stale "
                   "(default 30, or $MEDGE_STALE_AFTER_S)")
    add_json(q, "a JSON array, one object per device")
    add_db(q)
    q.set_defaults(func=run_list, prog=q.prog)

    q = add_command(
        fleet_sub, "show", help="one device or account",
        description="One device or account: what fleet list shows for it, its incarnation "
        "and\nwhen its account was made or removed.",
        example=["medge fleet show bed-1 --json"])
    q.add_argument("id", type=_account_id, metavar="ID")
    add_json(q, "one object")
    add_db(q)
    q.set_defaults(func=run_show, prog=q.prog)

    q = add_command(
        fleet_sub, "add", help="create a broker account (prints its password once)",
        description="Create a broker account: role device (the default: username = device "
        "id, a new\nincarnation) or host (ingest, monitor, command senders: one account "
        "per process).\nThe password is printed once (or written to --password-file, "
        "mode 0600) and\nstored only as a hash; `medge broker --db` picks the account up "
        "at once.\n--cert also issues a client certificate from the local CA "
        "(`medge fleet ca init`).",
        example=["medge fleet add bed-1 --json",
                 "medge fleet add ingest-1 --role host --password-file var/ingest-1.pw",
                 "medge fleet add bed-2 --cert --json"])
    q.add_argument("id", type=_account_id, metavar="ID")
    q.add_argument("--role", choices=("device", "host", "operator"), default="device",
                   help="device (one per device), host (ingest, advice service: reads "
                   "every device, sends alerts) or operator (sends commands and model "
                   "updates, reads their answers)")
    add_password_file(q)
    q.add_argument("--cert", action="store_true",
                   help="issue a client certificate (key 0600) from the local CA")
    q.add_argument("--ca-dir", type=Path, metavar="DIR",
                   help="the local CA's folder (default: <db>.d/ca)")
    add_actor(q)
    add_json(q, "the account and its credentials")
    add_db(q)
    q.set_defaults(func=run_add, prog=q.prog)

    q = add_command(
        fleet_sub, "passwd", help="a new password for an account",
        description="Replace an account's password (same incarnation); printed once.",
        example=["medge fleet passwd bed-1 --json"])
    q.add_argument("id", type=_account_id, metavar="ID")
    add_password_file(q)
    add_actor(q)
    add_json(q, "the account and its new password")
    add_db(q)
    q.set_defaults(func=run_passwd, prog=q.prog)

    q = add_command(
        fleet_sub, "remove", help="revoke an account",
        description="Revoke an account: it cannot connect any more, and a running `medge "
        "broker --db`\ncloses its connection within a second.",
        example=["medge fleet remove bed-1"])
    q.add_argument("id", type=_account_id, metavar="ID")
    add_actor(q)
    add_json(q, "the removed account")
    add_db(q)
    q.set_defaults(func=run_remove, prog=q.prog)

    q = add_command(
        fleet_sub, "cmd", help="send a device a command and wait for its answer",
        description="Send device ID the command NAME (QoS 1 on medge/v1/dev/ID/cmd) and "
        "wait for its ack.\nThe device's commands: ping (versions, uptime, queue), "
        "set_config (--set\nreport_period_ms=N, --set patient_id=P: kept across restarts), "
        "reboot (a clean\nrestart).  The command and its sender are recorded in the store "
        "and the audit log\nfirst; the device acts on a command once however often it "
        "arrives.",
        notes="Exit status: 0 the device answered ok; 1 rejected, failed or no answer "
        "within --wait\n(an offline device gets nothing: commands are not queued for it); "
        "2 bad input.",
        example=["medge fleet cmd bed-12 ping --username ops --password-file ops.pw",
                 "medge fleet cmd bed-12 set_config --set report_period_ms=5000 --json",
                 "medge fleet cmd bed-12 reboot --wait 20"])
    q.add_argument("id", type=_account_id, metavar="ID")
    q.add_argument("name", metavar="NAME", help="the command (ping, set_config, reboot)")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="an argument of the command (repeatable; digits are sent as an int)")
    q.add_argument("--expires", type=positive_number, default=None, metavar="SECONDS",
                   help="the device rejects the command after this long (60)")
    add_operator_options(q, "the command and its answer", run_cmd)

    q = add_command(
        fleet_sub, "config", help="a device's desired settings (and what it runs)",
        description="Show device ID's desired settings beside the ones it reports (its "
        "newest birth)\nand what is still pending; --set/--unset change the desired "
        "ones (checked as the\ndevice checks them, audited).  `medge fleet sync` "
        "applies them to online devices.",
        example=["medge fleet config bed-12 --set report_period_ms=5000",
                 "medge fleet config bed-12 --json", "medge fleet config --json"])
    q.add_argument("id", type=_account_id, metavar="ID", nargs="?",
                   help="the device (every device with desired settings when left out)")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="report_period_ms=N or patient_id=P (repeatable)")
    q.add_argument("--unset", action="append", default=[], metavar="KEY",
                   help="drop a desired setting (the device keeps what it runs)")
    add_actor(q)
    add_json(q, "desired, reported and pending settings")
    add_db(q)
    q.set_defaults(func=run_config, prog=q.prog)

    q = add_command(
        fleet_sub, "sync", help="send online devices their desired settings",
        description="Send every online device whose reported settings differ from its "
        "desired ones\none set_config with the difference, and wait for the answers; "
        "--watch repeats\nevery --interval s (a device that comes online is brought "
        "in line at the next pass).",
        notes="Exit status: 0 every device sent to answered ok; 1 otherwise.",
        example=["medge fleet sync --username ops --password-file ops.pw",
                 "medge fleet sync --watch --interval 10"])
    q.add_argument("--watch", action="store_true", help="repeat until SIGTERM or --duration")
    q.add_argument("--interval", type=positive_number, default=10.0, metavar="SECONDS",
                   help="--watch: seconds between passes (10)")
    q.add_argument("--duration", type=positive_number, metavar="SECONDS",
                   help="--watch: stop after this long")
    add_operator_options(q, "each pass's results, one JSON line per pass", run_sync)

    q = add_command(
        fleet_sub, "strip", help="the last seconds of a device's ECG, drawn",
        description="Ask device ID for its last --seconds of ECG (the ecg_strip command) and "
        "draw them as\na Holter-style strip: the device's raw samples through its own filter "
        "chain, each\nbeat's class above it, ECG-paper grid.",
        example=["medge fleet strip bed-12 --out bed-12.png --username ops "
                 "--password-file ops.pw"])
    q.add_argument("id", type=_account_id, metavar="ID")
    q.add_argument("--seconds", type=whole_number(1, 10), default=10, metavar="N",
                   help="how many seconds, 1..10 (10)")
    q.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="the picture: .png, .svg or .pdf")
    add_operator_options(q, "what the strip shows", run_strip)

    q = add_command(
        fleet_sub, "commands", help="commands sent and their answers",
        description="The newest commands (of one device), newest first: who sent what, "
        "and the device's\nanswer as ingest stored it (ok, rejected, failed), or "
        "unanswered / expired.",
        example=["medge fleet commands", "medge fleet commands bed-12 --json"])
    q.add_argument("id", type=_account_id, metavar="ID", nargs="?")
    q.add_argument("--limit", type=PORT, default=50, metavar="N",
                   help="at most this many (50)")
    add_json(q, "a JSON array, one object per command")
    add_db(q)
    q.set_defaults(func=run_commands, prog=q.prog)

    q = add_command(
        fleet_sub, "ota", help="signed beat-model updates",
        description="Signed beat-model updates: the fleet's update key (ECDSA P-256; its "
        "public half goes\ninto every device's config as ota_public_key) and campaigns "
        "that install a model\non devices one at a time (signed, staged in the spare "
        "slot, self-tested on the\ndevice, then switched; the first failure stops the "
        "campaign).",
        example=["medge fleet ota key --init", "medge fleet ota key --json",
                 "medge fleet ota push bed-1 bed-2 --model models/beatnet --username ops "
                 "--password-file ops.pw", "medge fleet ota list --json"])
    ota_sub = q.add_subparsers(dest="ota_command", required=True, metavar="OTA_COMMAND")
    r = add_command(ota_sub, "key", help="the update key's public half (--init: make it)",
                    description="Print the update key's public half (130 hex digits: the "
                    "devices' ota_public_key);\n--init makes the key first (refused "
                    "when one exists).",
                    example=["medge fleet ota key --init", "medge fleet ota key --json"])
    r.add_argument("--init", action="store_true", help="make the key (once per fleet)")
    r.add_argument("--key-dir", type=Path, metavar="DIR",
                   help="the key's folder (default: <db>.d/ota)")
    add_json(r, "the key's path and public half")
    add_db(r)
    r.set_defaults(func=run_ota_key, prog=r.prog)
    r = add_command(ota_sub, "push", help="install a model on devices, one at a time",
                    description="Sign --model (PATH.tflite + PATH.json) with the update key "
                    "and install it on each\ndevice in the order given; a device that "
                    "refuses or does not answer stops the\ncampaign (the rest are "
                    "skipped).  Exit status 0 when every device installed it.",
                    example=["medge fleet ota push bed-1 --model models/beatnet "
                             "--username ops --password-file ops.pw"])
    r.add_argument("ids", type=_account_id, metavar="ID", nargs="+")
    r.add_argument("--model", type=Path, required=True, metavar="PATH",
                   help="the model, without extension (models/beatnet)")
    r.add_argument("--key-dir", type=Path, metavar="DIR",
                   help="the key's folder (default: <db>.d/ota)")
    add_operator_options(r, "the campaign and each device's outcome", run_ota_push,
                         wait_s=20.0)
    r = add_command(ota_sub, "list", help="update campaigns and their devices",
                    description="Update campaigns, newest first, with each device's state "
                    "(pending, installed,\nfailed with the reason, skipped).",
                    example=["medge fleet ota list --json"])
    add_json(r, "a JSON array, one object per campaign")
    add_db(r)
    r.set_defaults(func=run_ota_list, prog=r.prog)

    q = add_command(fleet_sub, "ca", help="the local certificate authority",
                    description="The local CA that issues the broker's and the devices' "
                    "certificates.", example=["medge fleet ca init"])
    ca_sub = q.add_subparsers(dest="ca_command", required=True, metavar="CA_COMMAND")
    r = add_command(ca_sub, "init", help="make the local CA",
                    description="Make the local CA (EC P-256, 10 years) in --ca-dir "
                    "(default <db>.d/ca);\nrefused when one exists.",
                    example=["medge fleet ca init", "medge fleet ca init --ca-dir /etc/medge/ca"])
    r.add_argument("--ca-dir", type=Path, metavar="DIR",
                   help="the CA's folder (default: <db>.d/ca)")
    add_json(r, "the CA's files")
    add_db(r)
    r.set_defaults(func=run_ca_init, prog=r.prog)


def iso_utc(ms: int) -> str:
    from datetime import datetime, timezone  # not at import: --help need not load it

    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


def device_doc(r: Any, acc: Any = None) -> dict[str, Any]:
    """One ``host.services.store.DeviceRow`` as ``fleet list --json`` prints it, with
    its account (``host.services.accounts.Account`` or None)."""
    return {
        "id": r.device_id,
        "device_id": r.device_id,
        "state": r.state,
        "fw_version": r.fw_version,
        "model_version": r.model_version,
        "last_seen": iso_utc(r.last_seen_ms),
        "last_seen_ms": r.last_seen_ms,
        "patient_id": r.patient_id,
        "hr_bpm": r.hr_bpm,
        "messages": r.messages,
        "role": "device",
        "credentials": "set" if acc is not None and acc.active else "none",
    }


def account_doc(acc: Any) -> dict[str, Any]:
    """An account no device row has (a host account, or a device never seen)."""
    return {
        "id": acc.username, "device_id": acc.device_id,
        "state": "offline" if acc.role == "device" else None, "fw_version": None,
        "model_version": None, "last_seen": None, "last_seen_ms": None, "patient_id": None,
        "hr_bpm": None, "messages": 0, "role": acc.role,
        "credentials": "set" if acc.active else "none",
    }


def accounts_by_name(store: Any) -> dict[str, Any]:
    from host.services.accounts import accounts

    return {a.username: a for a in accounts(store)}


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value


def fleet_docs(store: Any, *, all_accounts: bool = False,
               stale_after_s: float | None = None) -> list[dict[str, Any]]:
    """What ``fleet list --json`` prints: every device with its account (as ``medge
    monitor --json``), then with ``all_accounts`` every account without a device row
    (host accounts, devices never seen; removed ones too: credentials ``none``)."""
    by_name = accounts_by_name(store)
    rows = store.devices(stale_after_s=stale_after_s)
    docs = [device_doc(r, by_name.get(r.device_id)) for r in rows]
    if all_accounts:
        seen = {r.device_id for r in rows}
        docs += [account_doc(a) for name, a in sorted(by_name.items()) if name not in seen]
    return docs


def _read_store(db: Any) -> Any:
    from host.services.store import Store, StoreError

    try:
        return Store(db, readonly=True)
    except FileNotFoundError as exc:
        raise CliError(f"{exc} (run `medge demo` or `medge ingest` first)") from None
    except StoreError as exc:
        raise CliError(str(exc)) from None


def _write_store(db: Any) -> Any:
    from host.services.store import Store, StoreError

    try:
        return Store(db)
    except StoreError as exc:
        raise CliError(str(exc)) from None


def run_list(args: argparse.Namespace) -> int:
    with _read_store(args.db) as store:
        docs = fleet_docs(store, all_accounts=args.accounts, stale_after_s=args.stale_after)
    if args.json:
        print(json.dumps(docs, indent=2))
        return 0
    print(f"{'device':<16} {'state':<8} {'firmware':<10} {'model':<12} {'role':<7} "
          f"{'creds':<5} last seen (UTC)")
    for d in docs:
        print(f"{d['id']:<16} {d['state'] or '-':<8} {d['fw_version'] or '-':<10} "
              f"{d['model_version'] or '-':<12} {d['role']:<7} {d['credentials']:<5} "
              f"{d['last_seen'] or '-'}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from host.services.accounts import account

    with _read_store(args.db) as store:
        acc = account(store, args.id)
        docs = [d for d in fleet_docs(store, all_accounts=True) if d["id"] == args.id]
    if not docs:
        raise CliError(f"no device or account {args.id}")
    doc = dict(docs[0])
    doc["account"] = None if acc is None else acc.as_dict()
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    rows = [(k, v) for k, v in doc.items() if k != "account"]
    rows += [(f"account.{k}", v) for k, v in (doc["account"] or {}).items()]
    for key, value in rows:
        print(f"{key:<20} {'-' if value is None else value}")
    return 0


def _actor(args: argparse.Namespace) -> str:
    from host.services.audit import default_actor

    actor = args.actor if args.actor is not None else default_actor()
    if not actor.strip() or any(c in actor for c in "\n\r"):
        raise CliError("--actor: expected a name on one line")
    return actor


def _check_password_file(args: argparse.Namespace) -> None:
    """Refuse an existing --password-file before anything changes."""
    if args.password_file is not None and args.password_file.exists():
        raise CliError(f"--password-file {args.password_file}: exists (not overwritten)")


def _write_password(path: Path, password: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CliError(f"--password-file {path}: exists (not overwritten)") from None
    except OSError as exc:
        raise CliError(f"--password-file {path}: cannot create it "
                       f"({exc.strerror or exc})") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(password + "\n")


def _print_credentials(args: argparse.Namespace, acc: Any, password: str,
                       extra: dict[str, Any]) -> None:
    doc: dict[str, Any] = {"device_id": acc.username, "role": acc.role,
                           "username": acc.username, "incarnation": acc.incarnation}
    if args.password_file is not None:
        doc["password_file"] = str(args.password_file)
    else:
        doc["password"] = password
    doc.update(extra)
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    for key, value in doc.items():
        if isinstance(value, dict):
            for k, v in value.items():
                print(f"{key}.{k:<10} {v}")
        else:
            print(f"{key:<12} {'-' if value is None else value}")
    if args.password_file is None:
        print("(the password is shown only this once)")


def run_add(args: argparse.Namespace) -> int:
    from host.services.accounts import AccountError, Role, add

    actor = _actor(args)
    _check_password_file(args)
    ca_dir = None
    if args.cert:
        from host.services.tlsca import default_dir

        ca_dir = args.ca_dir or default_dir(args.db)
        if not (ca_dir / "ca.pem").exists():
            raise CliError(f"--cert: no CA in {ca_dir}: run `medge fleet ca init` first")
    with _write_store(args.db) as store:
        try:
            acc, password = add(store, args.id, Role(args.role), actor=actor)
        except AccountError as exc:
            raise CliError(str(exc)) from None
    extra: dict[str, Any] = {}
    if ca_dir is not None:
        from host.services.tlsca import CaError, issue_client

        try:
            extra["cert"] = issue_client(ca_dir, acc.username).as_dict()
        except CaError as exc:
            raise CliError(str(exc), exit_code=1) from None
    if args.password_file is not None:
        _write_password(args.password_file, password)
    _print_credentials(args, acc, password, extra)
    return 0


def run_passwd(args: argparse.Namespace) -> int:
    from host.services.accounts import AccountError, reset

    actor = _actor(args)
    _check_password_file(args)
    with _write_store(args.db) as store:
        try:
            acc, password = reset(store, args.id, actor=actor)
        except AccountError as exc:
            raise CliError(str(exc)) from None
    if args.password_file is not None:
        _write_password(args.password_file, password)
    _print_credentials(args, acc, password, {})
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from host.services.accounts import AccountError, remove

    actor = _actor(args)
    with _write_store(args.db) as store:
        try:
            acc = remove(store, args.id, actor=actor)
        except AccountError as exc:
            raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(acc.as_dict(), indent=2))
    else:
        print(f"removed {acc.username} ({acc.role}): it can no longer connect")
    return 0


def run_ca_init(args: argparse.Namespace) -> int:
    from host.services.tlsca import CaError, default_dir, init_ca

    folder = args.ca_dir or default_dir(args.db)
    try:
        files = init_ca(folder)
    except CaError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write the CA in {folder}: {exc.strerror or exc}",
                       exit_code=1) from None
    doc = {"ca_file": str(files.ca_file), "key_file": str(files.key_file)}
    print(json.dumps(doc, indent=2) if args.json else
          f"CA made: {files.ca_file} (key {files.key_file}, keep it private)")
    return 0


def _command_args(sets: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise CliError(f"--set {item!r}: expected KEY=VALUE")
        if key in out:
            raise CliError(f"--set {key}: given twice")
        out[key] = int(value) if value.isdigit() else value
    return out


def _known_device(store: Any, device_id: str) -> bool:
    from host.services.accounts import account

    acc = account(store, device_id)
    if acc is not None:
        return acc.role == "device"
    return any(r.device_id == device_id for r in store.devices())


@contextmanager
def _command_client(args: argparse.Namespace, devices: list[str]) -> Iterator[Any]:
    """A connected :class:`host.services.commands.CommandClient` watching ``devices``'
    acks; the devices must be known to the store first."""
    from host.services.commands import CommandClient

    with _read_store(args.db) as store:
        for device_id in devices:
            if not _known_device(store, device_id):
                raise CliError(f"no device {device_id} (medge fleet list --accounts)")
        if args.username is not None:
            from host.services.accounts import account

            acc = account(store, args.username)
            if acc is not None and acc.role != "operator":
                raise CliError(f"--username {args.username}: a {acc.role} account; commands "
                               "need an operator account (medge fleet add NAME --role "
                               "operator)")
    password = broker_password(args)
    try:
        client = CommandClient(args.host, args.port, username=args.username,
                               password=password, timeout_s=args.wait)
    except OSError as exc:
        raise CliError(f"--host/--port: {exc}", exit_code=1) from None
    try:
        for device_id in devices:
            client.watch(device_id)
        yield client
    except OSError as exc:
        raise CliError(f"--host/--port: {exc}", exit_code=1) from None
    finally:
        client.close()


def run_cmd(args: argparse.Namespace) -> int:
    from host.services import commands

    cmd_args = _command_args(args.sets)
    actor = _actor(args)
    expires_s = commands.DEFAULT_EXPIRES_S if args.expires is None else args.expires
    try:  # the name and args against the cmd schema, before anything is recorded
        commands.command_message(args.id, args.name, cmd_args, ts_ms=0, expires_ms=None)
    except commands.CommandError as exc:
        raise CliError(f"{args.name}: {exc}") from None
    with _write_store(args.db) as store, _command_client(args, [args.id]) as client:
        try:
            msg, ack = commands.send_and_wait(store, client, args.id, args.name, cmd_args,
                                              actor, wait_s=args.wait, expires_s=expires_s)
        except OSError as exc:
            raise CliError(f"{args.id} {args.name}: {exc}", exit_code=1) from None
    doc = {"cmd_id": msg["cmd_id"], "device_id": args.id, "name": args.name,
           "args": cmd_args, "result": "unanswered" if ack is None else ack["result"],
           "reason": None if ack is None else ack.get("reason"),
           "data": None if ack is None else ack.get("data")}
    if args.json:
        print(json.dumps(doc))
    elif ack is not None:
        detail = doc["reason"] if doc["reason"] else json.dumps(doc["data"] or {})
        print(f"{args.id} {args.name} {msg['cmd_id']}: {doc['result']} {detail}")
    if ack is None:
        raise CliError(f"{args.id} did not answer {msg['cmd_id']} within {args.wait:g} s "
                       "(offline? commands are not queued); recorded unanswered",
                       exit_code=1)
    return 0 if ack["result"] == "ok" else 1


def run_commands(args: argparse.Namespace) -> int:
    from host.services.commands import list_commands

    with _read_store(args.db) as store:
        rows = list_commands(store, args.id, limit=args.limit)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return 0
    print(f"{'sent (UTC)':<20} {'device':<16} {'command':<12} {'status':<10} by / answer")
    for r in rows:
        answer = r.reason or (json.dumps(r.data) if r.data else "")
        print(f"{iso_utc(r.created_ms) or '-':<20} {r.device_id:<16} {r.name:<12} "
              f"{r.status:<10} {r.created_by or '-'} {answer}".rstrip())
    return 0


def _key_dir(args: argparse.Namespace) -> Path:
    from host.services.ota import default_dir

    return args.key_dir if args.key_dir is not None else default_dir(args.db)


def run_ota_key(args: argparse.Namespace) -> int:
    from host.services import ota

    folder = _key_dir(args)
    try:
        if args.init:
            ota.init_key(folder)
        key = ota.load_key(folder)
    except ota.OtaError as exc:
        raise CliError(str(exc)) from None
    doc = {"key_file": str(folder / ota.KEY_NAME), "ota_public_key": ota.public_key_hex(key)}
    print(json.dumps(doc) if args.json else doc["ota_public_key"])
    return 0


def run_ota_push(args: argparse.Namespace) -> int:
    from host.services import commands, ota

    actor = _actor(args)
    if len(set(args.ids)) != len(args.ids):
        raise CliError("ID: a device is named twice")
    try:
        update = ota.prepare(args.model, ota.load_key(_key_dir(args)))
    except ota.OtaError as exc:
        raise CliError(str(exc)) from None

    with _write_store(args.db) as store, _command_client(args, list(args.ids)) as client:
        def send(device_id: str, name: str, cmd_args: dict[str, Any]) -> Any:
            summary = cmd_args
            if name == "model_chunk":
                summary = {"version": cmd_args["version"], "offset": cmd_args["offset"]}
            elif name == "model_begin":
                summary = {k: v for k, v in cmd_args.items() if k != "meta"}
            try:
                return commands.send_and_wait(store, client, device_id, name, cmd_args, actor,
                                              wait_s=args.wait, expires_s=args.wait,
                                              summary=summary, audited=False)[1]
            except OSError:
                return None

        def progress(device_id: str, state: str) -> None:
            if not args.json:
                print(f"{device_id}: {state}", flush=True)

        doc = ota.push(store, update, list(args.ids), send, actor, progress=progress)
    if args.json:
        print(json.dumps(doc))
    else:
        for dev, out in doc["devices"].items():
            if out.get("reason"):
                print(f"{dev}: {out['reason']}")
        print(f"{doc['campaign_id']} {doc['version']}: {doc['state']}")
    return 0 if doc["state"] == "done" else 1


def run_ota_list(args: argparse.Namespace) -> int:
    from host.services.ota import campaigns

    with _read_store(args.db) as store:
        docs = campaigns(store)
    if args.json:
        print(json.dumps(docs, indent=2))
        return 0
    for c in docs:
        jobs = ", ".join(f"{j['device_id']} {j['state']}" for j in c["jobs"])
        print(f"{c['campaign_id']} {c['version']} {c['state']} by {c['created_by']}: {jobs}")
    return 0


def run_strip(args: argparse.Namespace) -> int:
    from host.services import commands
    from host.services.ecgplot import picture_error

    bad = picture_error(args.out)
    if bad:
        raise CliError(bad)
    actor = _actor(args)
    with _write_store(args.db) as store, _command_client(args, [args.id]) as client:
        try:
            msg, ack = commands.send_and_wait(
                store, client, args.id, "ecg_strip", {"seconds": args.seconds}, actor,
                wait_s=args.wait, expires_s=commands.DEFAULT_EXPIRES_S)
        except OSError as exc:
            raise CliError(f"{args.id} ecg_strip: {exc}", exit_code=1) from None
    if ack is None:
        raise CliError(f"{args.id} did not answer {msg['cmd_id']} within {args.wait:g} s",
                       exit_code=1)
    if ack["result"] != "ok":
        raise CliError(f"{args.id} ecg_strip: {ack['result']}: {ack.get('reason', '')}",
                       exit_code=1)
    from host.services.ecgplot import device_strip

    try:
        doc = device_strip(ack["data"], args.id, args.out)
    except (KeyError, ValueError, TypeError) as exc:
        raise CliError(f"{args.id} ecg_strip: a strip this host cannot read ({exc})",
                       exit_code=1) from None
    except OSError as exc:
        raise CliError(f"--out {args.out}: {exc.strerror or exc}") from None
    print(json.dumps(doc) if args.json else f"{args.out}: {doc['seconds']:g} s, "
          f"{len(doc['beats'])} beats")
    return 0


def run_config(args: argparse.Namespace) -> int:
    from host.services import fleetconfig

    changes = _command_args(args.sets)
    if (changes or args.unset) and args.id is None:
        raise CliError("--set/--unset: name the device (ID)")
    if changes or args.unset:
        actor = _actor(args)
        with _write_store(args.db) as store:
            if not _known_device(store, args.id):
                raise CliError(f"no device {args.id} (medge fleet list --accounts)")
            try:
                fleetconfig.set_desired(store, args.id, changes, args.unset, actor)
            except fleetconfig.ConfigError as exc:
                raise CliError(str(exc)) from None
    with _read_store(args.db) as store:
        docs = [d.as_dict() for d in fleetconfig.drift(store, args.id)]
    if args.id is not None and not docs:
        docs = [{"device_id": args.id, "state": None, "desired": {}, "reported": None,
                 "pending": {}}]
    if args.json:
        print(json.dumps(docs[0] if args.id is not None else docs, indent=2))
        return 0
    for d in docs:
        rep = d["reported"] or {}
        print(f"{d['device_id']} ({d['state'] or 'never seen'})")
        for key in fleetconfig.KEYS:
            if key in d["desired"] or key in rep:
                mark = "  pending" if key in d["pending"] else ""
                print(f"  {key:<18} desired {d['desired'].get(key, '-')!s:<14} "
                      f"reported {rep.get(key, '-')}{mark}")
    return 0


def run_sync(args: argparse.Namespace) -> int:
    import time

    from host.commands.common import stop_on_signals
    from host.services import fleetconfig

    actor = _actor(args)
    stop = stop_on_signals() if args.watch else None
    end = None if args.duration is None else time.monotonic() + args.duration
    ok = True
    with _write_store(args.db) as store, _command_client(args, []) as client:
        while True:
            try:
                results = fleetconfig.sync(store, client, actor, wait_s=args.wait)
            except OSError as exc:
                raise CliError(f"--host/--port: {exc}", exit_code=1) from None
            ok = all(r["result"] == "ok" for r in results)
            if args.json:
                print(json.dumps({"results": results}), flush=True)
            else:
                for r in results:
                    print(f"{r['device_id']} set {json.dumps(r['set'])}: {r['result']}"
                          + (f" {r['reason']}" if r["reason"] else ""), flush=True)
            if not args.watch or (end is not None and time.monotonic() >= end):
                break
            if stop is not None and stop.wait(args.interval):
                break
    return 0 if ok else 1
