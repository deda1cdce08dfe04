"""The command line, as an operator uses it: every lake subcommand on a small real load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.cli import main

EDGE = Path(__file__).resolve().parents[1] / "data" / "edge"


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CARELAKE_KEYS__KEY_DIR", str(tmp_path / "keys"))
    folder = tmp_path / "data"
    assert main(["--data-dir", str(folder), "ingest", "--no-progress", str(EDGE / "history.json"),
                 str(EDGE / "bad-records.ndjson")]) == 0
    return folder


def test_query_keys_audit_and_quarantine(data_dir, capsys, tmp_path):
    capsys.readouterr()
    assert main(["--data-dir", str(data_dir), "query",
                 "select count(*) as n from bronze.patient"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", "2"]

    assert main(["--data-dir", str(data_dir), "keys", "show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    # hist-1 and edge-1 loaded; edge-2 and edge-3 only quarantined, keyed so erasure finds them
    assert shown["kek_provider"] == "file" and shown["patients"] == 4
    assert "material" not in json.dumps(shown) and "wrapped" not in json.dumps(shown)

    backup = tmp_path / "backup.json"
    assert main(["--data-dir", str(data_dir), "keys", "backup", "--out", str(backup)]) == 0
    assert oct(backup.stat().st_mode & 0o777) == "0o600"

    assert main(["--data-dir", str(data_dir), "audit", "verify"]) == 0
    assert "hash chain verified" in capsys.readouterr().out

    assert main(["--data-dir", str(data_dir), "quarantine", "list"]) == 0
    listing = capsys.readouterr().out
    assert "6 record(s) waiting, 0 replayed" in listing
    assert "edge-2" not in listing and "Quarantinetestfamily" not in listing


def test_forget_by_source_id_and_errors_without_traceback(data_dir, capsys):
    assert main(["--data-dir", str(data_dir), "forget", "--source-id", "Patient/hist-1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["key_destroyed"] is True and report["rows"]["bronze"] == 2
    assert main(["--data-dir", str(data_dir), "forget", "--source-id", "Patient/hist-1"]) == 1
    assert "no patient with that source id" in capsys.readouterr().err
    assert main(["--data-dir", str(data_dir), "query", "select 1", "--as-of", "yesterday"]) == 1
    assert "not an ISO timestamp" in capsys.readouterr().err
