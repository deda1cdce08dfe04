"""Streaming authenticated encryption of whole files, with random-access reads.

The ciphertext is Tink's AES-GCM-HKDF streaming format (AES-256-GCM in fixed-size segments, a
per-file key derived with HKDF-SHA256 from the data key, a random salt and the associated data)
behind a 13-byte carelake preamble that names the format version, the data key's version and the
segment size. The preamble is the associated data, so altering it fails authentication.
``docs/encryption-format.md`` describes the layout byte by byte.

Tink's own Python streams are sequential only; ``SegmentReader`` decrypts any byte range by
reading only the segments that hold it, which Parquet footers and Avro manifests need.
"""

from __future__ import annotations

import io
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.exceptions import InvalidTag

from infra.errors import IntegrityError, KeyError_

MAGIC = b"CLKE"
FORMAT_VERSION = 1
PREAMBLE = struct.Struct(">4sBII")  # magic, format version, key version, ciphertext segment size
PREAMBLE_SIZE = PREAMBLE.size  # 13
KEY_SIZE = 32  # AES-256; also the HKDF salt size, as in Tink
NONCE_PREFIX_SIZE = 7
HEADER_SIZE = 1 + KEY_SIZE + NONCE_PREFIX_SIZE  # Tink's header: length byte, salt, nonce prefix
TAG_SIZE = 16


@dataclass(frozen=True)
class DataKey:
    """A data key's raw bytes and its version in the keyring (recorded in every file's preamble)."""

    material: bytes
    version: int

    def __post_init__(self) -> None:
        if len(self.material) != KEY_SIZE:
            raise KeyError_(f"a data key must be {KEY_SIZE} bytes, got {len(self.material)}")


def _segment_cipher(ikm: bytes, salt: bytes, associated_data: bytes) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=associated_data)
    return AESGCM(derived.derive(ikm))


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">I?", index, last)


def first_plaintext_size(segment_size: int) -> int:
    return segment_size - HEADER_SIZE - TAG_SIZE


def plaintext_size(ciphertext_size: int, segment_size: int) -> int:
    """The plaintext length of a whole file of ``ciphertext_size`` bytes (preamble included)."""
    stream = ciphertext_size - PREAMBLE_SIZE
    if stream < HEADER_SIZE + TAG_SIZE:
        raise IntegrityError("encrypted file is truncated: shorter than its header and one segment")
    segments = -(-stream // segment_size)
    last = stream - (segments - 1) * segment_size
    if last < TAG_SIZE + (HEADER_SIZE if segments == 1 else 0):
        raise IntegrityError("encrypted file is truncated inside its last segment")
    total = last - TAG_SIZE - (HEADER_SIZE if segments == 1 else 0)
    if segments > 1:
        total += first_plaintext_size(segment_size) + (segments - 2) * (segment_size - TAG_SIZE)
    return total


def read_preamble(head: bytes) -> tuple[int, int]:
    """Return (key version, segment size) from a file's first bytes, or raise IntegrityError."""
    if len(head) < PREAMBLE_SIZE or head[:4] != MAGIC:
        raise IntegrityError(
            "not a carelake encrypted file (no CLKE preamble): it was written outside carelake "
            "or is damaged"
        )
    _, version, key_version, segment_size = PREAMBLE.unpack_from(head)
    if version != FORMAT_VERSION:
        raise IntegrityError(
            f"encrypted file has format version {version}; this carelake reads version "
            f"{FORMAT_VERSION}: upgrade carelake"
        )
    if not 4096 <= segment_size <= 1 << 24:
        raise IntegrityError(f"encrypted file names an impossible segment size {segment_size}")
    return key_version, segment_size


class EncryptingWriter(io.RawIOBase):
    """A write-only file object: plaintext in, Tink-format ciphertext out to ``sink``.

    ``close()`` writes the final segment and closes the sink. A writer that is never closed leaves
    a file that fails authentication when read, never one that reads short.
    """

    def __init__(self, sink: BinaryIO, key: DataKey, *, segment_size: int) -> None:
        super().__init__()
        self._sink = sink
        self._segment_size = segment_size
        preamble = PREAMBLE.pack(MAGIC, FORMAT_VERSION, key.version, segment_size)
        salt = os.urandom(KEY_SIZE)
        self._prefix = os.urandom(NONCE_PREFIX_SIZE)
        self._cipher = _segment_cipher(key.material, salt, preamble)
        sink.write(preamble + bytes([HEADER_SIZE]) + salt + self._prefix)
        self._buffer = bytearray()
        self._index = 0
        self._limit = first_plaintext_size(segment_size)
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to a closed encrypted file")
        view = memoryview(data).cast("B")
        self._buffer += view
        # A full buffer is only sealed once more data follows, so the last segment is never empty
        # unless the whole plaintext is (Tink does the same).
        while len(self._buffer) > self._limit:
            limit = self._limit
            self._seal(bytes(self._buffer[:limit]), last=False)
            del self._buffer[:limit]
        self._written += len(view)
        return len(view)

    def _seal(self, chunk: bytes, *, last: bool) -> None:
        nonce = _nonce(self._prefix, self._index, last)
        self._sink.write(self._cipher.encrypt(nonce, chunk, None))
        self._index += 1
        self._limit = self._segment_size - TAG_SIZE

    def tell(self) -> int:
        return self._written

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._seal(bytes(self._buffer), last=True)
            self._buffer.clear()
            self._sink.close()
        finally:
            super().close()


class SegmentReader:
    """Random-access decryption of one encrypted file opened for reading.

    ``key_for_version`` returns the data key of a version (the keyring's lookup). Decrypted
    segments are cached (a few, least recently used), so sequential and footer reads stay cheap.
    """

    CACHE_SEGMENTS = 8

    def __init__(self, source: BinaryIO, ciphertext_size: int, key_for_version) -> None:
        self._source = source
        head = self._read_at(0, PREAMBLE_SIZE + HEADER_SIZE)
        key_version, self.segment_size = read_preamble(head)
        if head[PREAMBLE_SIZE] != HEADER_SIZE:
            raise IntegrityError("encrypted file header is damaged (wrong header length)")
        key: DataKey = key_for_version(key_version)
        salt = head[PREAMBLE_SIZE + 1 : PREAMBLE_SIZE + 1 + KEY_SIZE]
        self._prefix = head[PREAMBLE_SIZE + 1 + KEY_SIZE : PREAMBLE_SIZE + HEADER_SIZE]
        self._cipher = _segment_cipher(key.material, salt, head[:PREAMBLE_SIZE])
        self._ciphertext_size = ciphertext_size
        self.size = plaintext_size(ciphertext_size, self.segment_size)
        stream = ciphertext_size - PREAMBLE_SIZE
        self._segments = -(-stream // self.segment_size)
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def _read_at(self, offset: int, length: int) -> bytes:
        self._source.seek(offset)
        data = self._source.read(length)
        return data

    def _segment(self, index: int) -> bytes:
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        if index == 0:
            start = PREAMBLE_SIZE + HEADER_SIZE
            end = PREAMBLE_SIZE + self.segment_size
        else:
            start = PREAMBLE_SIZE + index * self.segment_size
            end = start + self.segment_size
        end = min(end, self._ciphertext_size)
        sealed = self._read_at(start, end - start)
        if len(sealed) != end - start:
            raise IntegrityError("encrypted file changed or was truncated while being read")
        last = index == self._segments - 1
        try:
            plain = self._cipher.decrypt(_nonce(self._prefix, index, last), sealed, None)
        except InvalidTag:
            raise IntegrityError(
                f"encrypted file fails authentication at segment {index}: it was altered, "
                "truncated or reordered, or it was written under another key; restore it from "
                "a backup"
            ) from None
        self._cache[index] = plain
        if len(self._cache) > self.CACHE_SEGMENTS:
            self._cache.popitem(last=False)
        return plain

    def _locate(self, offset: int) -> tuple[int, int]:
        first = first_plaintext_size(self.segment_size)
        if offset < first:
            return 0, offset
        rest = offset - first
        step = self.segment_size - TAG_SIZE
        return 1 + rest // step, rest % step

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` plaintext bytes from ``offset`` (fewer only at the end of file)."""
        if offset >= self.size or length <= 0:
            return b""
        length = min(length, self.size - offset)
        index, within = self._locate(offset)
        pieces = []
        while length > 0:
            segment = self._segment(index)
            piece = segment[within : within + length]
            if not piece:
                raise IntegrityError("encrypted file ends before its recorded length")
            pieces.append(piece)
            length -= len(piece)
            index += 1
            within = 0
        return b"".join(pieces)

    def verify(self) -> None:
        """Authenticate every segment (a full read), raising IntegrityError at the first bad one."""
        for index in range(self._segments):
            self._segment(index)


def encrypt_bytes(plaintext: bytes, key: DataKey, *, segment_size: int) -> bytes:
    sink = io.BytesIO()
    writer = EncryptingWriter(_KeepOpen(sink), key, segment_size=segment_size)
    writer.write(plaintext)
    writer.close()
    return sink.getvalue()


def decrypt_bytes(ciphertext: bytes, key_for_version) -> bytes:
    reader = SegmentReader(io.BytesIO(ciphertext), len(ciphertext), key_for_version)
    return reader.read(0, reader.size)


class _KeepOpen(io.RawIOBase):
    """Wraps a BytesIO so closing the writer leaves the buffer readable."""

    def __init__(self, target: io.BytesIO) -> None:
        super().__init__()
        self._target = target

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        return self._target.write(data)
