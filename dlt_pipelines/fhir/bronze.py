"""The bronze tables: their schema, and the merge that keeps one current version per resource.

Merge rules, per resource id (the pseudonymous key for Patient):

- a resource never seen is inserted;
- a newer version (later ``meta.lastUpdated``, then a higher ``meta.versionId``) replaces the
  stored one; an older version never overwrites a newer;
- the same version with the same content is skipped, so re-running a load adds nothing twice;
- without version information on either side, different content replaces (the latest load wins);
- a delete removes the stored row unless the stored version is newer than the delete.

Each batch commits as one Iceberg transaction (delete the replaced rows, append the new ones),
retried on a conflict with another writer against the table's new state.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

NAMESPACE = "bronze"
QUARANTINE = f"{NAMESPACE}.quarantine"
_TS = pa.timestamp("us", tz="UTC")
BRONZE_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("resource_type", pa.string(), nullable=False),
    pa.field("version_id", pa.string()),
    pa.field("last_updated", _TS),
    pa.field("patient_key", pa.string()),
    pa.field("source", pa.string()),
    pa.field("load_id", pa.string()),
    pa.field("loaded_at", _TS),
    pa.field("resource", pa.string()),
    pa.field("content_hash", pa.string()),
])
BATCH_SCHEMA = BRONZE_SCHEMA.append(pa.field("op", pa.string()))
QUARANTINE_SCHEMA = pa.schema([
    pa.field("quarantine_id", pa.string(), nullable=False),
    pa.field("source", pa.string()),
    pa.field("locator", pa.string()),
    pa.field("resource_type", pa.string()),
    pa.field("patient_key", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("record", pa.string()),
    pa.field("load_id", pa.string()),
    pa.field("quarantined_at", _TS),
    pa.field("replayed_load_id", pa.string()),
])


def table_name(resource_type: str) -> str:
    return f"{NAMESPACE}.{resource_type.lower()}"


def _version_key(last_updated: dt.datetime | None, version: str | None) -> tuple:
    numeric = int(version) if version and version.isdigit() else -1
    return (last_updated or dt.datetime.min.replace(tzinfo=dt.UTC), numeric, version or "")


def _has_version(last_updated: Any, version: Any) -> bool:
    return last_updated is not None or version is not None


@dataclass
class MergeCounts:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    stale: int = 0

    def add(self, other: MergeCounts) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class _Plan:
    append: list[int] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    counts: MergeCounts = field(default_factory=MergeCounts)


def _latest_per_id(batch: pa.Table) -> dict[str, int]:
    """Index of the row that wins for each id inside one batch: the newest version, the later
    row on a tie; a delete with no time of its own wins over the versions beside it."""
    ids = batch.column("id").to_pylist()
    updated = batch.column("last_updated").to_pylist()
    versions = batch.column("version_id").to_pylist()
    ops = batch.column("op").to_pylist()

    def rank(index: int) -> tuple:
        undated_delete = ops[index] == "delete" and updated[index] is None
        return (undated_delete, _version_key(updated[index], versions[index]))

    winners: dict[str, int] = {}
    for index, rid in enumerate(ids):
        best = winners.get(rid)
        if best is None or rank(index) >= rank(best):
            winners[rid] = index
    return winners


def _plan(batch: pa.Table, existing: pa.Table) -> _Plan:
    plan = _Plan()
    if existing.num_rows == 0 and pc.count_distinct(batch.column("id")).as_py() == \
            batch.num_rows and not pc.any(pc.equal(batch.column("op"), "delete")).as_py():
        # The common case of a first load: every row is new, and there is nothing to compare.
        plan.append = list(range(batch.num_rows))
        plan.counts.inserted = batch.num_rows
        return plan
    stored = {
        rid: (updated, version, digest)
        for rid, updated, version, digest in zip(
            existing.column("id").to_pylist(), existing.column("last_updated").to_pylist(),
            existing.column("version_id").to_pylist(), existing.column("content_hash").to_pylist(),
        )
    }
    winners = _latest_per_id(batch)
    plan.counts.stale += batch.num_rows - len(winners)
    updated = batch.column("last_updated").to_pylist()
    versions = batch.column("version_id").to_pylist()
    digests = batch.column("content_hash").to_pylist()
    ops = batch.column("op").to_pylist()
    for rid, index in winners.items():
        incoming = (updated[index], versions[index])
        current = stored.get(rid)
        if ops[index] == "delete":
            if current is None:
                plan.counts.unchanged += 1
            elif _has_version(*incoming) and _has_version(current[0], current[1]) and \
                    _version_key(*current[:2]) > _version_key(*incoming):
                plan.counts.stale += 1
            else:
                plan.remove.append(rid)
                plan.counts.deleted += 1
            continue
        if current is None:
            plan.append.append(index)
            plan.counts.inserted += 1
            continue
        new_key, old_key = _version_key(*incoming), _version_key(current[0], current[1])
        if _has_version(*incoming) and _has_version(current[0], current[1]) and new_key != old_key:
            if new_key > old_key:
                plan.remove.append(rid)
                plan.append.append(index)
                plan.counts.updated += 1
            else:
                plan.counts.stale += 1
        elif digests[index] == current[2]:
            plan.counts.unchanged += 1
        else:
            plan.remove.append(rid)
            plan.append.append(index)
            plan.counts.updated += 1
    return plan


class LoadIndex:
    """What one load has written, so that its merges need not read back their own rows.

    A merge must compare each id of a batch with the stored row of that id. When a table was
    empty as this load began and nobody else has committed to it since, the only stored rows are
    this load's own, and a Bloom filter over the ``(table, id)`` pairs this load wrote tells
    which ids of a batch cannot be stored: the table is read only for the others. A false
    positive costs a read of the table's keys, which grows with the table, so the filter is
    sized by the ids the load is expected to write (``expected_ids``, from its input's size):
    48 bits and 8 hashes an id, about 3 false positives in 10 million ids, between 2 MB and
    128 MB. Any other state reads the table as usual. Ids come as Arrow string arrays; the
    compiled extension hashes them on their buffers.
    """

    HASHES = 8
    MIN_BITS, MAX_BITS = 1 << 24, 1 << 30

    def __init__(self, expected_ids: int = 0) -> None:
        bits = self.MIN_BITS
        while bits < 48 * expected_ids and bits < self.MAX_BITS:
            bits *= 2
        self._shift = np.uint64(64 - bits.bit_length() + 1)
        self._bits = np.zeros(bits // 8, dtype=np.uint8)
        self._empty_at_start: dict[str, bool] = {}
        self._last_commit: dict[str, int | None] = {}

    def own_rows_only(self, identifier: str, table) -> bool:
        """True when every stored row of the table was written by this load."""
        current = table.current_snapshot()
        current_id = current.snapshot_id if current is not None else None
        if identifier not in self._empty_at_start:
            self._empty_at_start[identifier] = current_id is None
            self._last_commit[identifier] = None
        return self._empty_at_start[identifier] and \
            self._last_commit[identifier] == current_id

    def maybe_stored(self, identifier: str, ids: pa.Array) -> pa.Array:
        """The ids of ``ids`` this load may have written to the table."""
        if len(ids) == 0:
            return ids
        if _bloom_test is not None:
            flags = np.frombuffer(_bloom_test(self._bits, *_string_buffers(ids),
                                              _seed(identifier)), dtype=np.bool_)
        else:
            flags = np.ones(len(ids), dtype=bool)
            for row in self._positions(identifier, ids):
                flags &= (self._bits[row >> 3] >> (row & 7).astype(np.uint8)) & 1 == 1
        return ids.filter(pa.array(flags))

    def committed(self, identifier: str, ids: pa.Array, table) -> None:
        if len(ids):
            if _bloom_add is not None:
                _bloom_add(self._bits, *_string_buffers(ids), _seed(identifier))
            else:
                positions = self._positions(identifier, ids).ravel()
                np.bitwise_or.at(self._bits, positions >> 3,
                                 (1 << (positions & 7)).astype(np.uint8))
        current = table.current_snapshot()
        self._last_commit[identifier] = current.snapshot_id if current is not None else None

    def _positions(self, identifier: str, ids: pa.Array) -> np.ndarray:
        """The filter's bit positions of each id, one row per hash (without the compiled
        extension: Python's hash of each id, then double hashing as the extension does)."""
        hashes = np.fromiter(map(hash, ids.to_pylist()), dtype=np.int64, count=len(ids)) \
            .view(np.uint64)
        with np.errstate(over="ignore"):
            hashes = (hashes ^ np.uint64(_seed(identifier))) * np.uint64(0x9E3779B97F4A7C15)
            hashes ^= hashes >> np.uint64(31)
            steps = (hashes * np.uint64(0xC2B2AE3D27D4EB4F)) | np.uint64(1)
            rows = np.arange(self.HASHES, dtype=np.uint64)[:, None]
            return ((hashes[None, :] + rows * steps[None, :]) >> self._shift).astype(np.int64)


try:  # the compiled filter, where the extension is built
    from dlt_pipelines.fhir._scan import bloom_add as _bloom_add
    from dlt_pipelines.fhir._scan import bloom_test as _bloom_test
except ImportError:
    _bloom_add = _bloom_test = None


def _seed(identifier: str) -> int:
    """A table's seed for the filter: the same ids of two tables set other bits."""
    return int.from_bytes(hashlib.blake2b(identifier.encode(), digest_size=8).digest(), "little")


def _string_buffers(values: pa.Array) -> tuple:
    """An Arrow string array's offsets and data buffers, its offset and length."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    _, offsets, data = values.buffers()
    return offsets, data if data is not None else b"", values.offset, len(values)


_KEY_COLUMNS = ("id", "last_updated", "version_id", "content_hash")


def _stored_keys(table, identifier: str, ids: pa.Array, index: LoadIndex | None) -> pa.Table:
    """The stored key columns of ``ids`` (distinct), the ones ``index`` rules out left unread."""
    from pyiceberg.expressions import In

    wanted = ids
    if index is not None and index.own_rows_only(identifier, table):
        wanted = index.maybe_stored(identifier, ids)
    if table.current_snapshot() is None or len(wanted) == 0:
        return BRONZE_SCHEMA.empty_table().select(_KEY_COLUMNS)
    return table.scan(row_filter=In("id", wanted.to_pylist()),
                      selected_fields=_KEY_COLUMNS).to_arrow()


def _commit_plan(table, identifier: str, batch: pa.Table, plan: _Plan,
                 index: LoadIndex | None) -> None:
    """Delete the rows the plan replaces and append the rows it keeps, in one transaction."""
    from pyiceberg.expressions import In

    if len(plan.append) == batch.num_rows:
        rows = batch.drop_columns(["op"])  # every row: no copy
    else:
        rows = batch.take(pa.array(sorted(plan.append), type=pa.int64())).drop_columns(["op"])
    if plan.remove or rows.num_rows:
        with table.transaction() as transaction:
            if plan.remove:
                transaction.delete(delete_filter=In("id", plan.remove))
            if rows.num_rows:
                transaction.append(rows.cast(BRONZE_SCHEMA))
        if index is not None:
            index.committed(identifier, rows.column("id"), table)


def _log_counts(identifier: str, counts: MergeCounts) -> None:
    logger.info("%s: %d inserted, %d updated, %d deleted, %d unchanged, %d stale",
                identifier, counts.inserted, counts.updated, counts.deleted, counts.unchanged,
                counts.stale)


def merge_batch(lake, resource_type: str, batch: pa.Table,
                index: LoadIndex | None = None) -> MergeCounts:
    """Merge one batch of rows (BATCH_SCHEMA) into the resource type's bronze table; ``index``
    (one per load) spares reading back what this load wrote itself."""
    identifier = table_name(resource_type)
    lake.ensure_table(identifier, BRONZE_SCHEMA)
    ids = pc.unique(batch.column("id"))

    def change(table) -> MergeCounts:
        plan = _plan(batch, _stored_keys(table, identifier, ids, index))
        _commit_plan(table, identifier, batch, plan, index)
        return plan.counts

    counts = lake.commit(identifier, change)
    _log_counts(identifier, counts)
    return counts


# --- staged data files -----------------------------------------------------------------------
#
# The ingest's workers write a batch's upserted rows as an Iceberg data file of the table
# (``stage_rows``, through ``staging_io``: not flushed to disk yet), encrypted like every file of
# the lake, but commit nothing: the main process gets the data file's description and the batch's
# keys, every column but ``resource`` (``KEYS_SCHEMA``). ``merge_staged`` plans the merge from the
# keys alone. When the plan is to insert every upserted row and replace nothing, the staged file
# is flushed and committed as it is, together with the next batches of its type that are all new
# too, so the rows are never read back or written again; otherwise the batch is read back from
# the file and merged as ``merge_batch`` does, and the staged file is removed. A staged file
# nobody commits (a load killed midway) is an orphan, which ``infra.maintenance.remove_orphans``
# deletes once no load that may still commit it is running.

KEYS_SCHEMA = pa.schema([schema_field for schema_field in BATCH_SCHEMA
                         if schema_field.name != "resource"])


def stage_rows(table, rows: pa.Table, io=None) -> list:
    """Write ``rows`` (BATCH_SCHEMA, upserts only) as data files of ``table``; commit nothing.
    ``io`` is the FileIO to write them with (``staging_io``), the table's own by default."""
    import uuid

    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    data = rows.drop_columns(["op"]) if "op" in rows.column_names else rows
    return list(_dataframe_to_data_files(table_metadata=table.metadata, df=data.cast(BRONZE_SCHEMA),
                                         io=io or table.io, write_uuid=uuid.uuid4()))


_STAGING_IO: dict[tuple, Any] = {}


def staging_io(table):
    """A FileIO like the table's whose files are not flushed to disk as they close: a staged
    file is flushed (``Lake.sync``) by the merge that commits it, in the main process, so the
    workers never wait on the disk, and a file that is read back and removed never is."""
    from pyiceberg.io.fsspec import FsspecFileIO

    from infra.crypto.fs import SYNC_PROPERTY

    properties = {**table.io.properties, SYNC_PROPERTY: "false"}
    key = tuple(sorted(properties.items()))
    io = _STAGING_IO.get(key)
    if io is None:
        io = _STAGING_IO[key] = FsspecFileIO(properties)
    return io


def read_staged(lake, keys: pa.Table, data_files: list) -> pa.Table:
    """The whole batch (BATCH_SCHEMA) of ``keys``: the upserts' resources read back from the
    staged files, in the order they were written; deletes carry none."""
    import pyarrow.parquet as pq

    parts = []
    for data_file in data_files:
        with lake.fs.open(data_file.file_path, "rb") as handle:
            parts.append(pq.read_table(handle, columns=["resource"]).column("resource"))
    upserts = pc.equal(keys.column("op"), "upsert")
    expected = pc.sum(pc.cast(upserts, pa.int64())).as_py() or 0
    resources = pa.chunked_array([chunk for part in parts for chunk in part.chunks],
                                 type=pa.string())
    if len(resources) != expected:
        raise ValueError(f"the staged files hold {len(resources)} rows for {expected} upserts")
    if expected == keys.num_rows:
        column = resources
    else:
        positions = pc.subtract(pc.cumulative_sum(pc.cast(upserts, pa.int64())), 1)
        column = resources.combine_chunks().take(
            pc.if_else(upserts, positions, pa.scalar(None, pa.int64())))
    index = BATCH_SCHEMA.get_field_index("resource")
    return keys.add_column(index, BATCH_SCHEMA.field("resource"), column) \
        .select(BATCH_SCHEMA.names)


@dataclass
class StagedBatch:
    """A staged batch of one resource type: its keys (``KEYS_SCHEMA``, every row of the batch
    in input order) and the data files holding its upserts."""

    keys: pa.Table
    data_files: list


def merge_staged(lake, resource_type: str, batches: list[StagedBatch],
                 index: LoadIndex | None = None):
    """Merge staged batches of one type, in order; yields (how many batches, their counts)
    after each commit.

    Consecutive batches whose rows are all new, with no id in two of them, are committed
    together: their files as they are, in one fast append. A batch that updates, deletes or
    repeats an id is read back and merged as ``merge_batch`` would, alone, and its files are
    removed once that merge has committed. On an error the files stay: a retry of the merge
    needs them, and the load removes those it never merged when it ends."""
    identifier = table_name(resource_type)
    done = 0
    while done < len(batches):
        state: dict[str, Any] = {}

        def change(table, rest: list[StagedBatch] = batches[done:]) -> tuple[int, MergeCounts]:
            taken, counts, seen, files, appended = 0, MergeCounts(), [], [], []
            state.clear()
            for staged in rest:
                ids = pc.unique(staged.keys.column("id"))
                if taken and pc.any(pc.is_in(ids, value_set=pa.concat_arrays(seen))).as_py():
                    break  # an id of an earlier batch of the group: merge it after their commit
                plan = _plan(staged.keys, _stored_keys(table, identifier, ids, index))
                upserts = _upserts(staged.keys)
                if plan.remove or sorted(plan.append) != upserts:
                    if taken:
                        break
                    _commit_plan(table, identifier, read_staged(lake, staged.keys,
                                                                staged.data_files), plan, index)
                    state["read_back"] = staged
                    return 1, plan.counts
                taken += 1
                counts.add(plan.counts)
                seen.append(ids)
                files += staged.data_files
                appended += staged.keys.column("id").take(upserts).chunks
            if files:
                lake.sync([data_file.file_path for data_file in files])
                with table.transaction() as transaction:
                    with transaction.update_snapshot().fast_append() as append:
                        for data_file in files:
                            append.append_data_file(data_file)
                if index is not None:
                    index.committed(identifier, pa.chunked_array(appended, pa.string()), table)
            return taken, counts

        taken, counts = lake.commit(identifier, change, reuse=True)
        if "read_back" in state:
            discard_staged(lake, state["read_back"].data_files)
        _log_counts(identifier, counts)
        done += taken
        yield taken, counts


def _upserts(keys: pa.Table) -> list[int]:
    """The positions of a batch's upserts, in order: what a plan that keeps them all appends."""
    return [position for position, op in enumerate(keys.column("op").to_pylist())
            if op == "upsert"]


def discard_staged(lake, data_files: list) -> None:
    """Remove staged files that will not be committed."""
    for data_file in data_files:
        path = data_file.file_path
        if lake.fs.exists(path):
            lake.fs.rm_file(path)


def reason_counts(reasons: list[str]) -> dict[str, int]:
    return dict(Counter(reasons).most_common())
