"""An fsspec filesystem that encrypts on write and decrypts on read: carelake's storage layer.

Protocol ``clenc``, rooted at the lake's data folder: ``clenc://warehouse/bronze/patient/...`` is
``DIR/warehouse/bronze/patient/...`` on disk, as ciphertext. pyiceberg reaches it through
``FsspecFileIO`` (the scheme is registered with pyiceberg when this module loads), DuckDB through
``connection.register_filesystem(fs)``, and every other writer through ``fs.open``.

Writes go to a hidden temporary file beside the target, are fsynced and renamed into place on
close, so a reader never sees half a file and a crashed writer leaves only a ``.clenc-tmp-`` file
that ``Lake.open`` removes. A filesystem made with ``sync=False`` (the catalog property
``carelake.sync = "false"``) leaves the fsync to whoever commits the file (``sync``): the ingest's
workers write their staged data files so. Reads decrypt only the segments a byte range needs.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from infra.crypto.streaming import (
    PREAMBLE_SIZE,
    DataKey,
    EncryptingWriter,
    SegmentReader,
    plaintext_size,
    read_preamble,
)
from infra.errors import ConfigError, IntegrityError

logger = logging.getLogger(__name__)

PROTOCOL = "clenc"
TEMP_PREFIX = ".clenc-tmp-"
SYNC_PROPERTY = "carelake.sync"

# Keys per data folder, registered by the keyring of the process that opened the lake.
_KEYS: dict[str, tuple[Callable[[int], DataKey], Callable[[], DataKey], int]] = {}
_KEYS_LOCK = threading.Lock()


def register_keys(
    root: Path,
    *,
    key_for_version: Callable[[int], DataKey],
    primary: Callable[[], DataKey],
    segment_size: int,
) -> None:
    with _KEYS_LOCK:
        _KEYS[str(Path(root).resolve())] = (key_for_version, primary, segment_size)


def _keys_for(root: str):
    try:
        return _KEYS[root]
    except KeyError:
        raise ConfigError(
            f"no keys are registered for the lake at {root}: open it with infra.lake.Lake.open"
        ) from None


class _AtomicSink:
    """A file written under a temporary name and renamed into place when closed (flushed to
    disk first, unless ``sync`` is False)."""

    def __init__(self, final: Path, sync: bool = True) -> None:
        self._final = final
        self._sync = sync
        self._temp = final.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}-{final.name}")
        final.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self._temp, "xb")  # noqa: SIM115 - closed in close()

    def write(self, data: bytes) -> int:
        return self._handle.write(data)

    def close(self) -> None:
        self._handle.flush()
        if self._sync:
            os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self._temp, self._final)


class _DecryptingFile(AbstractBufferedFile):
    def __init__(self, fs: EncryptedFileSystem, path: str, local: Path, **kwargs: Any) -> None:
        self._raw = open(local, "rb")  # noqa: SIM115 - closed in close()
        try:
            size = local.stat().st_size
            self._reader = SegmentReader(self._raw, size, fs.key_for_version)
        except BaseException:
            self._raw.close()
            raise
        super().__init__(
            fs, path, mode="rb", block_size=self._reader.segment_size, cache_type="none",
            size=self._reader.size, **kwargs,
        )

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self._reader.read(start, end - start)

    def close(self) -> None:
        super().close()
        self._raw.close()


class _EncryptingFile(EncryptingWriter):
    """The writer, with the attributes fsspec callers and pyarrow look for."""

    def __init__(self, path: str, sink: _AtomicSink, key: DataKey, segment_size: int) -> None:
        super().__init__(sink, key, segment_size=segment_size)  # type: ignore[arg-type]
        self.path = path
        self.mode = "wb"

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EncryptedFileSystem(AbstractFileSystem):
    """Ciphertext on disk under ``root``; plaintext to the caller. See the module docstring."""

    protocol = PROTOCOL
    root_marker = ""
    cachable = True

    def __init__(self, root: str, sync: bool = True, **storage_options: Any) -> None:
        super().__init__(**storage_options)
        self.root = str(Path(root).resolve())
        self.sync_on_close = sync
        _keys_for(self.root)

    # keys -------------------------------------------------------------------------------------

    def key_for_version(self, version: int) -> DataKey:
        return _keys_for(self.root)[0](version)

    # paths ------------------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        path = str(path)
        if path.startswith(PROTOCOL + "://"):
            path = path[len(PROTOCOL) + 3 :]
        return path.strip("/")

    def _local(self, path: str) -> Path:
        relative = self._strip_protocol(path)
        local = Path(self.root, relative).resolve() if relative else Path(self.root)
        if local != Path(self.root) and Path(self.root) not in local.parents:
            raise ConfigError(f"path {relative!r} leaves the lake's data folder")
        return local

    def unstrip_protocol(self, name: str) -> str:
        return f"{PROTOCOL}://{self._strip_protocol(name)}"

    # metadata ---------------------------------------------------------------------------------

    def _entry(self, path: str, local: Path) -> dict[str, Any]:
        stat = local.stat()
        if local.is_dir():
            return {"name": self._strip_protocol(path), "size": 0, "type": "directory",
                    "mtime": stat.st_mtime}
        return {"name": self._strip_protocol(path), "size": self._plain_size(local, stat.st_size),
                "type": "file", "mtime": stat.st_mtime}

    def _plain_size(self, local: Path, size: int) -> int:
        with open(local, "rb") as handle:
            head = handle.read(PREAMBLE_SIZE)
        _, segment_size = read_preamble(head)
        return plaintext_size(size, segment_size)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        local = self._local(path)
        if not local.exists():
            raise FileNotFoundError(self._strip_protocol(path))
        return self._entry(path, local)

    def ls(self, path: str, detail: bool = True, **kwargs: Any):
        local = self._local(path)
        if not local.exists():
            raise FileNotFoundError(self._strip_protocol(path))
        if local.is_file():
            entries = [self._entry(path, local)]
        else:
            base = self._strip_protocol(path)
            entries = [
                self._entry(f"{base}/{child.name}" if base else child.name, child)
                for child in sorted(local.iterdir())
                if not child.name.startswith(TEMP_PREFIX)
            ]
        return entries if detail else [entry["name"] for entry in entries]

    def exists(self, path: str, **kwargs: Any) -> bool:
        return self._local(path).exists()

    def lexists(self, path: str, **kwargs: Any) -> bool:
        return self.exists(path)

    def isdir(self, path: str) -> bool:
        return self._local(path).is_dir()

    def isfile(self, path: str) -> bool:
        return self._local(path).is_file()

    def modified(self, path: str):
        import datetime

        return datetime.datetime.fromtimestamp(self._local(path).stat().st_mtime, datetime.UTC)

    # changes ----------------------------------------------------------------------------------

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        self._local(path).mkdir(parents=create_parents, exist_ok=True)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self._local(path).mkdir(parents=True, exist_ok=exist_ok)

    def rm_file(self, path: str) -> None:
        self._local(path).unlink()

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def rm(self, path, recursive: bool = False, maxdepth=None) -> None:
        paths = path if isinstance(path, list) else [path]
        for one in paths:
            local = self._local(one)
            if local.is_dir():
                if not recursive:
                    raise IsADirectoryError(self._strip_protocol(one))
                shutil.rmtree(local)
            elif local.exists():
                local.unlink()
            else:
                raise FileNotFoundError(self._strip_protocol(one))

    def mv(self, path1: str, path2: str, **kwargs: Any) -> None:
        os.replace(self._local(path1), self._local(path2))

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        target = self._local(path2)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._local(path1), target)

    # files ------------------------------------------------------------------------------------

    def _open(self, path: str, mode: str = "rb", block_size=None, autocommit=True,
              cache_options=None, **kwargs: Any):
        local = self._local(path)
        if "r" in mode:
            if not local.is_file():
                raise FileNotFoundError(self._strip_protocol(path))
            return self._reader(path, local)
        if "w" in mode or "x" in mode:
            if "x" in mode and local.exists():
                raise FileExistsError(self._strip_protocol(path))
            return self._writer(path, local)
        raise ValueError(f"encrypted files open for 'rb' or 'wb', not {mode!r} (no appends)")

    def _reader(self, path: str, local: Path):
        return _DecryptingFile(self, self._strip_protocol(path), local)

    def _writer(self, path: str, local: Path):
        _, primary, segment_size = _keys_for(self.root)
        return _EncryptingFile(self._strip_protocol(path), _AtomicSink(local, self.sync_on_close),
                               primary(), segment_size)

    def cat_file(self, path: str, start=None, end=None, **kwargs: Any) -> bytes:
        with self._open(path, "rb") as handle:
            if start:
                handle.seek(start if start >= 0 else handle.size + start)
            if end is None:
                return handle.read()
            end = end if end >= 0 else handle.size + end
            return handle.read(end - handle.tell())

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        with self._open(path, "wb") as handle:
            handle.write(value)

    def sync(self, paths: list[str]) -> None:
        """Flush files written without a flush on close to disk (fsync)."""
        for path in paths:
            fsync_path(self._local(path))

    def verify(self, path: str) -> None:
        """Authenticate a whole file; IntegrityError names the path and the first bad segment."""
        local = self._local(path)
        with open(local, "rb") as raw:
            try:
                SegmentReader(raw, local.stat().st_size, self.key_for_version).verify()
            except IntegrityError as error:
                raise IntegrityError(f"{self._strip_protocol(path)}: {error}") from None


class PassthroughFileSystem(EncryptedFileSystem):
    """The same filesystem without encryption, for one purpose only: the benchmark that measures
    what encryption costs (``infra/bench/encryption.py``), in a scratch folder it deletes. No
    setting selects it; a lake opened by ``Lake.open`` never uses it."""

    protocol = "clpass"

    def _plain_size(self, local: Path, size: int) -> int:
        return size

    def _reader(self, path: str, local: Path):
        return open(local, "rb")  # noqa: SIM115 - the caller closes it

    def _writer(self, path: str, local: Path):
        return _PlainFile(self._strip_protocol(path), _AtomicSink(local, self.sync_on_close))

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        path = str(path)
        if path.startswith("clpass://"):
            path = path[len("clpass://"):]
        return path.strip("/")

    def unstrip_protocol(self, name: str) -> str:
        return f"clpass://{self._strip_protocol(name)}"


class _PlainFile:
    def __init__(self, path: str, sink: _AtomicSink) -> None:
        self.path, self.mode, self._sink, self.closed, self._written = path, "wb", sink, False, 0

    def write(self, data) -> int:
        self._written += len(data)
        return self._sink.write(data)

    def tell(self) -> int:
        return self._written

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._sink.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fsync_path(local: Path | str) -> None:
    """Flush a file already closed to disk."""
    descriptor = os.open(local, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_stale_temporaries(root: Path) -> int:
    """Delete the temporary files of writers that crashed before closing; returns how many."""
    removed = 0
    for temp in Path(root).rglob(TEMP_PREFIX + "*"):
        temp.unlink(missing_ok=True)
        removed += 1
    if removed:
        logger.info("removed %d unfinished encrypted file(s) left by a crashed writer", removed)
    return removed


def _pyiceberg_factory(properties: dict[str, str]) -> EncryptedFileSystem:
    root = properties.get("carelake.lake-root")
    if not root:
        raise ConfigError("the Iceberg catalog has no 'carelake.lake-root' property: open the "
                          "lake with infra.lake.Lake.open")
    return EncryptedFileSystem(root, sync=_sync(properties))


def _pyiceberg_passthrough(properties: dict[str, str]) -> PassthroughFileSystem:
    return PassthroughFileSystem(properties["carelake.lake-root"], sync=_sync(properties))


def _sync(properties: dict[str, str]) -> bool:
    return properties.get(SYNC_PROPERTY, "true") != "false"


def _register_with_pyiceberg() -> None:
    from pyiceberg.io import fsspec as iceberg_fsspec

    iceberg_fsspec.SCHEME_TO_FS[PROTOCOL] = _pyiceberg_factory
    iceberg_fsspec.SCHEME_TO_FS[PassthroughFileSystem.protocol] = _pyiceberg_passthrough


_register_with_pyiceberg()
