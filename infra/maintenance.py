"""Table maintenance: compaction of small files, snapshot expiry, and removal of orphan files.

pyiceberg expires snapshots but leaves their files on disk; ``remove_orphans`` deletes every file
under a table's folder that the table's current metadata no longer reaches (old metadata files,
manifest lists and manifests of expired snapshots, data files only they held). This is what makes
an erasure final on disk once the retention window has passed.

A load writes its data files before it commits them (``dlt_pipelines.fhir.bronze.stage_rows``),
so until its commits they look like orphans. Each load marks itself running (``running_load``);
``remove_orphans`` keeps every file written since the oldest running load began. The mark of a
load that was killed is dropped once its process is gone (on the same host) or after
``STALE_LOAD_S`` (elsewhere), and the files it left become orphans like any other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

logger = logging.getLogger(__name__)

SMALL_FILES = 8


@dataclass
class MaintenanceReport:
    table: str
    compacted_files: int = 0
    expired_snapshots: int = 0
    removed_files: int = 0


def _strip(location: str) -> str:
    return location.split("://", 1)[-1].strip("/")


def referenced_files(table) -> set[str]:
    """Every file the table's current metadata reaches, as paths inside the lake."""
    files = {_strip(table.metadata_location)}
    io = table.io
    for snapshot in table.metadata.snapshots:
        files.add(_strip(snapshot.manifest_list))
        for manifest in snapshot.manifests(io):
            files.add(_strip(manifest.manifest_path))
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=False):
                files.add(_strip(entry.data_file.file_path))
    for statistics in table.metadata.statistics:
        files.add(_strip(statistics.statistics_path))
    return files


LOADS_FOLDER = "loads"
STALE_LOAD_S = 24 * 3600
_CLOCK_SLACK_S = 60


@contextlib.contextmanager
def running_load(lake, load_id: str) -> Iterator[None]:
    """Mark a load as running while it may still commit the files it has written."""
    path = f"{LOADS_FOLDER}/{load_id}.json"
    record = {"load_id": load_id, "host": socket.gethostname(), "pid": os.getpid(),
              "started_at": time.time()}
    lake.fs.pipe_file(path, json.dumps(record).encode())
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lake.fs.rm_file(path)


def _alive(record: dict) -> bool:
    if record.get("host") != socket.gethostname():
        return time.time() - float(record.get("started_at", 0)) < STALE_LOAD_S
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    return True


def running_since(lake) -> float | None:
    """When the oldest running load began (seconds since the epoch), or None; marks left by
    loads that are gone are removed."""
    if not lake.fs.exists(LOADS_FOLDER):
        return None
    oldest = None
    for path in lake.fs.find(LOADS_FOLDER):
        try:
            record = json.loads(lake.fs.cat_file(path))
        except (FileNotFoundError, ValueError):
            continue
        if _alive(record):
            started = float(record["started_at"])
            oldest = started if oldest is None else min(oldest, started)
        else:
            with contextlib.suppress(FileNotFoundError):
                lake.fs.rm_file(path)
    return oldest


def remove_orphans(lake, identifier: str) -> int:
    """Delete the files under the table's folder that its metadata does not reach, except those
    written since the oldest running load began (they may be its staged files)."""
    table = lake.table(identifier)
    keep = referenced_files(table)
    location = _strip(table.metadata.location)
    since = running_since(lake)
    removed = kept = 0
    for path in lake.fs.find(location):
        if _strip(path) in keep:
            continue
        if since is not None and lake.fs.modified(path).timestamp() >= since - _CLOCK_SLACK_S:
            kept += 1
            continue
        lake.fs.rm_file(path)
        removed += 1
    if kept:
        logger.info("%s: %d unreferenced files kept: a load is running", identifier, kept)
    return removed


def expire_snapshots(lake, identifier: str, *, older_than: dt.datetime) -> int:
    """Expire the snapshots older than ``older_than``, never the current one; returns how many."""
    cutoff_ms = older_than.timestamp() * 1000

    def change(table) -> int:
        current = table.current_snapshot()
        expired = [snapshot.snapshot_id for snapshot in table.metadata.snapshots
                   if snapshot.timestamp_ms < cutoff_ms
                   and (current is None or snapshot.snapshot_id != current.snapshot_id)]
        if expired:
            table.maintenance.expire_snapshots().by_ids(expired).commit()
        return len(expired)

    return lake.commit(identifier, change)


def compact(lake, identifier: str) -> int:
    """Rewrite a table whose current snapshot has many small files into one file; returns how
    many files were merged (0 when there was nothing to do)."""
    table = lake.table(identifier)
    if table.current_snapshot() is None:
        return 0
    files = list(table.scan().plan_files())
    if len(files) < SMALL_FILES:
        return 0
    rows = table.scan().to_arrow()
    lake.commit(identifier, lambda fresh: fresh.overwrite(rows))
    return len(files)


def maintain(lake, *, snapshot_days: float | None = None) -> list[MaintenanceReport]:
    days = float(lake.settings.get("retention.snapshot_days") if snapshot_days is None
                 else snapshot_days)
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    reports = []
    for namespace in sorted({ns[0] for ns in lake.catalog.list_namespaces()}):
        for identifier in lake.tables(namespace):
            report = MaintenanceReport(identifier, compacted_files=compact(lake, identifier))
            report.expired_snapshots = expire_snapshots(lake, identifier, older_than=cutoff)
            report.removed_files = remove_orphans(lake, identifier)
            logger.info("%s: %d files compacted, %d snapshots expired, %d orphan files removed",
                        identifier, report.compacted_files, report.expired_snapshots,
                        report.removed_files)
            reports.append(report)
    return reports
