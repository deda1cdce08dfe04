"""The patient vault: one random key per patient, wrapped by the vault key, outside the data folder.

A patient's pseudonymous key (``patient_key``, the join key of every table) is derived from that
patient's own key, so nothing but that key links the pseudonym back to the person: not the source
id, not the lake's other keys. The vault finds a patient's key by an HMAC of the source reference
under the index key. Erasure deletes the row (SQLite ``secure_delete`` on, the WAL checkpointed
and truncated): every token sealed under that key, in every snapshot and backup of the data
folder, is unreadable from then on.
"""

from __future__ import annotations

import base64
import binascii
import decimal
import hashlib
import hmac
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from infra.errors import KeyError_
from infra.keys.keyring import Keyring

VAULT_FILE = "patients.sqlite"
TOKEN_PREFIX = "clp1:"
_PSEUDONYM_INFO = b"carelake pseudonym v1"
_ENCODER = msgspec.json.Encoder(decimal_format="number")
_URL_SAFE = bytes.maketrans(b"+/", b"-_")
_DECODER = msgspec.json.Decoder(float_hook=decimal.Decimal)


@dataclass(frozen=True)
class PatientKey:
    pseudonym: str
    material: bytes

    def aead(self) -> AESGCM:
        return AESGCM(self.material)


def pseudonym_of(material: bytes) -> str:
    return hmac.new(material, _PSEUDONYM_INFO, hashlib.sha256).hexdigest()[:32]


class TokenSealer:
    """Seals and opens values under one patient's key; a token is bound to that patient."""

    __slots__ = ("_aead", "_aad")

    def __init__(self, key: PatientKey) -> None:
        self._aead = key.aead()
        self._aad = key.pseudonym.encode()

    def seal(self, value: Any) -> str:
        return self.seal_json(_ENCODER.encode(value))

    def seal_json(self, encoded: bytes) -> str:
        """Seal a value given as its JSON text (what ``seal`` would encode)."""
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, encoded, self._aad)
        # base64.urlsafe_b64encode, without its two Python calls (a token per sealed value)
        return TOKEN_PREFIX + binascii.b2a_base64(nonce + sealed, newline=False) \
            .translate(_URL_SAFE).decode("ascii")

    def open(self, token: str) -> Any:
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
            raise KeyError_("value is not a carelake protected token")
        raw = base64.urlsafe_b64decode(token[len(TOKEN_PREFIX):])
        try:
            return _DECODER.decode(self._aead.decrypt(raw[:12], raw[12:], self._aad))
        except InvalidTag:
            raise KeyError_("protected token does not open under this patient's key") from None


class PatientVault:
    def __init__(self, key_dir: Path, keyring: Keyring) -> None:
        self.path = Path(key_dir) / VAULT_FILE
        self._keyring = keyring
        self._lock = threading.Lock()
        self._by_index: dict[bytes, PatientKey] = {}
        self._by_pseudonym: dict[str, PatientKey] = {}
        self._loaded = False
        self._connection: sqlite3.Connection | None = None

    # storage ----------------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=60, isolation_level=None,
                                         check_same_thread=False)
            connection.execute("pragma secure_delete = on")
            connection.execute("pragma journal_mode = wal")
            connection.execute("pragma synchronous = normal")
            connection.execute(
                "create table if not exists patient_keys (index_hmac blob primary key, "
                "wrapped blob not null, created_at integer not null)"
            )
            os.chmod(self.path, 0o600)
            self._connection = connection
        return self._connection

    def _index(self, source_reference: str) -> bytes:
        return hmac.new(self._keyring.material("index"), source_reference.encode(),
                        hashlib.sha256).digest()

    def _unwrap(self, index: bytes, wrapped: bytes) -> PatientKey:
        vault = AESGCM(self._keyring.material("vault"))
        try:
            material = vault.decrypt(wrapped[:12], wrapped[12:], index)
        except InvalidTag:
            raise KeyError_(f"the patient vault {self.path} does not open under this keyring's "
                            "vault key: restore the vault and keyring from one backup") from None
        return PatientKey(pseudonym_of(material), material)

    def _load(self) -> None:
        if self._loaded:
            return
        for index, wrapped in self._db().execute("select index_hmac, wrapped from patient_keys"):
            key = self._unwrap(index, wrapped)
            self._by_index[index] = key
            self._by_pseudonym[key.pseudonym] = key
        self._loaded = True

    # lookups ----------------------------------------------------------------------------------

    def key_for_source(self, source_reference: str, *, create: bool = True) -> PatientKey | None:
        """The key of the patient ``Patient/<source id>``, made on first sight when ``create``."""
        index = self._index(source_reference)
        with self._lock:
            self._load()
            key = self._by_index.get(index)
            if key is not None or not create:
                return key
            material = os.urandom(32)
            nonce = os.urandom(12)
            vault = AESGCM(self._keyring.material("vault"))
            wrapped = nonce + vault.encrypt(nonce, material, index)
            database = self._db()
            # Another process may have made this patient's key first: theirs wins, ours is dropped.
            database.execute("insert or ignore into patient_keys values (?, ?, ?)",
                             (index, wrapped, int(time.time())))
            stored = database.execute("select wrapped from patient_keys where index_hmac = ?",
                                      (index,)).fetchone()[0]
            key = self._unwrap(index, stored)
            self._by_index[index] = key
            self._by_pseudonym[key.pseudonym] = key
            return key

    def by_pseudonym(self, pseudonym: str) -> PatientKey | None:
        with self._lock:
            self._load()
            return self._by_pseudonym.get(pseudonym)

    def sealer(self, pseudonym: str) -> TokenSealer:
        key = self.by_pseudonym(pseudonym)
        if key is None:
            raise KeyError_(
                "this patient's key is not in the vault: the patient was erased, or the vault "
                "belongs to another lake"
            )
        return TokenSealer(key)

    def open_token(self, pseudonym: str, token: str) -> Any:
        return self.sealer(pseudonym).open(token)

    def pseudonyms(self) -> list[str]:
        with self._lock:
            self._load()
            return sorted(self._by_pseudonym)

    # erasure and backup -----------------------------------------------------------------------

    def destroy(self, pseudonym: str) -> bool:
        """Crypto-shred one patient: delete the wrapped key so no copy of a token opens again."""
        with self._lock:
            self._load()
            key = self._by_pseudonym.pop(pseudonym, None)
            if key is None:
                return False
            index = next(i for i, k in self._by_index.items() if k.pseudonym == pseudonym)
            del self._by_index[index]
            database = self._db()
            database.execute("delete from patient_keys where index_hmac = ?", (index,))
            database.execute("pragma wal_checkpoint(truncate)")
            database.execute("vacuum")
            return True

    def export_rows(self) -> list[dict[str, str]]:
        rows = self._db().execute("select index_hmac, wrapped, created_at from patient_keys")
        return [{"index": base64.b64encode(index).decode(),
                 "wrapped": base64.b64encode(wrapped).decode(), "created_at": created}
                for index, wrapped, created in rows]

    def import_rows(self, rows: list[dict[str, Any]], *, erased: set[str]) -> tuple[int, int]:
        """Restore wrapped keys from a backup, skipping patients erased since it was taken."""
        restored = skipped = 0
        database = self._db()
        for row in rows:
            index, wrapped = base64.b64decode(row["index"]), base64.b64decode(row["wrapped"])
            if self._unwrap(index, wrapped).pseudonym in erased:
                skipped += 1
                continue
            database.execute("insert or ignore into patient_keys values (?, ?, ?)",
                             (index, wrapped, int(row["created_at"])))
            restored += 1
        self._loaded = False
        self._by_index.clear()
        self._by_pseudonym.clear()
        return restored, skipped

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

