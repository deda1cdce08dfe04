"""The lake: the data folder, its keys, the encrypted filesystem, the Iceberg catalog and DuckDB.

``Lake.open(settings)`` is the one way in. It creates a new lake on first use (a lake id, a
key-encryption key, a keyring and a patient vault in the key folder, outside the data folder) and
afterwards refuses to run without the right keys. Every table lives in a SQLite Iceberg catalog
whose files all go through the ``clenc`` encrypted filesystem.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from infra.crypto.fs import (
    EncryptedFileSystem,
    fsync_path,
    register_keys,
    remove_stale_temporaries,
)
from infra.errors import ConfigError
from infra.keys.keyring import Keyring
from infra.keys.vault import PatientVault
from infra.settings import Settings

logger = logging.getLogger(__name__)

LAKE_FILE = "lake.json"
CATALOG_FILE = "catalog.db"
LAKE_FORMAT = 1
COMMIT_ATTEMPTS = 12

T = TypeVar("T")


def _kek_provider(settings: Settings, key_dir: Path, *, create: bool):
    provider = settings.get("keys.provider")
    if provider == "file":
        from infra.keys.file_provider import KEK_FILE, FileKekProvider

        return FileKekProvider(key_dir / KEK_FILE, create=create)
    if provider == "pkcs11":
        try:
            from infra.keys.pkcs11 import Pkcs11Provider
        except ModuleNotFoundError as error:
            raise ConfigError(f"keys.provider is pkcs11 but its module is unavailable: {error}")
        return Pkcs11Provider.from_settings(settings)
    raise ConfigError(f"unknown keys.provider {provider!r}")


STORAGE_MODES = ("encrypted", "passthrough", "plain")


class Lake:
    #: "encrypted" always, except inside infra/bench/encryption.py, which measures the cost of
    #: encryption against the same lake on a pass-through filesystem and on plain local files.
    storage = "encrypted"

    def __init__(self, settings: Settings, *, lake_id: str, keyring: Keyring) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.lake_id = lake_id
        self.keys = keyring
        self.key_dir = settings.key_dir / lake_id
        register_keys(
            self.data_dir,
            key_for_version=lambda version: keyring.data_key("lake", version),
            primary=lambda: keyring.data_key("lake"),
            segment_size=int(settings.get("crypto.segment_size")),
        )
        self.fs = EncryptedFileSystem(str(self.data_dir))
        self._committed: dict[str, Any] = {}  # table objects of this lake's last commits

    def _unencrypted_for_benchmark(self, mode: str) -> None:
        """Switch this lake object to a pass-through filesystem or plain local files: only for the
        encryption benchmark, on a scratch lake it throws away."""
        from infra.crypto.fs import PassthroughFileSystem

        if mode not in STORAGE_MODES:
            raise ConfigError(f"unknown storage mode {mode!r}")
        self.storage = mode
        if mode == "passthrough":
            self.fs = PassthroughFileSystem(str(self.data_dir))
        self.__dict__.pop("catalog", None)

    # opening ----------------------------------------------------------------------------------

    @classmethod
    def open(cls, settings: Settings, *, role: str = "loader", create: bool = True) -> Lake:
        data_dir = settings.data_dir
        marker = data_dir / LAKE_FILE
        if marker.exists():
            record = json.loads(marker.read_text())
            if record.get("format") != LAKE_FORMAT:
                raise ConfigError(f"{marker} has lake format {record.get('format')}; this "
                                  f"carelake reads format {LAKE_FORMAT}")
            lake_id, new = record["lake_id"], False
        elif not create:
            raise ConfigError(f"{data_dir} holds no carelake lake: run carelake run first")
        else:
            data_dir.mkdir(parents=True, exist_ok=True)
            lake_id, new = uuid.uuid4().hex, True

        key_dir = settings.key_dir / lake_id
        provider = _kek_provider(settings, key_dir, create=new)
        keyring = Keyring.open(key_dir, lake_id=lake_id, provider=provider, role=role, create=new)
        keyring.material("lake")  # a wrong KEK fails here, before anything is read or written
        if new:
            marker.write_text(json.dumps({"format": LAKE_FORMAT, "lake_id": lake_id}) + "\n")
            logger.warning("new lake %s; its keys are in %s, outside the data folder: losing "
                           "them loses the lake (back them up with carelake keys backup)",
                           lake_id, key_dir)
        lake = cls(settings, lake_id=lake_id, keyring=keyring)
        remove_stale_temporaries(data_dir / "warehouse")
        return lake

    @cached_property
    def patients(self) -> PatientVault:
        return PatientVault(self.key_dir, self.keys)

    @cached_property
    def audit(self):
        from infra.audit import AuditLog

        return AuditLog(self)

    @cached_property
    def catalog(self):
        from pyiceberg.catalog.sql import SqlCatalog

        properties = {
            "uri": f"sqlite:///{self.data_dir / CATALOG_FILE}",
            "warehouse": "clenc://warehouse",
            "py-io-impl": "pyiceberg.io.fsspec.FsspecFileIO",
            "carelake.lake-root": str(self.data_dir),
        }
        if self.storage == "passthrough":
            properties["warehouse"] = "clpass://warehouse"
        elif self.storage == "plain":
            properties["warehouse"] = f"file://{self.data_dir / 'warehouse'}"
            del properties["py-io-impl"]
        return SqlCatalog("carelake", **properties)

    def path(self, relative: str) -> str:
        return f"clenc://{relative.strip('/')}"

    def sync(self, paths: list[str]) -> None:
        """Flush files written without a flush on close (``bronze.staging_io``) to disk."""
        if self.storage == "plain":
            for path in paths:
                fsync_path(path.removeprefix("file://"))
        else:
            self.fs.sync(paths)

    # tables -----------------------------------------------------------------------------------

    def has_table(self, identifier: str) -> bool:
        return self.catalog.table_exists(identifier)

    def table(self, identifier: str):
        from pyiceberg.exceptions import NoSuchTableError

        try:
            return self.catalog.load_table(identifier)
        except NoSuchTableError:
            raise ConfigError(f"table does not exist: {identifier}") from None

    def tables(self, namespace: str) -> list[str]:
        with contextlib.suppress(Exception):
            return sorted(".".join(ident) for ident in self.catalog.list_tables(namespace))
        return []

    def ensure_table(self, identifier: str, schema: pa.Schema, **create: Any):
        # create_table_if_not_exists writes a metadata file before it finds the table exists,
        # leaving an orphan each time: look first.
        if self.catalog.table_exists(identifier):
            return self.catalog.load_table(identifier)
        namespace = identifier.rsplit(".", 1)[0]
        self.catalog.create_namespace_if_not_exists(namespace)
        return self.catalog.create_table_if_not_exists(identifier, schema=schema, **create)

    def commit(self, identifier: str, change: Callable[[Any], T], *, reuse: bool = False) -> T:
        """Run ``change(table)`` on a fresh copy of the table, retrying on commit conflicts.

        ``change`` must build its whole commit from the table it is given (a transaction), so a
        retry after another writer's commit recomputes against the new state. With ``reuse``,
        the table object of this lake's last commit to it is given instead of a fresh one (a
        commit keeps its object current): a commit made by another writer since makes this one
        fail, and the retry reads the table afresh.
        """
        from pyiceberg.exceptions import CommitFailedException
        from sqlalchemy.exc import OperationalError

        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            table = self._committed.pop(identifier, None)
            if not reuse or attempt > 1:
                table = None
            try:
                table = table or self.table(identifier)
                result = change(table)
                if reuse:
                    self._committed[identifier] = table
                return result
            except (CommitFailedException, OperationalError) as error:
                if attempt == COMMIT_ATTEMPTS:
                    raise ConfigError(
                        f"{identifier}: {COMMIT_ATTEMPTS} commits in a row lost to other writers "
                        f"({type(error).__name__}); run the loads one after another"
                    ) from None
                pause = min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random())
                logger.info("%s: commit conflict, retrying in %.2f s", identifier, pause)
                time.sleep(pause)
        raise AssertionError("unreachable")

    def append(self, identifier: str, rows: pa.Table) -> None:
        self.ensure_table(identifier, rows.schema)
        if rows.num_rows:
            self.commit(identifier, lambda table: table.append(rows))

    def delete(self, identifier: str, where: str) -> int:
        """Delete the rows matching a pyiceberg filter string; returns how many were deleted."""
        if not self.has_table(identifier):
            return 0
        before = self.count(identifier, where)
        if before:
            self.commit(identifier, lambda table: table.delete(delete_filter=where))
        return before

    def count(self, identifier: str, where: str | None = None) -> int:
        table = self.table(identifier)
        scan = table.scan(row_filter=where, selected_fields=("*",)) if where else table.scan()
        return scan.to_arrow().num_rows

    def read_arrow(self, identifier: str, *, where: str | None = None,
                   columns: tuple[str, ...] | None = None,
                   snapshot_id: int | None = None) -> pa.Table:
        table = self.table(identifier)
        options: dict[str, Any] = {}
        if where:
            options["row_filter"] = where
        if columns:
            options["selected_fields"] = columns
        if snapshot_id is not None:
            options["snapshot_id"] = snapshot_id
        return table.scan(**options).to_arrow()

    def snapshot_as_of(self, identifier: str, timestamp_ms: int) -> int | None:
        """The id of the snapshot current at ``timestamp_ms`` (ms since epoch), or None."""
        table = self.table(identifier)
        current = None
        for entry in table.metadata.snapshot_log:
            if entry.timestamp_ms <= timestamp_ms:
                current = entry.snapshot_id
        return current

    def metadata_location(self, identifier: str) -> str:
        return self.table(identifier).metadata_location

    # DuckDB -----------------------------------------------------------------------------------

    def duckdb(self, database: str = ":memory:", *, httpfs: bool = False):
        """A DuckDB connection that reads the lake: the encrypted filesystem registered and the
        avro and iceberg extensions loaded from their packages (INSTALL cannot work offline)."""
        import duckdb

        connection = duckdb.connect(database, config={"autoinstall_known_extensions": False,
                                                      "autoload_known_extensions": False})
        for name in ("avro", "iceberg") + (("httpfs",) if httpfs else ()):
            connection.execute(f"load '{extension_path(name)}'")
        if self.storage != "plain":
            connection.register_filesystem(self.fs)
        return connection

    def scan_sql(self, identifier: str, *, snapshot_id: int | None = None) -> str:
        location = self.metadata_location(identifier).replace("'", "''")
        if location.startswith("file://"):
            location = location[len("file://"):]
        if snapshot_id is not None:
            return f"iceberg_scan('{location}', snapshot_from_id = {int(snapshot_id)})"
        return f"iceberg_scan('{location}')"


def extension_path(name: str) -> str:
    import importlib

    import duckdb

    package = importlib.import_module(f"duckdb_extension_{name}")
    folder = Path(package.__file__).parent / "extensions"
    matches = sorted(folder.glob(f"*/{name}.duckdb_extension"))
    wanted = [path for path in matches if path.parent.name == f"v{duckdb.__version__}"]
    if not (wanted or matches):
        raise ConfigError(f"the duckdb-extension-{name} package holds no extension file: "
                          f"pip install duckdb-extension-{name}=={duckdb.__version__}")
    return str((wanted or matches)[0])

