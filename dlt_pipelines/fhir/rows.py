"""A task's bronze rows, gathered per resource type into Arrow tables.

``new_rows(transformer)`` gives the builder a collector fills: ``add(body, urn_map)`` takes a
resource's JSON text through the fast path and returns False, having kept nothing, when the full
walk must decide; ``append_row(row)`` takes a row the walk (or a delete) decided, so that each
type's rows stay in input order; ``tables()`` hands over one ``bronze.BATCH_SCHEMA`` table per
resource type and starts again empty.

Where the extension is built, the builder is ``_scan.Rows``: one compiled pass validates the text,
reads its head, checks its dates, makes its changes and appends the row straight into Arrow
buffers, calling back into Python only for a patient's key (on the transformer's first sight of
that patient), a pseudonymized reference (once per reference and display) and a value to seal
(an attachment's data and url, a narrative, a report's conclusion, a ``contentString``). It takes
a few resources the Python fast path leaves to the walk (narratives and conclusions), and stores
them as written rather than as the walk writes them again: the same resource, the same tokens.
``PythonRows`` does the rest of it with ``FastPath.row`` and lists of tuples, where there is no
compiled extension; ``tests/dlt_pipelines/test_rows.py`` checks that both give the same tables.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import msgspec
import pyarrow as pa

from dlt_pipelines.fhir import bronze
from dlt_pipelines.fhir.fastpath import _SLOW_TYPES
from dlt_pipelines.fhir.sources import DECODER, HEAD_DECODER
from infra.keys.vault import TOKEN_PREFIX

if TYPE_CHECKING:
    from dlt_pipelines.fhir.transform import Transformer

try:
    from dlt_pipelines.fhir._scan import Rows as _CompiledRows
except ImportError:  # built without a C compiler or OpenSSL's headers
    _CompiledRows = None

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_TIMESTAMP = pa.timestamp("us", tz="UTC")


def new_rows(transformer: Transformer, *, compiled: bool | None = None):
    """The builder of ``transformer``'s rows: compiled where it is built (``compiled=False``
    asks for the Python one, ``True`` insists on the compiled one)."""
    if compiled is None:
        compiled = _CompiledRows is not None
    if compiled:
        if _CompiledRows is None:
            raise RuntimeError("the compiled row builder is not built (no C compiler or OpenSSL "
                               "headers at install): reinstall with gcc and libssl-dev")
        return CompiledRows(transformer)
    return PythonRows(transformer)


class PythonRows:
    """The row builder in Python: ``FastPath.row`` for each resource, rows kept as tuples."""

    def __init__(self, transformer: Transformer) -> None:
        self._transformer = transformer
        self._rows: dict[str, list[tuple]] = defaultdict(list)
        self.source = transformer.source
        self.unresolved = 0  # the Python fast path counts on the transformer itself

    def add(self, body: bytes, urn_map: dict[str, str]) -> bool:
        try:
            head = HEAD_DECODER.decode(body)
        except msgspec.DecodeError:
            return False
        if head.resourceType == "Bundle":
            return False
        row = self._transformer._fast.row(body, head, urn_map)
        if row is None:
            return False
        self.append_row(row)
        return True

    def append_row(self, row: tuple) -> None:
        self._rows[row[1]].append(row)

    def tables(self) -> dict[str, pa.Table]:
        tables = {kind: _table(rows) for kind, rows in self._rows.items()}
        self._rows.clear()
        return tables


def _table(rows: list[tuple]) -> pa.Table:
    """Rows (tuples named by ``ROW_FIELDS``) as a BATCH_SCHEMA table, a column at a time."""
    return pa.Table.from_arrays(
        [pa.array(column, type=schema_field.type)
         for column, schema_field in zip(zip(*rows), bronze.BATCH_SCHEMA)],
        schema=bronze.BATCH_SCHEMA)


class CompiledRows:
    """The compiled row builder (``_scan.Rows``), with the transformer's caches and callbacks."""

    def __init__(self, transformer: Transformer) -> None:
        self._transformer = transformer
        self._rows = _CompiledRows(
            transformer._index_key, transformer._sealers, transformer._patient_sealer,
            transformer._fast.reference_text, _seal_value,
            frozenset(kind.encode() for kind in _SLOW_TYPES), b'"' + TOKEN_PREFIX.encode(),
            transformer.source, transformer._fast.compiled_references)
        self.add = self._rows.add

    @property
    def source(self) -> str:
        return self._rows.source

    @source.setter
    def source(self, value: str) -> None:
        self._rows.source = value

    @property
    def unresolved(self) -> int:
        return self._rows.unresolved

    def append_row(self, row: tuple) -> None:
        rid, kind, version, updated, patient_key, _source, _load, _loaded, resource, digest, op = \
            row
        micros = None if updated is None else (updated - _EPOCH) // _MICROSECOND
        self._rows.append(kind, rid, version, micros, patient_key, resource, digest, op)

    def tables(self) -> dict[str, pa.Table]:
        transformer = self._transformer
        load_id = pa.scalar(transformer.load_id, pa.string())
        loaded_at = pa.scalar(transformer.loaded_at, _TIMESTAMP)
        tables = {}
        for kind, count, columns, updated in self._rows.take():
            ids, versions, patients, sources, resources, digests, ops = \
                (_strings(count, column) for column in columns)
            tables[kind] = pa.Table.from_arrays(
                [ids, pa.repeat(pa.scalar(kind, pa.string()), count), versions,
                 _timestamps(count, updated), patients, sources, pa.repeat(load_id, count),
                 pa.repeat(loaded_at, count), resources, digests, ops],
                schema=bronze.BATCH_SCHEMA)
        return tables


def _seal_value(sealer, text: bytes) -> str:
    """A JSON value written with escapes, sealed as ``Protector`` seals it: decoded, then written
    again (a value without escapes is sealed as written, which is the same text)."""
    return sealer.seal(DECODER.decode(text))


def _buffer(data: bytes | None) -> pa.Buffer:
    return pa.py_buffer(data or b"")


def _strings(count: int, column: tuple[Any, ...]) -> pa.Array:
    valid, offsets, data, nulls = column
    return pa.Array.from_buffers(pa.string(), count,
                                 [_buffer(valid) if nulls else None, _buffer(offsets),
                                  _buffer(data)], null_count=nulls)


def _timestamps(count: int, column: tuple[Any, ...]) -> pa.Array:
    valid, values, nulls = column
    return pa.Array.from_buffers(_TIMESTAMP, count,
                                 [_buffer(valid) if nulls else None, _buffer(values)],
                                 null_count=nulls)
