"""The lake through the encrypted filesystem: pyiceberg writes, DuckDB reads, no plaintext."""

from __future__ import annotations

import json
import stat

import pyarrow as pa
import pytest

from infra.errors import ConfigError, IntegrityError, KeyError_
from infra.lake import Lake
from infra.settings import load_settings


def test_iceberg_roundtrip_through_encrypted_files(make_lake):
    lake = make_lake()
    lake.append("bronze.demo", pa.table({"id": ["a", "b", "c"], "value": [1, 2, 3]}))
    lake.append("bronze.demo", pa.table({"id": ["d"], "value": [4]}))
    assert lake.delete("bronze.demo", "id == 'b'") == 1

    assert sorted(lake.read_arrow("bronze.demo").column("id").to_pylist()) == ["a", "c", "d"]
    duck = lake.duckdb()
    assert duck.sql(f"select count(*), sum(value) from {lake.scan_sql('bronze.demo')}").fetchone() \
        == (3, 8)
    first = lake.table("bronze.demo").metadata.snapshots[1].snapshot_id
    assert duck.sql(f"select count(*) from {lake.scan_sql('bronze.demo', snapshot_id=first)}") \
        .fetchone() == (4,)

    files = [path for path in (lake.data_dir / "warehouse").rglob("*") if path.is_file()]
    assert files and all(path.read_bytes()[:4] == b"CLKE" for path in files)
    assert {path.suffix for path in files} == {".parquet", ".avro", ".json"}


def test_ciphertext_is_checked_on_read(make_lake):
    lake = make_lake()
    lake.fs.pipe_file("ml/blob.bin", b"x" * 100_000)
    local = lake.data_dir / "ml" / "blob.bin"
    damaged = bytearray(local.read_bytes())
    damaged[50_000] ^= 0xFF
    local.write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError, match="ml/blob.bin"):
        lake.fs.verify("ml/blob.bin")


def test_keys_live_outside_the_data_folder_and_are_private(make_lake, tmp_path):
    lake = make_lake()
    assert lake.key_dir.parent == tmp_path / "keys"
    kek = lake.key_dir / "kek.key"
    assert stat.S_IMODE(kek.stat().st_mode) == 0o600
    assert not any(path.name == "kek.key" for path in lake.data_dir.rglob("*"))
    with pytest.raises(ConfigError, match="outside the data folder"):
        load_settings(data_dir=tmp_path, environ={"CARELAKE_KEYS__KEY_DIR": str(tmp_path / "k")})


def test_missing_and_wrong_key_file_are_clear_errors(make_lake):
    lake = make_lake()
    lake.fs.pipe_file("ml/x.bin", b"secret")
    kek = lake.key_dir / "kek.key"
    saved = kek.read_bytes()

    kek.unlink()
    with pytest.raises(KeyError_, match="missing"):
        Lake.open(lake.settings)

    kek.write_bytes(b"\x00" * 32)
    kek.chmod(0o600)
    with pytest.raises(KeyError_, match="wrong key file"):
        Lake.open(lake.settings)

    kek.write_bytes(saved)
    assert Lake.open(lake.settings).fs.cat_file("ml/x.bin") == b"secret"


def test_data_key_rotation_keeps_old_files_readable(make_lake):
    lake = make_lake()
    lake.fs.pipe_file("ml/old.bin", b"before")
    assert lake.keys.rotate_data_key("lake") == 2
    reopened = Lake.open(lake.settings)
    reopened.fs.pipe_file("ml/new.bin", b"after")
    header = (lake.data_dir / "ml" / "new.bin").read_bytes()[:13]
    assert int.from_bytes(header[5:9], "big") == 2
    assert reopened.fs.cat_file("ml/old.bin") == b"before"
    assert reopened.fs.cat_file("ml/new.bin") == b"after"


def test_kek_rotation_rewraps_without_rewriting_data(make_lake):
    from infra.keys_admin import rotate

    lake = make_lake()
    lake.append("bronze.demo", pa.table({"id": ["a"]}))
    before = {path: path.read_bytes() for path in lake.data_dir.rglob("*.parquet")}
    old_kek = (lake.key_dir / "kek.key").read_bytes()
    done = rotate(lake, data_key=None, kek=True)
    assert done["rewrapped_keys"] == 6
    assert (lake.key_dir / "kek.key").read_bytes() != old_kek
    assert {path: path.read_bytes() for path in lake.data_dir.rglob("*.parquet")} == before
    assert Lake.open(lake.settings).read_arrow("bronze.demo").num_rows == 1


def test_roles_limit_the_keys_a_process_unwraps(make_lake):
    lake = make_lake()
    analyst = Lake.open(lake.settings, role="analyst")
    with pytest.raises(KeyError_, match="may not unwrap the 'index' key"):
        analyst.patients.key_for_source("Patient/1")
    with pytest.raises(KeyError_, match="may not read the audit log"):
        analyst.audit.entries()


def test_audit_log_detects_tampering(make_lake):
    lake = make_lake()
    for number in range(4):
        lake.audit.append("load", files=number)
    auditor = Lake.open(lake.settings, role="auditor")
    assert [entry["fields"]["files"] for entry in auditor.audit.entries()] == [0, 1, 2, 3]

    path = lake.audit.path
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[2] + lines[3])
    with pytest.raises(IntegrityError, match="fails authentication|out of order"):
        auditor.audit.entries()

    changed = bytearray(b"".join(lines))
    changed[len(lines[0]) + 10] ^= 0x01
    path.write_bytes(bytes(changed))
    with pytest.raises(IntegrityError):
        auditor.audit.entries()


def test_lake_marker_holds_no_secret(make_lake):
    lake = make_lake()
    record = json.loads((lake.data_dir / "lake.json").read_text())
    assert set(record) == {"format", "lake_id"}
