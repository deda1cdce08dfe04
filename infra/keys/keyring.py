"""The keyring: carelake's data keys, each wrapped by the key-encryption key (envelope encryption).

``KEYDIR/keyring.json`` holds, per key name, every version of that data key wrapped by the KEK,
and which version is primary. Files record the version they were written under, so rotating a
data key (``rotate_data_key``) affects only new files and old ones stay readable; rotating the KEK
(``rewrap``) re-wraps every data key without touching any data file.

The keys and who may unwrap them (a role is the set of keys a process may unwrap):

| key | protects | roles |
| --- | --- | --- |
| lake | every file under the data folder | loader, analyst, reidentifier, auditor, admin |
| marts | the DuckDB marts databases | loader, analyst, admin |
| index | HMAC of patients' source ids, to find their keys | loader, reidentifier, admin |
| vault | wraps each patient's own key | loader, reidentifier, admin |
| quarantine | raw rejected records | loader, admin |
| audit | the audit log | every role (to append); reading needs auditor or admin |
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from infra.crypto.streaming import DataKey
from infra.errors import KeyError_
from infra.keys.provider import KekProvider

KEYRING_FILE = "keyring.json"
KEYRING_FORMAT = 1
KEY_NAMES = ("lake", "marts", "index", "vault", "quarantine", "audit")
ROLES: dict[str, frozenset[str]] = {
    "admin": frozenset(KEY_NAMES),
    "loader": frozenset(KEY_NAMES),
    "analyst": frozenset({"lake", "marts", "audit"}),
    "reidentifier": frozenset({"lake", "index", "vault", "audit"}),
    "auditor": frozenset({"lake", "audit"}),
}


def _context(lake_id: str, name: str, version: int) -> bytes:
    return f"carelake keyring v1|{lake_id}|{name}|{version}".encode()


class Keyring:
    def __init__(self, path: Path, data: dict[str, Any], provider: KekProvider, role: str) -> None:
        if role not in ROLES:
            raise KeyError_(f"unknown role {role!r}: use one of {', '.join(sorted(ROLES))}")
        self.path = path
        self.role = role
        self._data = data
        self._provider = provider
        self._cache: dict[tuple[str, int], bytes] = {}

    # opening ----------------------------------------------------------------------------------

    @classmethod
    def open(cls, key_dir: Path, *, lake_id: str, provider: KekProvider, role: str = "loader",
             create: bool = False) -> Keyring:
        path = Path(key_dir) / KEYRING_FILE
        if not path.exists():
            if not create:
                raise KeyError_(
                    f"no keyring at {path}: this lake's keys are missing. Restore them with "
                    "carelake keys restore BACKUP, or point keys.key_dir at the right folder"
                )
            data = {"format": KEYRING_FORMAT, "lake_id": lake_id, "kek_provider": provider.name,
                    "kek_id": provider.key_id, "keys": {}, "primary": {}}
            ring = cls(path, data, provider, "admin")
            for name in KEY_NAMES:
                ring._add_version(name)
            ring._save()
            return cls(path, ring._data, provider, role)
        data = json.loads(path.read_text())
        if data.get("format") != KEYRING_FORMAT:
            raise KeyError_(f"{path} has keyring format {data.get('format')}; this carelake "
                            f"reads format {KEYRING_FORMAT}")
        if data.get("lake_id") != lake_id:
            raise KeyError_(
                f"the keyring at {path} belongs to another lake: point keys.key_dir at this "
                "lake's keys"
            )
        return cls(path, data, provider, role)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".keyring-")
        with os.fdopen(descriptor, "w") as handle:
            json.dump(self._data, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o600)
        os.replace(temp, self.path)

    # keys -------------------------------------------------------------------------------------

    def _add_version(self, name: str) -> int:
        versions = self._data["keys"].setdefault(name, [])
        version = 1 + max((entry["version"] for entry in versions), default=0)
        material = os.urandom(32)
        wrapped = self._provider.wrap(material, context=_context(self.lake_id, name, version))
        versions.append({"version": version, "created_at": int(time.time()),
                         "wrapped": base64.b64encode(wrapped).decode()})
        self._data["primary"][name] = version
        self._cache[(name, version)] = material
        return version

    @property
    def lake_id(self) -> str:
        return self._data["lake_id"]

    def _check_role(self, name: str) -> None:
        if name not in ROLES[self.role]:
            raise KeyError_(
                f"role {self.role!r} may not unwrap the {name!r} key; run as a role that holds it "
                f"({', '.join(role for role, keys in sorted(ROLES.items()) if name in keys)})"
            )

    def material(self, name: str, version: int | None = None) -> bytes:
        self._check_role(name)
        version = version or self._data["primary"][name]
        cached = self._cache.get((name, version))
        if cached is not None:
            return cached
        for entry in self._data["keys"].get(name, []):
            if entry["version"] == version:
                material = self._provider.unwrap(base64.b64decode(entry["wrapped"]),
                                                 context=_context(self.lake_id, name, version))
                self._cache[(name, version)] = material
                return material
        raise KeyError_(f"the keyring has no version {version} of the {name!r} key: the file "
                        "was written under a key this keyring never held (restore its backup)")

    def data_key(self, name: str, version: int | None = None) -> DataKey:
        version = version or self._data["primary"][name]
        return DataKey(self.material(name, version), version)

    def secret(self, name: str) -> str:
        """A key as hex text, for engines that take a passphrase (DuckDB's ENCRYPTION_KEY)."""
        return self.material(name).hex()

    # rotation and backup ----------------------------------------------------------------------

    def rotate_data_key(self, name: str) -> int:
        """A new primary version of one data key; files written before keep their version."""
        self._check_role(name)
        version = self._add_version(name)
        self._save()
        return version

    def rewrap(self, new_provider: KekProvider) -> int:
        """Re-wrap every data key under a new KEK; no data file is rewritten. Returns key count."""
        count = 0
        for name, versions in self._data["keys"].items():
            for entry in versions:
                context = _context(self.lake_id, name, entry["version"])
                material = self._provider.unwrap(base64.b64decode(entry["wrapped"]),
                                                 context=context)
                entry["wrapped"] = base64.b64encode(
                    new_provider.wrap(material, context=context)).decode()
                count += 1
        self._data["kek_provider"], self._data["kek_id"] = new_provider.name, new_provider.key_id
        self._provider = new_provider
        self._save()
        return count

    def export(self) -> dict[str, Any]:
        """The wrapped keyring, for a backup (it is useless without the KEK)."""
        return json.loads(json.dumps(self._data))

    @classmethod
    def restore(cls, key_dir: Path, exported: dict[str, Any], provider: KekProvider) -> Keyring:
        ring = cls(Path(key_dir) / KEYRING_FILE, exported, provider, "admin")
        ring.material("lake")  # proves the KEK unwraps this keyring before anything is written
        ring._save()
        return ring
