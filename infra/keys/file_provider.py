"""The default key-encryption key: a 256-bit key in a file outside the data folder.

The file is created on first use with mode 0600. Losing it loses the lake: back it up
(``carelake keys backup``) somewhere other than the data folder's backups.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from infra.errors import KeyError_
from infra.keys.provider import KekProvider

logger = logging.getLogger(__name__)

KEK_FILE = "kek.key"
_WRAP_VERSION = b"\x01"


class FileKekProvider(KekProvider):
    name = "file"

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise KeyError_(
                    f"key file {self.path} is missing: the lake cannot be read without it. "
                    "Restore it from your key backup (carelake keys restore), or point "
                    "keys.key_dir at the folder that holds it"
                )
            self._create()
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            raise KeyError_(
                f"key file {self.path} is readable by other users (mode {mode:o}): "
                f"run chmod 600 {self.path}"
            )
        material = self.path.read_bytes()
        if len(material) != 32:
            raise KeyError_(f"key file {self.path} is damaged: it must hold exactly 32 bytes")
        self._aead = AESGCM(material)
        self._key_id = hashlib.sha256(b"carelake kek id" + material).hexdigest()[:16]

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(os.urandom(32))
        logger.warning(
            "created a new key-encryption key at %s. Back it up now (carelake keys backup): "
            "losing this key loses the lake", self.path,
        )

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, data_key: bytes, *, context: bytes) -> bytes:
        nonce = os.urandom(12)
        return _WRAP_VERSION + nonce + self._aead.encrypt(nonce, data_key, context)

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        if wrapped[:1] != _WRAP_VERSION:
            raise KeyError_("wrapped key has an unknown format version")
        try:
            return self._aead.decrypt(wrapped[1:13], wrapped[13:], context)
        except InvalidTag:
            raise KeyError_(
                f"the key file {self.path} cannot unwrap this lake's keys: it is the wrong key "
                "file (restore the right one from your key backup)"
            ) from None
