"""The ingest: FHIR files (and servers) through dlt into the encrypted bronze Iceberg tables.

Parsing, validation, reference normalization and pseudonymization run in worker processes, one
file (or one slice of a large NDJSON file) per task, and hand back Arrow tables whose patient data
is already sealed. A dlt resource yields those tables, in batches of ``lake.batch_rows`` rows per
resource type, so memory is bounded by a batch and not by the input. dlt's working folder is a
private scratch folder on memory-backed storage, removed after the load; its state (incremental
high-water marks) is kept encrypted in the lake between runs. The dlt destination merges each
load file into its table (``bronze.merge_batch``) in one Iceberg commit.
"""

from __future__ import annotations

import base64
import ctypes
import datetime as dt
import itertools
import logging
import multiprocessing
import os
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dlt_pipelines.fhir import bronze
from dlt_pipelines.fhir.sources import (
    Entry,
    input_files,
    is_streamed,
    read_file,
    read_ndjson_line,
    source_label,
)
from dlt_pipelines.fhir.transform import Outcome, Transformer
from infra.scratch import private_scratch

logger = logging.getLogger(__name__)

PIPELINE_NAME = "carelake_fhir"
SLICE_BYTES = 16 << 20
QUARANTINE_TOKEN = "clq1:"


@dataclass
class IngestReport:
    load_id: str
    files: int = 0
    bytes: int = 0
    resources: int = 0
    per_type: dict[str, dict[str, int]] = field(default_factory=dict)
    recorded: Counter = field(default_factory=Counter)
    quarantined: Counter = field(default_factory=Counter)
    unresolved_references: int = 0
    scratch_peak_bytes: int = 0  # dlt's files at their largest (memory-backed storage)

    def as_json(self) -> dict[str, Any]:
        return {
            "load_id": self.load_id, "files": self.files, "bytes": self.bytes,
            "resources": self.resources, "per_resource_type": dict(sorted(self.per_type.items())),
            "recorded_requests": dict(self.recorded.most_common()),
            "quarantined": sum(self.quarantined.values()),
            "quarantine_reasons": dict(self.quarantined.most_common()),
            "unresolved_references": self.unresolved_references,
            "scratch_peak_mb": round(self.scratch_peak_bytes / 2**20, 1),
        }


# --- work units ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Piece:
    path: str
    start: int = 0
    end: int = -1  # -1: the whole file
    first_line: int = 1


@dataclass(frozen=True)
class Task:
    """The work of one worker call: pieces of files, about ``TASK_BYTES`` together; or one
    bundle too large to read whole (``streamed``), which the main process reads entry by entry
    and hands on in parts of about ``PART_BYTES``, so memory holds a part, not the bundle."""

    pieces: tuple[Piece, ...]
    streamed: bool = False


TASK_BYTES = 8 << 20


def _pieces(files: list[Path]) -> Iterator[tuple[Piece, int]]:
    """Each file whole, except large plain NDJSON files, cut into slices at line boundaries."""
    for path in files:
        size = path.stat().st_size
        if ".ndjson" not in path.name or path.name.endswith(".gz") or size <= SLICE_BYTES:
            yield Piece(str(path)), size
            continue
        with open(path, "rb") as handle:
            start, line = 0, 1
            while start < size:
                handle.seek(min(start + SLICE_BYTES, size))
                handle.readline()
                end = min(handle.tell(), size)
                handle.seek(start)
                lines = handle.read(end - start).count(b"\n")
                yield Piece(str(path), start, end, line), end - start
                start, line = end, line + lines


def plan_tasks(files: list[Path]) -> list[Task]:
    """Pieces packed into tasks of about ``TASK_BYTES``, in input order: a task per small file
    would spend more on handing work to a worker than on the work."""
    tasks: list[Task] = []
    batch: list[Piece] = []
    size = 0
    for piece, length in _pieces(files):
        if is_streamed(Path(piece.path)):
            tasks.append(Task((piece,), streamed=True))
            continue
        if batch and size + length > TASK_BYTES:
            tasks.append(Task(tuple(batch)))
            batch, size = [], 0
        batch.append(piece)
        size += length
    if batch:
        tasks.append(Task(tuple(batch)))
    return tasks


def _entries(piece: Piece) -> Iterator[Entry]:
    path = Path(piece.path)
    if piece.end < 0:
        yield from read_file(path)
        return
    with open(path, "rb") as handle:
        handle.seek(piece.start)
        blob = handle.read(piece.end - piece.start)
    for offset, line in enumerate(blob.splitlines(), start=piece.first_line):
        if line.strip():
            yield from read_ndjson_line(line, offset)


# --- the worker side -------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _worker_init(values: dict[str, Any]) -> None:
    # A failure here is kept and raised by the first task: a pool whose initializer raises
    # restarts its workers forever instead of reporting.
    try:
        from infra.lake import Lake
        from infra.settings import Settings

        _WORKER["lake"] = Lake.open(Settings(values), create=False)
    except Exception as error:  # noqa: BLE001 - re-raised in run_task
        _WORKER["error"] = error


@dataclass
class TaskResult:
    tables: dict[str, pa.Table]
    quarantine: list[dict[str, Any]]
    recorded: Counter
    resources: int
    unresolved: int
    input_bytes: int = 0


def _seal_record(quarantine_key: bytes, raw: bytes | None) -> str | None:
    if raw is None:
        return None
    nonce = os.urandom(12)
    sealed = AESGCM(quarantine_key).encrypt(nonce, raw, b"carelake quarantine v1")
    return QUARANTINE_TOKEN + base64.urlsafe_b64encode(nonce + sealed).decode()


def open_quarantined(quarantine_key: bytes, token: str) -> bytes:
    raw = base64.urlsafe_b64decode(token[len(QUARANTINE_TOKEN):])
    return AESGCM(quarantine_key).decrypt(raw[:12], raw[12:], b"carelake quarantine v1")


def run_task(task: Task, load_id: str, loaded_at: dt.datetime, lake=None) -> TaskResult:
    if lake is None:
        if "error" in _WORKER:
            raise _WORKER["error"]
        lake = _WORKER["lake"]
    transformer = Transformer(lake.patients, index_key=lake.keys.material("index"),
                              source="", load_id=load_id, loaded_at=loaded_at)
    collector = _Collector(lake, load_id, loaded_at)
    for piece in task.pieces:
        transformer.source = source_label(Path(piece.path))
        collector.add(transformer, _entries(piece), transformer.source)
    result = collector.result(transformer)
    result.input_bytes = sum(_piece_bytes(piece) for piece in task.pieces)
    return result


PART_BYTES = 32 << 20


def run_streamed(task: Task, load_id: str, loaded_at: dt.datetime, lake) -> Iterator[TaskResult]:
    """A streamed bundle's results, a part of about ``PART_BYTES`` of resources at a time."""
    (piece,) = task.pieces
    transformer = Transformer(lake.patients, index_key=lake.keys.material("index"),
                              source=source_label(Path(piece.path)), load_id=load_id,
                              loaded_at=loaded_at)
    entries = _entries(piece)
    while True:
        collector = _Collector(lake, load_id, loaded_at)
        collector.add(transformer, entries, transformer.source, limit_bytes=PART_BYTES)
        if not collector.count:
            return
        result = collector.result(transformer)
        transformer.unresolved_references = 0
        result.input_bytes = collector.body_bytes
        yield result


def _piece_bytes(piece: Piece) -> int:
    return piece.end - piece.start if piece.end >= 0 else os.path.getsize(piece.path)


def _collect(transformer: Transformer, entries: Iterable[Entry], lake, source: str,
             load_id: str, loaded_at: dt.datetime) -> TaskResult:
    collector = _Collector(lake, load_id, loaded_at)
    collector.add(transformer, entries, source)
    return collector.result(transformer)


class _Collector:
    """Outcomes gathered into one Arrow table per resource type, and the quarantine rows."""

    def __init__(self, lake, load_id: str, loaded_at: dt.datetime) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.quarantine: list[dict[str, Any]] = []
        self.recorded: Counter = Counter()
        self.resources = 0
        self.count = 0
        self.body_bytes = 0
        self._key = lake.keys.material("quarantine")
        self._load_id = load_id
        self._loaded_at = loaded_at

    def add(self, transformer: Transformer, entries: Iterable[Entry], source: str, *,
            limit_bytes: int | None = None) -> None:
        """Take the outcomes of ``entries``; with ``limit_bytes``, stop once the resources
        taken hold that many bytes (the rest of the iterator is left for the next call)."""
        rows, recorded = self.rows, self.recorded
        for entry in entries:
            self.count += 1
            if limit_bytes is not None:
                self.body_bytes += len(entry.body or b"")
            outcome: Outcome = transformer.outcome(entry)
            kind = outcome.kind
            if kind == "upsert" or kind == "delete":
                rows[outcome.resource_type].append(outcome.row)
                self.resources += kind == "upsert"
            elif kind == "recorded":
                recorded[outcome.reason] += 1
            else:
                self.quarantine.append({
                    "quarantine_id": uuid.uuid4().hex, "source": source,
                    "locator": entry.locator, "resource_type": outcome.resource_type,
                    "patient_key": outcome.patient_key, "reason": outcome.reason,
                    "record": _seal_record(self._key, outcome.raw), "load_id": self._load_id,
                    "quarantined_at": self._loaded_at, "replayed_load_id": None,
                })
            if limit_bytes is not None and self.body_bytes >= limit_bytes:
                return

    def result(self, transformer: Transformer) -> TaskResult:
        tables = {kind: _table(batch) for kind, batch in self.rows.items()}
        return TaskResult(tables, self.quarantine, self.recorded, self.resources,
                          transformer.unresolved_references)


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as a BATCH_SCHEMA table, built a column at a time (``from_pylist`` costs three
    times as much on rows this wide)."""
    return pa.Table.from_arrays(
        [pa.array([row[name] for row in rows], type=schema_field.type)
         for name, schema_field in zip(bronze.BATCH_SCHEMA.names, bronze.BATCH_SCHEMA)],
        schema=bronze.BATCH_SCHEMA)


# --- the driver ------------------------------------------------------------------------------

def _results(lake, tasks: list[Task], load_id: str, loaded_at: dt.datetime,
             workers: int) -> Iterator[TaskResult]:
    streamed = [task for task in tasks if task.streamed]
    tasks = [task for task in tasks if not task.streamed]
    if workers <= 1 or len(tasks) <= 1:
        for task in streamed:
            yield from run_streamed(task, load_id, loaded_at, lake)
        for task in tasks:
            yield run_task(task, load_id, loaded_at, lake)
        return
    context = multiprocessing.get_context("spawn")
    # The workers get the resolved settings themselves, not just the environment, so settings
    # given in-process (overrides, a custom environ) hold there too.
    values = lake.settings.with_overrides(**{"lake.data_dir": str(lake.data_dir),
                                             "keys.key_dir": str(lake.settings.key_dir)}).values
    # A few tasks per worker are in flight: Pool.imap would read its whole input ahead and keep
    # every finished result until it is consumed, which would hold the input in memory. A new
    # task goes out as each result comes back, so no worker waits for the others, and the
    # workers keep going while the main process loads a chunk (``RUN_BYTES``).
    window = workers * IN_FLIGHT_PER_WORKER
    queued = iter(tasks)
    with context.Pool(workers, initializer=_worker_init, initargs=(values,)) as pool:
        pending: deque = deque(pool.apply_async(run_task, (task, load_id, loaded_at))
                               for task in itertools.islice(queued, window))

        def take() -> TaskResult:
            """The oldest task's result, with the next task sent in its place."""
            result = pending.popleft().get()
            for task in itertools.islice(queued, 1):
                pending.append(pool.apply_async(run_task, (task, load_id, loaded_at)))
            return result

        # Streamed bundles are read here while the workers take the other tasks; the workers'
        # finished results are passed on between two parts.
        for task in streamed:
            for part in run_streamed(task, load_id, loaded_at, lake):
                yield part
                while pending and pending[0].ready():
                    yield take()
        while pending:
            yield take()


BATCH_BYTES = 8 << 20
FILE_BYTES = 64 << 20
RUN_BYTES = 128 << 20
MERGE_BYTES = 16 << 20
IN_FLIGHT_PER_WORKER = 3


def _runs(results: Iterator[TaskResult]) -> Iterator[Iterator[TaskResult]]:
    """``results`` cut into consecutive runs of about ``RUN_BYTES`` of input each."""
    upcoming = next(results, None)
    while upcoming is not None:
        def run(first: TaskResult) -> Iterator[TaskResult]:
            nonlocal upcoming
            item, size = first, 0
            while item is not None:
                yield item
                size += item.input_bytes
                item = next(results, None)
                if size >= RUN_BYTES:
                    break
            upcoming = item

        current = upcoming
        upcoming = None
        yield run(current)


def _batches(results: Iterable[TaskResult], report: IngestReport, batch_rows: int,
             progress) -> Iterator[tuple[str, pa.Table]]:
    """Arrow batches per resource type, each at most ``batch_rows`` rows or ``BATCH_BYTES``."""
    import dlt

    pending: dict[str, list[pa.Table]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    sizes: dict[str, int] = defaultdict(int)
    for result in results:
        report.resources += result.resources
        report.recorded.update(result.recorded)
        report.unresolved_references += result.unresolved
        for row in result.quarantine:
            report.quarantined[row["reason"]] += 1
        if result.quarantine:
            yield dlt.mark.with_table_name(
                pa.Table.from_pylist(result.quarantine, schema=bronze.QUARANTINE_SCHEMA),
                "quarantine")
        for kind, table in result.tables.items():
            pending[kind].append(table)
            counts[kind] += table.num_rows
            sizes[kind] += table.nbytes
            if counts[kind] >= batch_rows or sizes[kind] >= BATCH_BYTES:
                yield dlt.mark.with_table_name(pa.concat_tables(pending.pop(kind)), kind)
                counts[kind] = sizes[kind] = 0
        if progress is not None:
            progress()
    for kind, tables in pending.items():
        yield dlt.mark.with_table_name(pa.concat_tables(tables), kind)


def _destination(lake, report: IngestReport, batch_rows: int):
    import dlt

    index = bronze.LoadIndex()

    @dlt.destination(batch_size=0, loader_file_format="parquet", name="carelake_bronze",
                     naming_convention="direct", skip_dlt_columns_and_tables=True,
                     max_parallel_load_jobs=1)
    def carelake_bronze(items: str, table: dict[str, Any]) -> None:
        name = table["name"]
        if name == "quarantine":
            data = pq.read_table(items)
            lake.append(bronze.QUARANTINE, data.select(bronze.QUARANTINE_SCHEMA.names)
                        .cast(bronze.QUARANTINE_SCHEMA))
            return
        # A load file is merged a batch at a time, so memory holds one batch, not the file: at
        # most ``batch_rows`` rows and about MERGE_BYTES (a merge holds a few copies of its batch).
        parquet = pq.ParquetFile(items)
        metadata = parquet.metadata
        row_groups = [metadata.row_group(number) for number in range(metadata.num_row_groups)]
        row_bytes = max([row_group.total_byte_size // max(1, row_group.num_rows)
                         for row_group in row_groups] + [1])
        rows = max(1, min(batch_rows, MERGE_BYTES // row_bytes))
        for group in parquet.iter_batches(batch_size=rows, columns=bronze.BATCH_SCHEMA.names):
            _merge(pa.Table.from_batches([group]))

    def _merge(data: pa.Table) -> None:
        batch = data.select(bronze.BATCH_SCHEMA.names).cast(bronze.BATCH_SCHEMA)
        resource_type = batch.column("resource_type")[0].as_py()
        counts = bronze.merge_batch(lake, resource_type, batch, index)
        entry = report.per_type.setdefault(resource_type, {
            "loaded": 0, "updated": 0, "deleted": 0, "unchanged": 0, "stale": 0})
        entry["loaded"] += counts.inserted
        entry["updated"] += counts.updated
        entry["deleted"] += counts.deleted
        entry["unchanged"] += counts.unchanged
        entry["stale"] += counts.stale

    return carelake_bronze


STATE_FOLDER = f"dlt/{PIPELINE_NAME}"
STATE_FILES = ("state.json", "schemas")


def _restore_state(lake, working: Path) -> None:
    """Put the pipeline's state and schemas, kept encrypted in the lake, into dlt's folder."""
    if not lake.fs.exists(STATE_FOLDER):
        return
    for path in lake.fs.find(STATE_FOLDER):
        relative = path[len(STATE_FOLDER) + 1:]
        target = working / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(lake.fs.cat_file(path))


def _save_state(lake, working: Path) -> None:
    for name in STATE_FILES:
        source = working / name
        if source.is_file():
            files = [source]
        else:
            files = sorted(source.rglob("*")) if source.exists() else []
        for path in files:
            if path.is_file():
                lake.fs.pipe_file(f"{STATE_FOLDER}/{path.relative_to(working)}", path.read_bytes())


def ingest(lake, sources: list[str | Path], *, workers: int | None = None,
           progress: bool = False, servers: list[str] = (), bulk: bool = False,
           extra_resources: Iterable[Any] = ()) -> IngestReport:
    """Load FHIR files and folders, FHIR servers (REST search, incremental) and a Bulk Data
    export into the bronze tables; returns the counts of the load."""
    import dlt

    files = input_files([Path(source) for source in sources]) if sources else []
    tasks = plan_tasks(files)
    load_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    loaded_at = dt.datetime.now(dt.UTC)
    report = IngestReport(load_id=load_id, files=len(files),
                          bytes=sum(path.stat().st_size for path in files))
    workers = workers if workers is not None else int(lake.settings.get("ingest.workers") or 0)
    if workers <= 0:
        workers = os.cpu_count() or 1
    if report.bytes < 8 << 20:
        workers = 1  # start-up of worker processes costs more than it saves on small inputs
    batch_rows = int(lake.settings.get("lake.batch_rows"))

    bar = _progress_bar(len(tasks)) if progress else None
    results = iter(_results(lake, tasks, load_id, loaded_at, workers))

    extra_resources = list(extra_resources)
    if servers or bulk:
        from dlt_pipelines.fhir.rest_ingest import bulk_resources, server_resources

        if servers:
            extra_resources += server_resources(lake, servers, load_id=load_id, loaded_at=loaded_at)
        if bulk:
            extra_resources += bulk_resources(lake, load_id=load_id, loaded_at=loaded_at)

    # dlt writes one load file per table unless told to rotate; the destination reads a load file
    # whole, so files are cut at FILE_BYTES to keep memory bounded by a file, not by the input.
    os.environ.setdefault("DATA_WRITER__FILE_MAX_BYTES", str(FILE_BYTES))
    # dlt keeps a loaded package's files unless told otherwise: on memory-backed scratch that
    # would hold the whole input until the end.
    os.environ.setdefault("LOAD__DELETE_COMPLETED_JOBS", "true")
    # dlt's own Parquet files live for one run in memory-backed scratch: compressing them costs
    # the main process about a tenth of the ingest's time, for files read back seconds later.
    # (The lake's files are compressed by pyiceberg, with zstd.)
    os.environ.setdefault("DATA_WRITER__COMPRESSION", "none")

    with private_scratch("dlt") as scratch:
        working = scratch / PIPELINE_NAME
        _restore_state(lake, working)
        pipeline = dlt.pipeline(pipeline_name=PIPELINE_NAME, pipelines_dir=str(scratch),
                                destination=_destination(lake, report, batch_rows))
        try:
            # The input goes through dlt in runs of about RUN_BYTES: dlt extracts a whole run
            # before loading it, so one run bounds its scratch files, and the workers transform
            # the next run while this one loads.
            for number, chunk in enumerate(_runs(results) if files else [None]):
                resources = [] if chunk is None else [
                    dlt.resource(_batches(chunk, report, batch_rows,
                                          bar.advance if bar else None),
                                 name="fhir", max_table_nesting=0)]
                if number == 0:
                    resources += extra_resources
                if resources:
                    pipeline.extract(resources)
                    pipeline.normalize()
                    report.scratch_peak_bytes = max(report.scratch_peak_bytes,
                                                    _folder_bytes(scratch))
                    pipeline.load()
                    _release_memory()
        finally:
            if bar:
                bar.close()
        _save_state(lake, working)

    lake.audit.append("load", load_id=load_id, files=report.files, bytes=report.bytes,
                      resources=report.resources, quarantined=sum(report.quarantined.values()),
                      tables=sorted(report.per_type))
    logger.info("load %s: %d files, %d resources, %d quarantined", load_id, report.files,
                report.resources, sum(report.quarantined.values()))
    return report


def _release_memory() -> None:
    """Hand the memory a run freed back to the system: Arrow's allocator and glibc's keep freed
    pages for reuse, which would make the process's size the sum of its largest moments."""
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


class _progress_bar:  # noqa: N801 - used like a function
    def __init__(self, total: int) -> None:
        from rich.progress import Progress

        self._progress = Progress(transient=True)
        self._progress.start()
        self._task = self._progress.add_task("ingest", total=total)

    def advance(self) -> None:
        self._progress.advance(self._task)

    def close(self) -> None:
        self._progress.stop()
