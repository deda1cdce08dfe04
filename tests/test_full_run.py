"""The main job end to end on the bundled sample: what it writes, and that none of it is readable.

One full ``carelake run`` (every stage) is shared by these tests. The plaintext scan
(``../shared/tools/phi_scan.py``) looks for sentinel values of the sample's patients (names,
identifiers, addresses, phone numbers, note phrases) in every file under the data folder and in
the scratch folders dlt works in; the at-rest check reads every file's header.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.allowlist import DUCKDB_ENCRYPTED, allowed
from infra.scratch import SCRATCH_PREFIX, scratch_root

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
PHI_SCAN = REPO / ".." / "shared" / "tools" / "phi_scan.py"
LOOPBACK = ("127.", "::1", "localhost")


def sample_sentinels() -> list[str]:
    values: list[str] = []
    for line in (SAMPLE / "fhir" / "bulk" / "Patient.000.ndjson").read_text().splitlines():
        patient = json.loads(line)
        values.append(patient["id"])
        for name in patient.get("name", []):
            values += [name["family"], *name.get("given", [])]
        values += [i["value"] for i in patient.get("identifier", [])]
        values += [t["value"] for t in patient.get("telecom", [])]
        for address in patient.get("address", []):
            values += address.get("line", [])
    notes = (SAMPLE / "fhir" / "bulk" / "DocumentReference.000.ndjson").read_text().splitlines()
    for line in notes[:10]:
        text = base64.b64decode(json.loads(line)["content"][0]["attachment"]["data"]).decode()
        phrases = [part.strip() for part in text.splitlines() if len(part.strip()) > 40]
        values += [phrase[:48] for phrase in phrases[1:3]]
    for bundle in sorted((SAMPLE / "fhir" / "bundles").glob("*.json")):
        patient = next(e["resource"] for e in json.loads(bundle.read_text())["entry"]
                       if e["resource"]["resourceType"] == "Patient")
        values += [patient["id"], patient["name"][0]["family"], *patient["address"][0]["line"]]
    # Synthea draws clinicians' names from the same lists as patients' (a practitioner may be
    # "Champlin946" too): a value that also names staff or a place is not a patient's datum.
    staff = b"".join(path.read_bytes() for path in (SAMPLE / "fhir" / "bulk").glob("*.ndjson")
                     if path.name.startswith(("Practitioner", "Organization", "Location")))
    return sorted({value for value in values if len(value) >= 4 and value.encode() not in staff})


def phi_scan(folder: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    sentinels = tmp_path / "sentinels.txt"
    sentinels.write_text("\n".join(sample_sentinels()) + "\n")
    return subprocess.run([sys.executable, str(PHI_SCAN), str(folder), "--sentinels",
                           str(sentinels)], capture_output=True, text=True)


def carelake(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "infra.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """``carelake run`` in this process, with every outbound connection recorded."""
    from infra.cli import main

    root = tmp_path_factory.mktemp("full-run")
    os.environ["CARELAKE_KEYS__KEY_DIR"] = str(root / "keys")
    connections: list[str] = []
    real_connect = socket.socket.connect

    def recording_connect(self, address):
        connections.append(str(address[0] if isinstance(address, tuple) else address))
        return real_connect(self, address)

    socket.socket.connect = recording_connect
    try:
        status = main(["--data-dir", str(root / "data"), "run", "--no-progress"])
    finally:
        socket.socket.connect = real_connect
    return root / "data", status, connections


def test_main_job_writes_a_summary(full_run):
    data_dir, status, _ = full_run
    summary = json.loads((data_dir / "run-summary.json").read_text())
    assert summary["stages"]["ingest"]["status"] == "ok"
    assert summary["stages"]["ingest"]["per_resource_type"]["Patient"]["loaded"] == 7
    assert set(summary["stages"]) == {"ingest", "marts", "nlp", "vision", "drift"}
    for stage in summary["stages"].values():
        assert stage["status"] in {"ok", "not available", "skipped"}
        assert stage["status"] != "not available" or stage["reason"]
    assert status == 0


def test_no_outbound_connection_beyond_loopback(full_run):
    _, _, connections = full_run
    outside = [address for address in connections
               if not address.startswith(LOOPBACK) and not address.startswith("/")]
    assert outside == []


def test_every_file_at_rest_is_ciphertext_or_allow_listed(full_run):
    data_dir, _, _ = full_run
    offenders = []
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(data_dir).as_posix()
        head = path.read_bytes()[:16]
        if head[:4] == b"CLKE" or allowed(relative):
            continue
        if any(Path(relative).match(pattern) for pattern in DUCKDB_ENCRYPTED) and \
                head[8:12] == b"DUCK" and _duckdb_is_encrypted(path):
            continue
        offenders.append(relative)
    assert offenders == []


def _duckdb_is_encrypted(path: Path) -> bool:
    import duckdb

    try:
        duckdb.connect(str(path), read_only=True).close()
    except duckdb.Error as error:
        return "encrypt" in str(error).lower()
    return False


def test_plaintext_scan_finds_no_patient_data(full_run, tmp_path):
    data_dir, _, _ = full_run
    scan = phi_scan(data_dir, tmp_path)
    assert scan.returncode == 0, scan.stdout[-3000:]
    assert "0 findings" in scan.stdout
    assert not list(scratch_root().glob(f"{SCRATCH_PREFIX}{os.getpid()}-*"))


@pytest.mark.slow
def test_a_killed_run_leaves_nothing_readable_and_its_rerun_is_exact(tmp_path):
    env = dict(os.environ, CARELAKE_KEYS__KEY_DIR=str(tmp_path / "keys"), PYTHONPATH=str(REPO))
    data_dir = tmp_path / "data"
    first = carelake("--data-dir", str(data_dir), "run", "--no-progress", "--stages", "ingest",
                     env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (data_dir / "catalog.db").exists():
        time.sleep(0.2)
    time.sleep(3)  # well inside the load
    first.send_signal(signal.SIGKILL)
    first.wait()

    assert phi_scan(data_dir, tmp_path).returncode == 0
    for leftover in scratch_root().glob(f"{SCRATCH_PREFIX}{first.pid}-*"):
        assert phi_scan(leftover, tmp_path).returncode == 0

    rerun = carelake("--data-dir", str(data_dir), "run", "--no-progress", "--stages", "ingest",
                     env=env)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output[-2000:]
    assert not list(scratch_root().glob(f"{SCRATCH_PREFIX}{first.pid}-*"))  # wiped at start
    assert phi_scan(data_dir, tmp_path).returncode == 0

    from infra.lake import Lake
    from infra.settings import load_settings

    os.environ["CARELAKE_KEYS__KEY_DIR"] = env["CARELAKE_KEYS__KEY_DIR"]
    lake = Lake.open(load_settings(data_dir=data_dir))
    counts = {name: lake.count(name) for name in lake.tables("bronze")}
    assert counts["bronze.patient"] == 7
    assert counts["bronze.documentreference"] == 101
    assert counts["bronze.encounter"] == 123
    for name in lake.tables("bronze"):
        ids = lake.read_arrow(name, columns=("id",)).column("id").to_pylist()
        assert len(ids) == len(set(ids)), f"{name} holds a resource twice"


@pytest.mark.slow
def test_two_loads_at_once_do_not_corrupt_the_catalog(tmp_path):
    env = dict(os.environ, CARELAKE_KEYS__KEY_DIR=str(tmp_path / "keys"), PYTHONPATH=str(REPO))
    data_dir = tmp_path / "data"
    setup = carelake("--data-dir", str(data_dir), "run", "--no-progress", "--stages", "ingest",
                     str(SAMPLE / "fhir" / "bundles" / "bundle-01.json"), env=env)
    assert setup.wait(timeout=600) == 0
    loads = [carelake("--data-dir", str(data_dir), "run", "--no-progress", "--stages", "ingest",
                      str(source), env=env)
             for source in (SAMPLE / "fhir" / "bulk", SAMPLE / "fhir" / "bundles")]
    outputs = [load.communicate(timeout=600)[0] for load in loads]
    assert [load.returncode for load in loads] == [0, 0], [o[-1500:] for o in outputs]

    from infra.lake import Lake
    from infra.settings import load_settings

    os.environ["CARELAKE_KEYS__KEY_DIR"] = env["CARELAKE_KEYS__KEY_DIR"]
    lake = Lake.open(load_settings(data_dir=data_dir))
    assert lake.count("bronze.patient") == 7
    assert lake.count("bronze.encounter") == 123
    assert lake.count("bronze.organization") == lake.read_arrow(
        "bronze.organization").num_rows
