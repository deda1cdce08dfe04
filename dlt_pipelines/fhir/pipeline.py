"""The ingest: FHIR files (and servers) through dlt into the encrypted bronze Iceberg tables.

Parsing, validation, reference normalization and pseudonymization run in worker processes, about
``TASK_BYTES`` of files (or slices of a large NDJSON file) per task; a resource's row is built by
the compiled pass of ``rows.new_rows`` where it can, by the walk of ``transform`` where it cannot.
Each worker gathers its rows per resource type into batches (``lake.batch_rows`` rows, about
``STAGE_BYTES``) and writes each full batch as a staged Iceberg data file of its table, encrypted
like every file of the lake, committing nothing; the batch's keys (every column but the resource
text) come back to this process with the files' descriptions. What goes through dlt is a row
naming each staged batch: dlt's working folder, a private scratch folder on memory-backed storage
removed after the load, never holds a resource. The dlt destination merges the batches of each
type (``bronze.merge_staged``): consecutive batches whose rows are all new are committed together
as the files they are, any other is read back and merged. dlt's state (incremental high-water
marks) is kept encrypted in the lake between runs. Memory is bounded by the batches being
gathered, not by the input."""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime as dt
import gc
import itertools
import logging
import multiprocessing
import os
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dlt_pipelines.fhir import bronze
from dlt_pipelines.fhir.rows import new_rows
from dlt_pipelines.fhir.sources import (
    HEAD_DECODER,
    Entry,
    bundle_entry,
    input_files,
    is_ndjson,
    is_streamed,
    open_input,
    read_bundle,
    read_file,
    read_json_document,
    read_ndjson_line,
    source_label,
)
from dlt_pipelines.fhir.transform import Outcome, Transformer
from infra.maintenance import running_load
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
MIN_PARALLEL_BYTES = 8 << 20


def _pieces(files: list[Path]) -> Iterator[tuple[Piece, int, bool]]:
    """Each file whole, except large plain NDJSON files, cut into slices at line boundaries;
    with its size and whether it is a bundle to stream."""
    for path in files:
        size = path.stat().st_size
        if not is_ndjson(path) or path.name.endswith(".gz") or size <= SLICE_BYTES:
            yield Piece(str(path)), size, is_streamed(path, size)
            continue
        with open(path, "rb") as handle:
            start, line = 0, 1
            while start < size:
                handle.seek(min(start + SLICE_BYTES, size))
                handle.readline()
                end = min(handle.tell(), size)
                handle.seek(start)
                lines = handle.read(end - start).count(b"\n")
                yield Piece(str(path), start, end, line), end - start, False
                start, line = end, line + lines


def plan_tasks(files: list[Path]) -> list[Task]:
    """Pieces packed into tasks of about ``TASK_BYTES``, in input order: a task per small file
    would spend more on handing work to a worker than on the work."""
    tasks: list[Task] = []
    batch: list[Piece] = []
    size = 0
    for piece, length, streamed in _pieces(files):
        if streamed:
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


def _add_piece(collector: _Collector, piece: Piece) -> None:
    """A piece's outcomes into ``collector``: NDJSON line by line, anything else entry by
    entry (only NDJSON files are cut into slices)."""
    path = Path(piece.path)
    source = source_label(path)
    if not is_ndjson(path):
        with open_input(path) as handle:  # a task's JSON file is never one to stream
            collector.add_document(handle.read(), source)
        return
    if piece.end < 0 and (path.name.endswith(".gz") or path.stat().st_size > SLICE_BYTES):
        with open_input(path) as handle:  # a file that was not sliced: line by line
            collector.add_lines(handle, 1, source)
        return
    if piece.end < 0:
        blob = path.read_bytes()
    else:
        with open(path, "rb") as handle:
            handle.seek(piece.start)
            blob = handle.read(piece.end - piece.start)
    collector.add_lines(blob.split(b"\n"), piece.first_line, source)


_NO_URNS: dict[str, str] = {}  # NDJSON lines are not in a bundle: no urn map (never written)


# --- the worker side -------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _worker_init(values: dict[str, Any], barrier=None) -> None:
    # A failure here is kept and raised by the first task: a pool whose initializer raises
    # restarts its workers forever instead of reporting.
    _WORKER["barrier"] = barrier
    try:
        from infra.lake import Lake
        from infra.settings import Settings

        lake = _WORKER["lake"] = Lake.open(Settings(values), create=False)
        _WORKER["batches"] = _Batches(int(lake.settings.get("lake.batch_rows")))
        _WORKER["tables"] = {}
        import pyiceberg.io.pyarrow  # noqa: F401 - the staging writer, loaded before the first task
    except Exception as error:  # noqa: BLE001 - re-raised in run_task
        _WORKER["error"] = error
    # What is loaded now lives as long as the worker: the collector need not walk it again.
    gc.freeze()


def _worker_transformer(lake, load_id: str, loaded_at: dt.datetime) -> Transformer:
    """The worker's transformer for this load, kept from task to task: the patients' keys and
    sealed references it remembers serve the next task too (its caches are bounded)."""
    transformer = _WORKER.get("transformer")
    if transformer is None or (transformer.load_id, transformer.loaded_at) != (load_id, loaded_at):
        transformer = _WORKER["transformer"] = Transformer(
            lake.patients, index_key=lake.keys.material("index"), source="", load_id=load_id,
            loaded_at=loaded_at)
    transformer.unresolved_references = 0
    return transformer


def _worker_lake():
    if "error" in _WORKER:
        raise _WORKER["error"]
    return _WORKER["lake"]


@dataclass
class Staged:
    """A batch of one resource type whose upserts are written as staged data files: its keys
    (``bronze.KEYS_SCHEMA``, every row in input order), the files, and the batch's size."""

    resource_type: str
    keys: pa.Table
    data_files: list
    nbytes: int


@dataclass
class TaskResult:
    tables: dict[str, pa.Table]
    quarantine: list[dict[str, Any]]
    recorded: Counter
    resources: int
    unresolved: int
    input_bytes: int = 0
    staged: list[Staged] = field(default_factory=list)


class _Batches:
    """Rows gathered per resource type into batches of about ``STAGE_BYTES`` and at most
    ``batch_rows`` rows; beyond ``STAGE_BUFFER_BYTES`` in all, the largest is let go early."""

    def __init__(self, batch_rows: int) -> None:
        self.batch_rows = batch_rows
        self._tables: dict[str, list[pa.Table]] = defaultdict(list)
        self._rows: Counter = Counter()
        self._bytes: Counter = Counter()

    def add(self, kind: str, table: pa.Table) -> list[tuple[str, pa.Table]]:
        """Take ``table``; returns the batches that are full."""
        self._tables[kind].append(table)
        self._rows[kind] += table.num_rows
        self._bytes[kind] += table.nbytes
        full = []
        if self._rows[kind] >= self.batch_rows or self._bytes[kind] >= STAGE_BYTES:
            full.append(self._pop(kind))
        while sum(self._bytes.values()) > STAGE_BUFFER_BYTES:
            full.append(self._pop(max(self._bytes, key=self._bytes.__getitem__)))
        return full

    def rest(self) -> list[tuple[str, pa.Table]]:
        return [self._pop(kind) for kind in list(self._tables)]

    def _pop(self, kind: str) -> tuple[str, pa.Table]:
        del self._rows[kind], self._bytes[kind]
        return kind, pa.concat_tables(self._tables.pop(kind))


def stage_batch(lake, tables: dict[str, Any], kind: str, batch: pa.Table) -> Staged:
    """Write a batch's upserts as a staged data file of the type's table (commit nothing)."""
    identifier = bronze.table_name(kind)
    table = tables.get(identifier)
    if table is None:
        table = tables[identifier] = _ensure_table(lake, identifier)
    upserts = pc.equal(batch.column("op"), "upsert")
    count = pc.sum(pc.cast(upserts, pa.int64())).as_py() or 0
    rows = batch if count == batch.num_rows else batch.filter(upserts)
    files = bronze.stage_rows(table, rows, bronze.staging_io(table)) if count else []
    return Staged(kind, batch.drop_columns(["resource"]), files, batch.nbytes)


def _ensure_table(lake, identifier: str):
    """The table, created if need be; workers may race to create it, and one of them wins."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(5):
        try:
            return lake.ensure_table(identifier, bronze.BRONZE_SCHEMA)
        except (OperationalError, IntegrityError):  # locked, or created by another worker
            if attempt == 4:
                raise
            time.sleep(0.1 * 2 ** attempt)
    raise AssertionError("unreachable")


def flush_task(timeout_s: float) -> list[Staged]:
    """A worker's last batches, staged; the worker then waits for the others at the barrier, so
    each of them takes exactly one of these tasks."""
    try:
        lake = _worker_lake()
        return [stage_batch(lake, _WORKER["tables"], kind, batch)
                for kind, batch in _WORKER["batches"].rest()]
    finally:
        _WORKER["barrier"].wait(timeout_s)


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
    """Transform a task. In a worker (no ``lake`` given) the rows are gathered into the
    worker's batches, and the full ones are staged: the result carries their keys and files."""
    in_worker = lake is None
    if in_worker:
        lake = _worker_lake()
        transformer = _worker_transformer(lake, load_id, loaded_at)
    else:
        transformer = Transformer(lake.patients, index_key=lake.keys.material("index"),
                                  source="", load_id=load_id, loaded_at=loaded_at)
    collector = _Collector(lake, transformer)
    for piece in task.pieces:
        _add_piece(collector, piece)
    result = collector.result()
    result.input_bytes = sum(_piece_bytes(piece) for piece in task.pieces)
    if in_worker:
        for kind, table in result.tables.items():
            for full_kind, batch in _WORKER["batches"].add(kind, table):
                result.staged.append(stage_batch(lake, _WORKER["tables"], full_kind, batch))
        result.tables = {}
    return result


PART_BYTES = 32 << 20


def run_streamed(task: Task, load_id: str, loaded_at: dt.datetime, lake) -> Iterator[TaskResult]:
    """A streamed bundle's results, a part of about ``PART_BYTES`` of resources at a time."""
    (piece,) = task.pieces
    transformer = Transformer(lake.patients, index_key=lake.keys.material("index"),
                              source=source_label(Path(piece.path)), load_id=load_id,
                              loaded_at=loaded_at)
    entries = read_file(Path(piece.path))
    while True:
        collector = _Collector(lake, transformer)
        collector.add(entries, transformer.source, limit_bytes=PART_BYTES)
        if not collector.count:
            return
        result = collector.result()
        transformer.unresolved_references = 0
        result.input_bytes = collector.body_bytes
        yield result


def _piece_bytes(piece: Piece) -> int:
    return piece.end - piece.start if piece.end >= 0 else os.path.getsize(piece.path)


def _collect(transformer: Transformer, entries: Iterable[Entry], lake, source: str) -> TaskResult:
    collector = _Collector(lake, transformer)
    collector.add(entries, source)
    return collector.result()


_NOT_UPSERTS = frozenset({"GET", "HEAD", "PATCH", "DELETE"})


def _may_upsert(method: str | None) -> bool:
    """Whether an entry with this request method may put its resource (what
    ``Transformer.outcome`` reads as a request before it looks at the resource)."""
    return method is None or method.upper() not in _NOT_UPSERTS


class _Collector:
    """Outcomes gathered into one Arrow table per resource type (``rows.new_rows``), and the
    quarantine rows."""

    def __init__(self, lake, transformer: Transformer) -> None:
        self.transformer = transformer
        self.rows = new_rows(transformer)
        self.quarantine: list[dict[str, Any]] = []
        self.recorded: Counter = Counter()
        self.resources = 0
        self.count = 0
        self.body_bytes = 0
        self._key = lake.keys.material("quarantine")

    def add(self, entries: Iterable[Entry], source: str, *,
            limit_bytes: int | None = None) -> None:
        """Take the outcomes of ``entries``; with ``limit_bytes``, stop once the resources
        taken hold that many bytes (the rest of the iterator is left for the next call)."""
        self.transformer.source = self.rows.source = source
        for entry in entries:
            if limit_bytes is not None:
                self.body_bytes += len(entry.body or b"")
            self._take(entry, source)
            if limit_bytes is not None and self.body_bytes >= limit_bytes:
                return

    def add_document(self, blob: bytes, source: str) -> None:
        """Take a JSON file: a bundle's entries as ``read_bundle`` finds them (an entry the fast
        path takes becomes its row without an Entry), anything else as ``read_json_document``
        reads it."""
        found = read_bundle(blob)
        if found is None:
            self.add(read_json_document(blob, locator_prefix=""), source)
            return
        self.transformer.source = self.rows.source = source
        bundle_type, text, entries, mapping = found
        add = self.rows.add
        for number, entry in enumerate(entries):
            start, end, method = entry[1], entry[2], entry[5]
            if start >= 0 and _may_upsert(method) and add(text[start:end], mapping):
                self.count += 1
                self.resources += 1
                continue
            self._take(bundle_entry(text, number, entry, bundle_type, mapping), source,
                       tried=True)

    def add_lines(self, lines: Iterable[bytes], first_line: int, source: str) -> None:
        """Take NDJSON lines: a line the fast path takes becomes its row at once, without an
        Entry or Outcome (most of an NDJSON file's lines); any other line goes through
        ``add``'s way, reasons and all."""
        self.transformer.source = self.rows.source = source
        add = self.rows.add
        for number, line in enumerate(lines, start=first_line):
            line = line.strip()
            if not line:
                continue
            if add(line, _NO_URNS):
                self.count += 1
                self.resources += 1
                continue
            try:
                head = HEAD_DECODER.decode(line)
            except msgspec.DecodeError:
                head = None
            if head is not None and head.resourceType != "Bundle":
                self._take(Entry(locator=f"line {number}", body=line, head=head), source,
                           tried=True)
                continue
            for entry in read_ndjson_line(line, number):
                self._take(entry, source)

    def _take(self, entry: Entry, source: str, *, tried: bool = False) -> None:
        """One entry's outcome; the fast path first, unless it has ``tried`` this body."""
        self.count += 1
        if not tried and entry.body is not None and entry.resource is None and \
                entry.error is None and _may_upsert(entry.method) and \
                self.rows.add(entry.body, entry.urn_map):
            self.resources += 1
            return
        outcome: Outcome = self.transformer.outcome(entry)
        kind = outcome.kind
        if kind == "upsert" or kind == "delete":
            self.rows.append_row(outcome.row)
            self.resources += kind == "upsert"
        elif kind == "recorded":
            self.recorded[outcome.reason] += 1
        else:
            self.quarantine.append({
                "quarantine_id": uuid.uuid4().hex, "source": source,
                "locator": entry.locator, "resource_type": outcome.resource_type,
                "patient_key": outcome.patient_key, "reason": outcome.reason,
                "record": _seal_record(self._key, outcome.raw),
                "load_id": self.transformer.load_id,
                "quarantined_at": self.transformer.loaded_at, "replayed_load_id": None,
            })

    def result(self) -> TaskResult:
        return TaskResult(self.rows.tables(), self.quarantine, self.recorded, self.resources,
                          self.transformer.unresolved_references + self.rows.unresolved)


# --- the driver ------------------------------------------------------------------------------

class _Done:
    """A result computed in this process, shaped like a pool's ``AsyncResult``."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def ready(self) -> bool:
        return True

    def get(self, timeout: float | None = None) -> Any:
        return self._value


class _Executor:
    """Where the work runs: a pool of worker processes, or this process when there is none."""

    def __init__(self, lake, pool=None, workers: int = 1) -> None:
        self.lake = lake
        self.pool = pool
        self.workers = workers
        self.tables: dict[str, Any] = {}  # in this process: tables looked up once a load

    @property
    def parallel(self) -> bool:
        return self.pool is not None

    def transform(self, task: Task, load_id: str, loaded_at: dt.datetime):
        if self.pool is None:
            return _Done(run_task(task, load_id, loaded_at, self.lake))
        return self.pool.apply_async(run_task, (task, load_id, loaded_at))

    def stage(self, kind: str, batch: pa.Table):
        if self.pool is None:
            return _Done([stage_batch(self.lake, self.tables, kind, batch)])
        return self.pool.apply_async(stage_task, (kind, batch))

    def flush(self) -> list:
        """The workers' last batches, one flush task per worker."""
        if self.pool is None:
            return []
        return [self.pool.apply_async(flush_task, (FLUSH_TIMEOUT_S,))
                for _ in range(self.workers)]


FLUSH_TIMEOUT_S = 600


@contextlib.contextmanager
def _executor(lake, workers: int, parallel: bool) -> Iterator[_Executor]:
    if workers <= 1 or not parallel:
        yield _Executor(lake)
        return
    context = multiprocessing.get_context("spawn")
    # The workers get the resolved settings themselves, not just the environment, so settings
    # given in-process (overrides, a custom environ) hold there too.
    values = lake.settings.with_overrides(**{"lake.data_dir": str(lake.data_dir),
                                             "keys.key_dir": str(lake.settings.key_dir)}).values
    barrier = context.Barrier(workers)
    with _worker_environment():  # the workers start here
        pool = context.Pool(workers, initializer=_worker_init, initargs=(values, barrier))
    with pool:
        yield _Executor(lake, pool, workers)


@contextlib.contextmanager
def _worker_environment() -> Iterator[None]:
    """The environment the workers start with: OpenBLAS, which numpy loads, keeps threads of
    its own spinning on the cores the workers need, and they never multiply matrices."""
    before = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = before


def stage_task(kind: str, batch: pa.Table) -> list[Staged]:
    """``stage_batch`` in a worker, for rows transformed in the main process."""
    return [stage_batch(_worker_lake(), _WORKER["tables"], kind, batch)]


def _results(executor: _Executor, tasks: list[Task], load_id: str,
             loaded_at: dt.datetime) -> Iterator[TaskResult]:
    streamed = [task for task in tasks if task.streamed]
    tasks = [task for task in tasks if not task.streamed]
    if not executor.parallel:
        for task in streamed:
            yield from run_streamed(task, load_id, loaded_at, executor.lake)
        for task in tasks:
            yield run_task(task, load_id, loaded_at, executor.lake)
        return
    # A few tasks per worker are in flight: Pool.imap would read its whole input ahead and keep
    # every finished result until it is consumed, which would hold the input in memory. A new
    # task goes out as each result comes back, so no worker waits for the others.
    window = executor.workers * IN_FLIGHT_PER_WORKER
    queued = iter(tasks)
    pending: deque = deque(executor.transform(task, load_id, loaded_at)
                           for task in itertools.islice(queued, window))

    def take() -> TaskResult:
        """The oldest task's result, with the next task sent in its place."""
        result = pending.popleft().get()
        for task in itertools.islice(queued, 1):
            pending.append(executor.transform(task, load_id, loaded_at))
        return result

    # Streamed bundles are read here while the workers take the other tasks; the workers'
    # finished results are passed on between two parts.
    for task in streamed:
        for part in run_streamed(task, load_id, loaded_at, executor.lake):
            yield part
            while pending and pending[0].ready():
                yield take()
    while pending:
        yield take()


STAGE_BYTES = 32 << 20
FILE_BYTES = 64 << 20
STAGE_BUFFER_BYTES = 128 << 20
RUN_BYTES = 256 << 20
MERGE_BYTES = 16 << 20
IN_FLIGHT_PER_WORKER = 32
STAGED_TABLE = "staged"


class _Stager:
    """The transformed rows on their way to dlt as staged batches (``Staged``): what dlt
    carries, per batch, is a row naming it and holding its keys; the staged data files stay
    here (``staged``) until the destination merges them.

    The workers stage their own rows. Rows transformed here (the parts of a streamed bundle, or
    every row when there are no workers) are gathered into batches here and handed to a worker
    to write. Memory holds those batches (``STAGE_BUFFER_BYTES`` at most) and the keys of
    batches whose files are being written."""

    def __init__(self, lake, executor: _Executor, report: IngestReport, batch_rows: int) -> None:
        self.lake = lake
        self.executor = executor
        self.report = report
        # unit -> its keys and staged data files; None once the destination has merged them
        self.staged: dict[str, bronze.StagedBatch | None] = {}
        self._batches = _Batches(batch_rows)
        self._writing: deque = deque()
        self._in_flight = 2 * executor.workers

    def items(self, results: Iterable[TaskResult], progress=None) -> Iterator[tuple[Any, int]]:
        """dlt items, each with the bytes of transformed rows it stands for."""
        for result in results:
            yield from self._take(result)
            if progress is not None:
                progress()
        for kind, batch in self._batches.rest():
            self._writing.append(self.executor.stage(kind, batch))
        self._writing.extend(self.executor.flush())
        yield from self._ready(drain=True)

    def _take(self, result: TaskResult) -> Iterator[tuple[Any, int]]:
        import dlt

        report = self.report
        report.resources += result.resources
        report.recorded.update(result.recorded)
        report.unresolved_references += result.unresolved
        for row in result.quarantine:
            report.quarantined[row["reason"]] += 1
        if result.quarantine:
            yield dlt.mark.with_table_name(
                pa.Table.from_pylist(result.quarantine, schema=bronze.QUARANTINE_SCHEMA),
                "quarantine"), 0
        if result.staged:
            self._writing.append(_Done(result.staged))
        for kind, table in result.tables.items():
            for full_kind, batch in self._batches.add(kind, table):
                self._writing.append(self.executor.stage(full_kind, batch))
        yield from self._ready()

    def _ready(self, *, drain: bool = False) -> Iterator[tuple[Any, int]]:
        """The staged batches whose files are written, in the order they were staged (each
        handle in ``_writing`` gives a list of ``Staged``); waiting
        for the oldest while more than ``_in_flight`` are being written, or for all with
        ``drain``."""
        import dlt

        while self._writing and (drain or len(self._writing) > self._in_flight
                                 or self._writing[0].ready()):
            for staged in self._writing.popleft().get():
                unit = uuid.uuid4().hex
                self.staged[unit] = bronze.StagedBatch(staged.keys, staged.data_files)
                row = pa.table({"unit": [unit], "resource_type": [staged.resource_type],
                                "rows": [staged.keys.num_rows]})
                yield dlt.mark.with_table_name(row, STAGED_TABLE), staged.nbytes

    def discard(self) -> None:
        """Remove the staged files nobody merged (a load that failed midway)."""
        while self._writing:
            with contextlib.suppress(Exception):
                for staged in self._writing.popleft().get(FLUSH_TIMEOUT_S):
                    bronze.discard_staged(self.lake, staged.data_files)
        for batch in self.staged.values():
            if batch is not None:
                bronze.discard_staged(self.lake, batch.data_files)
        self.staged.clear()


def _runs(items: Iterator[tuple[Any, int]]) -> Iterator[Iterator[Any]]:
    """``items`` cut into consecutive runs standing for about ``RUN_BYTES`` of rows each."""
    upcoming = next(items, None)
    while upcoming is not None:
        def run(first: tuple[Any, int]) -> Iterator[Any]:
            nonlocal upcoming
            item, size = first, 0
            while item is not None:
                yield item[0]
                size += item[1]
                item = next(items, None)
                if size >= RUN_BYTES:
                    break
            upcoming = item

        current = upcoming
        upcoming = None
        yield run(current)


def _destination(lake, report: IngestReport, batch_rows: int,
                 staged: dict[str, bronze.StagedBatch | None]):
    import dlt

    index = bronze.LoadIndex(expected_ids=report.bytes // 1000)  # about a resource a KB

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
        if name == STAGED_TABLE:
            # A row names a staged batch; its keys and files are in ``staged``. The batches of
            # one type are merged in order, consecutive new ones in one commit.
            units: dict[str, list[str]] = {}
            for row in pq.read_table(items, columns=["unit", "resource_type"]).to_pylist():
                if row["unit"] not in staged:
                    raise RuntimeError(f"staged batch {row['unit']} is unknown to this load")
                if staged[row["unit"]] is not None:  # else merged by an earlier attempt
                    units.setdefault(row["resource_type"], []).append(row["unit"])
            for resource_type, names in units.items():
                merged = iter(names)
                for taken, counts in bronze.merge_staged(
                        lake, resource_type, [staged[name] for name in names], index):
                    for name in itertools.islice(merged, taken):
                        staged[name] = None
                    _count(resource_type, counts)
            return
        # Rows from the REST and Bulk Data sources, merged a batch at a time, so memory holds
        # one batch, not the load file: at most ``batch_rows`` rows and about MERGE_BYTES.
        parquet = pq.ParquetFile(items)
        metadata = parquet.metadata
        row_groups = [metadata.row_group(number) for number in range(metadata.num_row_groups)]
        row_bytes = max([row_group.total_byte_size // max(1, row_group.num_rows)
                         for row_group in row_groups] + [1])
        rows = max(1, min(batch_rows, MERGE_BYTES // row_bytes))
        for group in parquet.iter_batches(batch_size=rows, columns=bronze.BATCH_SCHEMA.names):
            batch = pa.Table.from_batches([group]).select(bronze.BATCH_SCHEMA.names) \
                .cast(bronze.BATCH_SCHEMA)
            resource_type = batch.column("resource_type")[0].as_py()
            _count(resource_type, bronze.merge_batch(lake, resource_type, batch, index))

    def _count(resource_type: str, counts: bronze.MergeCounts) -> None:
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
    files = input_files([Path(source) for source in sources]) if sources else []
    tasks = plan_tasks(files)
    load_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    loaded_at = dt.datetime.now(dt.UTC)
    report = IngestReport(load_id=load_id, files=len(files),
                          bytes=sum(path.stat().st_size for path in files))
    workers = workers if workers is not None else int(lake.settings.get("ingest.workers") or 0)
    if workers <= 0:
        workers = os.cpu_count() or 1
    if report.bytes < MIN_PARALLEL_BYTES:
        workers = 1  # start-up of worker processes costs more than it saves on small inputs
    batch_rows = int(lake.settings.get("lake.batch_rows"))

    # dlt writes one load file per table unless told to rotate: files are cut at FILE_BYTES, so
    # that none grows with the input.
    os.environ.setdefault("DATA_WRITER__FILE_MAX_BYTES", str(FILE_BYTES))
    # dlt keeps a loaded package's files unless told otherwise: on memory-backed scratch that
    # would hold the whole input until the end.
    os.environ.setdefault("LOAD__DELETE_COMPLETED_JOBS", "true")
    # dlt's own Parquet files live for one run in memory-backed scratch: compressing them costs
    # the main process time for files read back seconds later. (The lake's files are
    # compressed by pyiceberg, with zstd.)
    os.environ.setdefault("DATA_WRITER__COMPRESSION", "none")
    # dlt would write its state to the destination for a later run to restore it from there;
    # this destination skips dlt's tables (the state is kept in the lake by _save_state), and
    # dlt's load waits a second after the state's job, which never signals its end.
    os.environ.setdefault(f"PIPELINES__{PIPELINE_NAME.upper()}__RESTORE_FROM_DESTINATION", "false")

    parallel = len(tasks) > 1 or any(task.streamed for task in tasks)
    # The workers create the tables they stage into; their namespace is made here, once.
    lake.catalog.create_namespace_if_not_exists(bronze.NAMESPACE)
    # The workers start first: they import their libraries while this process sets dlt up.
    with running_load(lake, load_id), _executor(lake, workers, parallel) as executor, \
            private_scratch("dlt") as scratch:
        import dlt

        extra_resources = list(extra_resources)
        if servers or bulk:
            from dlt_pipelines.fhir.rest_ingest import bulk_resources, server_resources

            if servers:
                extra_resources += server_resources(lake, servers, load_id=load_id,
                                                    loaded_at=loaded_at)
            if bulk:
                extra_resources += bulk_resources(lake, load_id=load_id, loaded_at=loaded_at)
        bar = _progress_bar(len(tasks)) if progress else None
        stager = _Stager(lake, executor, report, batch_rows)
        working = scratch / PIPELINE_NAME
        _restore_state(lake, working)
        pipeline = dlt.pipeline(pipeline_name=PIPELINE_NAME, pipelines_dir=str(scratch),
                                destination=_destination(lake, report, batch_rows, stager.staged))
        items = stager.items(_results(executor, tasks, load_id, loaded_at),
                             bar.advance if bar else None)
        try:
            # dlt extracts a whole run before loading it: a run stands for about RUN_BYTES of
            # rows (dlt carries a row naming each staged batch), and its merges wait for its
            # extraction, while the workers go on with the next run.
            for number, chunk in enumerate(_runs(items) if files else [None]):
                resources = [] if chunk is None else [
                    dlt.resource(chunk, name="fhir", max_table_nesting=0)]
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
            stager.discard()
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
