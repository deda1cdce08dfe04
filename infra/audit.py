"""The audit log: append-only, hash-chained, each entry encrypted; it holds no patient data.

Each entry is one line ``<sequence> <base64 of AES-GCM ciphertext>`` in ``DIR/audit/audit.log``.
Its plaintext is JSON with the event, the time, the fields, and ``prev``: the SHA-256 of the
previous entry's plaintext. A line changed, removed, reordered or inserted breaks the chain (or
fails authentication) and ``verify`` names the first bad sequence number. Fields are counts,
table names, snapshot ids, pseudonymous keys and key versions: never a name, a source id or text.
The log is the one file under DIR opened for append; an OS-level lock keeps writers in order.
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from infra.errors import IntegrityError, KeyError_

AUDIT_FILE = Path("audit") / "audit.log"
GENESIS = "0" * 64
READ_ROLES = {"auditor", "admin"}


class AuditLog:
    def __init__(self, lake) -> None:
        self._lake = lake
        self.path = lake.data_dir / AUDIT_FILE

    def _aead(self) -> AESGCM:
        return AESGCM(self._lake.keys.material("audit"))

    def _aad(self, sequence: int) -> bytes:
        return f"carelake audit v1|{self._lake.lake_id}|{sequence}".encode()

    def append(self, event: str, **fields: Any) -> int:
        """Append one entry; returns its sequence number."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.seek(0)
                sequence, previous = 0, GENESIS
                last_line = b""
                for line in handle:
                    if line.strip():
                        last_line = line
                if last_line:
                    sequence, plain = self._open_line(last_line)
                    previous = hashlib.sha256(plain).hexdigest()
                    sequence += 1
                record = {"seq": sequence, "at": dt.datetime.now(dt.UTC).isoformat(),
                          "event": event, "fields": fields, "prev": previous}
                plain = json.dumps(record, sort_keys=True, default=str).encode()
                nonce = os.urandom(12)
                sealed = self._aead().encrypt(nonce, plain, self._aad(sequence))
                handle.seek(0, os.SEEK_END)
                handle.write(f"{sequence} ".encode() + base64.b64encode(nonce + sealed) + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return sequence

    def _open_line(self, line: bytes) -> tuple[int, bytes]:
        try:
            sequence_text, payload = line.strip().split(b" ", 1)
            sequence = int(sequence_text)
            raw = base64.b64decode(payload, validate=True)
            return sequence, self._aead().decrypt(raw[:12], raw[12:], self._aad(sequence))
        except (ValueError, InvalidTag):
            raise IntegrityError(
                f"audit log {self.path}: an entry fails authentication (after the entry "
                f"starting {line[:12]!r}): the log was altered"
            ) from None

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, checked: raises IntegrityError at the first tampered one."""
        if self._lake.keys.role not in READ_ROLES:
            raise KeyError_(f"role {self._lake.keys.role!r} may not read the audit log: run as "
                            "auditor (carelake --role auditor audit show)")
        if not self.path.exists():
            return []
        entries, previous = [], GENESIS
        for number, line in enumerate(self.path.read_bytes().splitlines()):
            if not line.strip():
                continue
            sequence, plain = self._open_line(line)
            record = json.loads(plain)
            if sequence != number or record["seq"] != number:
                raise IntegrityError(f"audit log {self.path}: entry {number} is out of order or "
                                     "an entry was removed")
            if record["prev"] != previous:
                raise IntegrityError(f"audit log {self.path}: entry {number} does not follow "
                                     "the entry before it: the chain was broken")
            previous = hashlib.sha256(plain).hexdigest()
            entries.append(record)
        return entries

    def verify(self) -> int:
        return len(self.entries())
