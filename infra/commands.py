"""carelake's own subcommands: run, forget, keys, audit, maintain, query, export-patient."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import time
from pathlib import Path

import msgspec

from infra.settings import load_settings
from infra.stages import STAGES, StageContext, StageResult, run_stage

logger = logging.getLogger(__name__)

SUMMARY_FILE = "run-summary.json"


def open_lake(args, *, create: bool = False, role: str | None = None):
    from infra.lake import Lake

    settings = load_settings(data_dir=args.data_dir)
    return Lake.open(settings, role=role or args.role, create=create)


# run ------------------------------------------------------------------------------------------

def cmd_run(args) -> int:
    lake = open_lake(args, create=True)
    context = StageContext(settings=lake.settings, lake=lake, sources=list(args.sources),
                           progress=not args.no_progress)
    wanted = set(args.stages.split(",")) if args.stages else None
    started = time.perf_counter()
    for name, target in STAGES:
        if wanted is not None and name not in wanted:
            context.results[name] = StageResult(status="skipped", reason="not asked for")
            continue
        try:
            context.results[name] = run_stage(name, target, context)
        except Exception as error:  # noqa: BLE001 - recorded, and the run goes on
            logger.exception("stage %s failed", name)
            context.results[name] = StageResult(status="failed",
                                                reason=f"{type(error).__name__}: {error}")
    summary = {
        "lake_id": lake.lake_id,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 3),
        "stages": {name: result.as_json() for name, result in context.results.items()},
    }
    (lake.data_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    for name, result in context.results.items():
        print(f"{name:8} {result.status:14} {result.seconds:7.1f} s  {result.reason}")
    print(f"summary: {lake.data_dir / SUMMARY_FILE}")
    return 1 if any(result.status == "failed" for result in context.results.values()) else 0


# forget and export ----------------------------------------------------------------------------

def cmd_forget(args) -> int:
    from infra.forget import forget, resolve_patient

    lake = open_lake(args)
    patient_key = resolve_patient(lake, patient_key=args.patient_key, source_id=args.source_id)
    report = forget(lake, patient_key, retention_days=args.retention_days)
    print(json.dumps(report.as_json(), indent=2))
    return 0


def cmd_export_patient(args) -> int:
    from infra.reidentify import export_patient

    lake = open_lake(args, role="reidentifier")
    bundle = export_patient(lake, args.patient_key, reason=args.reason)
    Path(args.out).write_bytes(msgspec.json.Encoder(decimal_format="number").encode(bundle))
    print(f"wrote a Bundle of {len(bundle['entry'])} resources to {args.out}")
    return 0


# keys -----------------------------------------------------------------------------------------

def cmd_keys(args) -> int:
    from infra import keys_admin

    lake_args = argparse.Namespace(data_dir=args.data_dir, role="admin")
    if args.keys_command == "restore":
        keys_admin.restore(load_settings(data_dir=args.data_dir), Path(args.backup))
        print("keys restored")
        return 0
    lake = open_lake(lake_args)
    if args.keys_command == "backup":
        count = keys_admin.backup(lake, Path(args.out))
        print(f"wrote {count} wrapped keys to {args.out}: keep it away from the data folder's "
              "backups, and keep the key-encryption key separately")
    elif args.keys_command == "rotate":
        print(json.dumps(keys_admin.rotate(lake, data_key=args.data_key, kek=args.kek), indent=2))
    elif args.keys_command == "show":
        print(json.dumps(keys_admin.describe(lake), indent=2))
    return 0


# audit, maintain, query -----------------------------------------------------------------------

def cmd_audit(args) -> int:
    lake = open_lake(args, role="auditor" if args.role == "loader" else args.role)
    entries = lake.audit.entries()
    if args.audit_command == "verify":
        print(f"audit log intact: {len(entries)} entries, hash chain verified")
        return 0
    for entry in entries:
        print(json.dumps(entry, sort_keys=True))
    return 0


def cmd_maintain(args) -> int:
    from infra.maintenance import maintain

    lake = open_lake(args)
    for report in maintain(lake, snapshot_days=args.snapshot_days):
        print(f"{report.table}: {report.compacted_files} files compacted, "
              f"{report.expired_snapshots} snapshots expired, "
              f"{report.removed_files} orphans removed")
    return 0


def cmd_query(args) -> int:
    from infra.timetravel import bronze_connection, parse_as_of

    lake = open_lake(args, role="analyst" if args.role == "loader" else args.role)
    as_of = parse_as_of(args.as_of) if args.as_of else None
    connection = bronze_connection(lake, as_of=as_of, snapshot_id=args.snapshot_id,
                                   table=args.table)
    result = connection.sql(args.sql)
    if result is None:
        return 0
    columns = result.columns
    print("\t".join(columns))
    for row in result.fetchall():
        print("\t".join("" if value is None else str(value) for value in row))
    return 0


def register(subparsers) -> None:
    run = subparsers.add_parser("run", help="run every stage on the given sources (default: the "
                                             "bundled sample)")
    run.add_argument("sources", nargs="*", help="FHIR files, folders, or a FHIR server base URL")
    run.add_argument("--stages", help="comma-separated subset: " + ",".join(n for n, _ in STAGES))
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(handler=cmd_run)

    forget = subparsers.add_parser("forget", help="erase one patient everywhere (GDPR art. 17)")
    who = forget.add_mutually_exclusive_group(required=True)
    who.add_argument("--patient-key", help="the pseudonymous patient key")
    who.add_argument("--source-id", help="the patient's id in the source, as Patient/ID")
    forget.add_argument("--retention-days", type=float,
                        help="keep older snapshots this long (legal hold); default from settings")
    forget.set_defaults(handler=cmd_forget)

    export = subparsers.add_parser("export-patient",
                                   help="a patient's data as a FHIR Bundle (GDPR right of access)")
    export.add_argument("--patient-key", required=True)
    export.add_argument("--reason", required=True, help="why (recorded in the audit log)")
    export.add_argument("--out", required=True, help="the Bundle file to write (outside the lake)")
    export.set_defaults(handler=cmd_export_patient)

    keys = subparsers.add_parser("keys", help="back up, restore, rotate and show keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    backup = keys_sub.add_parser("backup", help="export the wrapped keys for safe keeping")
    backup.add_argument("--out", required=True)
    restore = keys_sub.add_parser("restore", help="restore wrapped keys from a backup")
    restore.add_argument("backup")
    rotate = keys_sub.add_parser("rotate", help="new data-key version, or re-wrap under a new KEK")
    rotate.add_argument("--data-key", help="name of the data key to rotate (for example lake)")
    rotate.add_argument("--kek", action="store_true", help="re-wrap every data key under a new "
                                                           "key-encryption key file")
    keys_sub.add_parser("show", help="key names, versions and the KEK id (no key material)")
    keys.set_defaults(handler=cmd_keys)

    audit = subparsers.add_parser("audit", help="read or verify the audit log (auditor role)")
    audit.add_argument("audit_command", choices=["show", "verify"])
    audit.set_defaults(handler=cmd_audit)

    maintain = subparsers.add_parser("maintain", help="compact small files, expire snapshots, "
                                                       "remove orphan files")
    maintain.add_argument("--snapshot-days", type=float, help="default from settings")
    maintain.set_defaults(handler=cmd_maintain)

    query = subparsers.add_parser("query", help="SQL over the bronze tables, now or as of a time")
    query.add_argument("sql", help="SQL; each bronze table is a view bronze.<type>")
    when = query.add_mutually_exclusive_group()
    when.add_argument("--as-of", help="an ISO timestamp: each table at the snapshot current then")
    when.add_argument("--snapshot-id", type=int, help="a snapshot id (needs --table)")
    query.add_argument("--table", help="with --snapshot-id: the table it belongs to")
    query.set_defaults(handler=cmd_query)

