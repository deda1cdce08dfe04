"""Key-encryption key (KEK) providers: what wraps carelake's data keys.

A provider holds one key-encryption key and never hands it out: it only wraps and unwraps data
keys, the way a KMS (Vault transit, a cloud KMS, Tink's KMS envelope) or an HSM does. carelake ships
two: a key file (the default) and a PKCS#11 token. A new one implements ``KekProvider``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class KekProvider(ABC):
    """Wraps and unwraps data keys with a key-encryption key it never reveals."""

    #: short name recorded beside every wrapped key ("file", "pkcs11", ...)
    name: str

    @property
    @abstractmethod
    def key_id(self) -> str:
        """A stable, non-secret id of the current KEK (recorded with each wrapped key)."""

    @abstractmethod
    def wrap(self, data_key: bytes, *, context: bytes) -> bytes:
        """Encrypt ``data_key``, bound to ``context`` (the key's name and version)."""

    @abstractmethod
    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        """Decrypt a wrapped key; raises ``infra.errors.KeyError_`` for a wrong key or context."""
