"""Ingest subcommands: load sources into the lake, and list or replay quarantined records."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa

from dlt_pipelines.fhir import bronze
from dlt_pipelines.fhir.pipeline import ingest, open_quarantined
from infra.scratch import private_scratch


def _lake(args):
    from infra.commands import open_lake

    return open_lake(args, create=True)


def cmd_ingest(args) -> int:
    lake = _lake(args)
    report = ingest(lake, args.sources, progress=not args.no_progress)
    print(json.dumps(report.as_json(), indent=2))
    return 0


def cmd_quarantine_list(args) -> int:
    lake = _lake(args)
    if not lake.has_table(bronze.QUARANTINE):
        print("the quarantine is empty")
        return 0
    rows = lake.read_arrow(bronze.QUARANTINE, columns=(
        "quarantine_id", "source", "locator", "resource_type", "reason", "replayed_load_id"))
    waiting = [row for row in rows.to_pylist() if not row["replayed_load_id"]]
    for row in waiting:
        print(f"{row['quarantine_id']}  {row['source']}  {row['locator']:>14}  "
              f"{row['resource_type'] or '-':20}  {row['reason']}")
    by_reason = Counter(row["reason"] for row in waiting)
    print(f"{len(waiting)} record(s) waiting, {rows.num_rows - len(waiting)} replayed")
    for reason, count in by_reason.most_common():
        print(f"  {count:6}  {reason}")
    return 0


def replay(lake, *, ids: set[str] | None = None) -> dict[str, int]:
    """Load quarantined records again (after the input or the code was fixed). Records that still
    fail are quarantined anew with their current reason; the replayed ones are marked."""
    if not lake.has_table(bronze.QUARANTINE):
        return {"replayed": 0, "loaded": 0, "still_quarantined": 0}
    rows = lake.read_arrow(bronze.QUARANTINE).to_pylist()
    chosen = [row for row in rows if not row["replayed_load_id"] and row["record"]
              and (ids is None or row["quarantine_id"] in ids)]
    if not chosen:
        return {"replayed": 0, "loaded": 0, "still_quarantined": 0}
    key = lake.keys.material("quarantine")
    with private_scratch("replay") as scratch:
        path = scratch / "quarantined.ndjson"
        with open(path, "wb") as handle:
            for row in chosen:
                handle.write(open_quarantined(key, row["record"]).replace(b"\n", b" ") + b"\n")
        report = ingest(lake, [path], workers=1)
    replayed = {row["quarantine_id"] for row in chosen}

    def mark(table):
        from pyiceberg.expressions import In

        marked = [dict(row, replayed_load_id=report.load_id) for row in chosen]
        with table.transaction() as transaction:
            transaction.delete(delete_filter=In("quarantine_id", sorted(replayed)))
            transaction.append(pa.Table.from_pylist(marked, schema=bronze.QUARANTINE_SCHEMA))

    lake.commit(bronze.QUARANTINE, mark)
    still = sum(report.quarantined.values())
    lake.audit.append("quarantine-replay", records=len(chosen), still_quarantined=still,
                      load_id=report.load_id)
    return {"replayed": len(chosen), "loaded": report.resources, "still_quarantined": still}


def cmd_quarantine_replay(args) -> int:
    lake = _lake(args)
    print(json.dumps(replay(lake, ids=set(args.ids) if args.ids else None), indent=2))
    return 0


def register(subparsers) -> None:
    load = subparsers.add_parser("ingest", help="load FHIR files or folders into the lake only")
    load.add_argument("sources", nargs="+")
    load.add_argument("--no-progress", action="store_true")
    load.set_defaults(handler=cmd_ingest)

    quarantine = subparsers.add_parser("quarantine", help="list or replay rejected records")
    actions = quarantine.add_subparsers(dest="quarantine_command", required=True)
    actions.add_parser("list", help="records waiting, with their place and reason").set_defaults(
        handler=cmd_quarantine_list)
    again = actions.add_parser("replay", help="load quarantined records again")
    again.add_argument("ids", nargs="*", help="quarantine ids (default: every waiting record)")
    again.set_defaults(handler=cmd_quarantine_replay)
