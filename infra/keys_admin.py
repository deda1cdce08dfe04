"""Key backup, recovery and rotation.

A backup holds the keyring (data keys wrapped by the KEK) and the patient vault (patients' keys
wrapped by the vault key): useless without the KEK, which is kept separately (the key file, or the
HSM). Restoring skips every patient erased since the backup was taken (the audit log's erasure
records), so a restore never brings an erased patient back.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

from infra.errors import ConfigError
from infra.keys.file_provider import KEK_FILE, FileKekProvider
from infra.keys.keyring import Keyring

BACKUP_FORMAT = 1


def backup(lake, out: Path) -> int:
    document = {"format": BACKUP_FORMAT, "lake_id": lake.lake_id,
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "keyring": lake.keys.export(), "patients": lake.patients.export_rows()}
    descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(document, handle, indent=1)
    lake.audit.append("key-backup", patients=len(document["patients"]))
    return sum(len(v) for v in document["keyring"]["keys"].values()) + len(document["patients"])


def restore(settings, source: Path) -> None:
    from infra.lake import Lake, _kek_provider

    document = json.loads(Path(source).read_text())
    if document.get("format") != BACKUP_FORMAT:
        raise ConfigError(f"{source} is not a carelake key backup "
                          f"(format {document.get('format')})")
    lake_id = document["lake_id"]
    marker = settings.data_dir / "lake.json"
    if marker.exists() and json.loads(marker.read_text())["lake_id"] != lake_id:
        raise ConfigError(f"{source} holds the keys of another lake than {settings.data_dir}")
    key_dir = settings.key_dir / lake_id
    provider = _kek_provider(settings, key_dir, create=False)
    Keyring.restore(key_dir, document["keyring"], provider)
    lake = Lake.open(settings, role="admin", create=False)
    erased = {entry["fields"]["patient_key"] for entry in lake.audit.entries()
              if entry["event"] == "erasure"}
    restored, skipped = lake.patients.import_rows(document["patients"], erased=erased)
    lake.audit.append("key-restore", patients_restored=restored, erased_skipped=skipped)


def rotate(lake, *, data_key: str | None, kek: bool) -> dict[str, Any]:
    done: dict[str, Any] = {}
    if data_key:
        done["data_key"] = {data_key: lake.keys.rotate_data_key(data_key)}
    if kek:
        if lake.settings.get("keys.provider") != "file":
            raise ConfigError("--kek rotates a key file; on a PKCS#11 token create a new key "
                              "there (carelake pkcs11-key create) and re-wrap with it")
        current = lake.key_dir / KEK_FILE
        staged = lake.key_dir / (KEK_FILE + ".new")
        staged.unlink(missing_ok=True)
        new_provider = FileKekProvider(staged, create=True)
        done["rewrapped_keys"] = lake.keys.rewrap(new_provider)
        shutil.move(current, lake.key_dir / (KEK_FILE + ".retired"))
        shutil.move(staged, current)
        done["kek_id"] = new_provider.key_id
    if not done:
        raise ConfigError("say what to rotate: --data-key NAME or --kek")
    lake.audit.append("key-rotation", **{k: v for k, v in done.items()})
    return done


def describe(lake) -> dict[str, Any]:
    exported = lake.keys.export()
    return {"lake_id": lake.lake_id, "kek_provider": exported["kek_provider"],
            "kek_id": exported["kek_id"], "primary": exported["primary"],
            "versions": {name: [v["version"] for v in versions]
                         for name, versions in exported["keys"].items()},
            "patients": len(lake.patients.pseudonyms())}
