"""Import, stage, erasure and mart on a real lake with the real test images.

Scores come from TorchXRayVision's DenseNet-121 with random values (see vision_helpers): these
tests check shapes, counts and provenance, never what a finding says.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jinja2
import numpy as np
import pydicom
import pytest
from vision_helpers import MODEL_ID, REPO_ROOT, TWIN_M1, TWIN_M2, WEIGHTS_FILE, synthetic_dicom

from dlt_pipelines.fhir.pipeline import ingest
from infra.forget_registry import load_erasers
from infra.lake import Lake
from infra.settings import load_settings
from infra.stages import StageContext, run_stage
from ml_pipelines.vision import tables
from ml_pipelines.vision.attachments import NO_FILE, URL_ONLY, import_from_lake
from ml_pipelines.vision.erase import erase_patient
from ml_pipelines.vision.image_import import import_folder
from ml_pipelines.vision.scoring import score_lake
from ml_pipelines.vision.weights import load_model, model_spec

RASTER_FILES = [
    "00000001_000.png", "00027426_000.png", "16747_3_1.jpg", "covid-19-pneumonia-58-prior.jpg",
    "tbx11k_test_data/imgs/health/h0001.png", "tbx11k_test_data/imgs/tb/tb0005.png",
    "tbx11k_test_data/imgs/tb/tb0007.png",
]
# the anonymised Patient ID in the header of both public SIIM DICOM files
SIIM_PATIENT = "Patient/16d7f894-55d7-4d95-8957-d18987f0e981"
# the ImagingStudy of the smallest public Synthea bundle that has one
SYNTHEA_STUDY = "732b41dc-f547-450c-b74b-d8c73995c040"
SYNTHEA_STUDY_UID = "1.2.840.99999999.78237238.1559319187266"
SYNTHEA_SERIES_UID = "1.2.840.99999999.1.54829113.1559319187266"
SYNTHEA_INSTANCE_UID = "1.2.840.99999999.1.1.32941007.1559319187266"
DICOM_CODES = "http://dicom.nema.org/resources/ontology/DCM"
MART_SQL = REPO_ROOT / "dbt_project" / "models" / "marts" / "imaging" / "imaging_findings.sql"


def _settings(tmp_path: Path, **vision: str):
    environ = {"CARELAKE_KEYS__KEY_DIR": str(tmp_path / "keys")}
    environ.update({f"CARELAKE_VISION__{key.upper()}": value for key, value in vision.items()})
    return load_settings(data_dir=tmp_path / "data", environ=environ)


def _synthetic_bundle(xray_images: Path) -> dict:
    """Two synthetic patients, a Media with an inline PNG, one by url only, and a PDF report."""
    png = base64.b64encode((xray_images / "00000001_000.png").read_bytes()).decode()
    raster = {"reference": "Patient/raster-1"}
    resources = [
        {"resourceType": "Patient", "id": "raster-1", "gender": "female"},
        {"resourceType": "Patient", "id": SIIM_PATIENT.split("/")[1], "gender": "male"},
        {"resourceType": "Media", "id": "xr-inline", "status": "completed", "subject": raster,
         "modality": {"coding": [{"system": DICOM_CODES, "code": "DX"}]},
         "content": {"contentType": "image/png", "data": png}},
        {"resourceType": "Media", "id": "xr-by-url", "status": "completed", "subject": raster,
         "content": {"contentType": "image/jpeg", "url": "Binary/xr-by-url"}},
        {"resourceType": "DiagnosticReport", "id": "report-pdf", "status": "final",
         "code": {"text": "report"}, "subject": raster,
         "presentedForm": [{"contentType": "application/pdf", "data": "JVBERi0xLjQK"}]},
    ]
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"{item['resourceType']}/{item['id']}", "resource": item}
                      for item in resources]}


def _imaging_study_bundle(shared_data: Path) -> Path:
    # the smallest of the public Synthea bundles that holds an ImagingStudy
    folder = shared_data / "synthea-r4-bundles-smart" / "bundles"
    with_study = [path for path in folder.glob("*.json") if '"ImagingStudy"' in path.read_text()]
    return min(with_study, key=lambda path: (path.stat().st_size, path.name))


@pytest.fixture(scope="session")
def template_lake(tmp_path_factory, shared_data, xray_images) -> Path:
    """A lake holding the ingested bundles; each test works on its own copy."""
    root = tmp_path_factory.mktemp("vision-template")
    bundle = root / "synthetic.json"
    bundle.write_text(json.dumps(_synthetic_bundle(xray_images)))
    ingest(Lake.open(_settings(root)), [_imaging_study_bundle(shared_data), bundle], workers=1)
    return root


@pytest.fixture
def lake(tmp_path, template_lake):
    for folder in ("data", "keys"):
        shutil.copytree(template_lake / folder, tmp_path / folder)
    return Lake.open(_settings(tmp_path))


@pytest.fixture
def patients(lake):
    def key(reference: str) -> str:
        return lake.patients.key_for_source(reference, create=False).pseudonym

    return {"raster": key("Patient/raster-1"), "siim": key(SIIM_PATIENT)}


def _manifest(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "patient", "modality"])
        writer.writerows(rows)
    return path


def _import_real_images(lake, xray_images: Path, tmp_path: Path):
    manifest = _manifest(tmp_path / "manifest.csv",
                         [(name, "Patient/raster-1", "") for name in RASTER_FILES])
    return import_folder(lake, xray_images, manifest=manifest)


def _on_disk(lake, relative: str) -> bytes:
    return (Path(lake.data_dir) / relative).read_bytes()


def test_import_links_patients_and_stores_ciphertext(lake, patients, xray_images, tmp_path):
    report = _import_real_images(lake, xray_images, tmp_path)
    images = {row["sha256"]: row for row in lake.read_arrow(tables.IMAGES_TABLE).to_pylist()}

    assert (report.files, report.imported, report.not_images, report.unlinked) == (11, 9, 2, 0)
    assert report.linked_by == {"manifest": 7, "dicom_patient_id": 2}
    assert sorted(row["patient_key"] for row in images.values()) == sorted(
        [patients["raster"]] * 7 + [patients["siim"]] * 2
    )
    dicoms = [row for row in images.values() if row["content_type"] == "application/dicom"]
    header = pydicom.dcmread(xray_images / TWIN_M2)
    assert [(row["modality"], row["body_part"], row["view_position"]) for row in dicoms] == [
        ("CR", "CHEST", "PA")] * 2
    assert {row["sop_instance_uid"] for row in dicoms} == {header.SOPInstanceUID}
    assert {row["study_instance_uid"] for row in dicoms} == {header.StudyInstanceUID}

    for sha256, row in images.items():
        plain = lake.fs.open(row["storage_path"], "rb").read()
        stored = _on_disk(lake, row["storage_path"])
        assert hashlib.sha256(plain).hexdigest() == sha256
        assert row["storage_path"] == f"ml/images/{sha256}.{tables.EXTENSIONS[row['content_type']]}"
        assert stored[:4] == b"CLKE"
        assert plain[:16] not in stored and plain[-64:] not in stored
    stripped = pydicom.dcmread(io.BytesIO(lake.fs.open(dicoms[0]["storage_path"], "rb").read()))
    assert "PatientName" not in stripped and "PatientID" not in stripped
    assert stripped.SOPInstanceUID == header.SOPInstanceUID

    again = _import_real_images(lake, xray_images, tmp_path)
    assert (again.imported, again.already_present) == (0, 9)
    assert len(lake.read_arrow(tables.IMAGES_TABLE)) == 9


def test_files_without_a_patient_are_not_imported(lake, xray_images, tmp_path):
    folder = tmp_path / "unlinked"
    folder.mkdir()
    shutil.copy(xray_images / "00000001_000.png", folder / "a.png")
    (folder / "b.dcm").write_bytes(synthetic_dicom(np.zeros((8, 8), dtype=np.uint8)))
    (folder / "c.dcm").write_bytes((xray_images / TWIN_M2).read_bytes()[:200])
    manifest = _manifest(tmp_path / "manifest.csv", [("a.png", "Patient/never-ingested", ""),
                                                     ("c.dcm", SIIM_PATIENT, "")])

    report = import_folder(lake, folder, manifest=manifest)

    assert (report.files, report.imported, report.unlinked, report.not_images) == (3, 0, 2, 1)
    assert not lake.has_table(tables.IMAGES_TABLE)
    assert not lake.fs.exists("ml/images")


def test_dicom_links_through_an_ingested_imaging_study(lake, shared_data, tmp_path, weights_dir):
    synthea = json.loads(_imaging_study_bundle(shared_data).read_text())
    patient_id = next(entry["resource"]["id"] for entry in synthea["entry"]
                      if entry["resource"]["resourceType"] == "Patient")
    folder = tmp_path / "study"
    folder.mkdir()
    # a synthetic image with the series UID of the public bundle's ImagingStudy, and neither a
    # study UID nor a body part of its own: the study supplies both
    (folder / "x.dcm").write_bytes(synthetic_dicom(
        np.full((16, 16), 7, dtype=np.uint8), body_part="", StudyInstanceUID="",
        SeriesInstanceUID=SYNTHEA_SERIES_UID))

    report = import_folder(lake, folder)
    row = lake.read_arrow(tables.IMAGES_TABLE).to_pylist()[0]
    scored = score_lake(lake, load_model(MODEL_ID, cache_dir=weights_dir))

    assert report.linked_by == {"imaging_study": 1}
    assert row["patient_key"] == lake.patients.key_for_source(
        f"Patient/{patient_id}", create=False).pseudonym
    assert row["study_instance_uid"] == SYNTHEA_STUDY_UID
    assert (row["modality"], row["body_part"]) == ("DX", "WRIST")
    assert scored.skip_reasons == {"body part WRIST is not the chest": 1}


def test_fhir_images_are_listed_and_scored(lake, patients, xray_images, weights_dir):
    report = import_from_lake(lake)
    rows = sorted(lake.read_arrow(tables.IMAGES_TABLE).to_pylist(), key=lambda row: row["source"])
    again = import_from_lake(lake)
    scored = score_lake(lake, load_model(MODEL_ID, cache_dir=weights_dir))

    assert (report.files, report.imported, report.not_images) == (3, 3, 0)
    assert report.linked_by == {"media": 2, "imagingstudy": 1}
    assert [row["source"] for row in rows] == [
        f"fhir:ImagingStudy/{SYNTHEA_STUDY}", "fhir:Media/xr-by-url#0", "fhir:Media/xr-inline#0"]
    listed, by_url, inline = rows
    assert {key: listed[key] for key in ("study_instance_uid", "series_instance_uid",
                                         "sop_instance_uid", "modality", "body_part",
                                         "storage_path", "missing_reason")} == {
        "study_instance_uid": SYNTHEA_STUDY_UID, "series_instance_uid": SYNTHEA_SERIES_UID,
        "sop_instance_uid": SYNTHEA_INSTANCE_UID, "modality": "DX", "body_part": "WRIST",
        "storage_path": None, "missing_reason": NO_FILE}
    assert (by_url["storage_path"], by_url["sha256"], by_url["missing_reason"]) == (
        None, None, URL_ONLY)
    original = (xray_images / "00000001_000.png").read_bytes()
    assert lake.fs.open(inline["storage_path"], "rb").read() == original
    assert inline["sha256"] == hashlib.sha256(original).hexdigest()
    assert (inline["modality"], inline["content_type"]) == ("DX", "image/png")
    assert {by_url["patient_key"], inline["patient_key"]} == {patients["raster"]}
    assert (again.imported, again.already_present) == (0, 3)
    assert (scored.scored, scored.skipped, scored.findings) == (1, 2, 20)
    # the listed wrist instance says why it would not be scored even with its file
    assert scored.skip_reasons == {URL_ONLY: 1, "body part WRIST is not the chest": 1}


def test_mart_shows_the_imported_file_instead_of_its_listing(lake, tmp_path, weights_dir):
    import_from_lake(lake)
    folder = tmp_path / "instance"
    folder.mkdir()
    (folder / "x.dcm").write_bytes(synthetic_dicom(
        np.full((16, 16), 9, dtype=np.uint8), body_part="", StudyInstanceUID="",
        SeriesInstanceUID=SYNTHEA_SERIES_UID, SOPInstanceUID=SYNTHEA_INSTANCE_UID))
    import_folder(lake, folder)
    score_lake(lake, load_model(MODEL_ID, cache_dir=weights_dir))
    file_row = next(row for row in lake.read_arrow(tables.IMAGES_TABLE).to_pylist()
                    if row["storage_path"] and row["sop_instance_uid"] == SYNTHEA_INSTANCE_UID)

    connection = lake.duckdb()
    mart = connection.sql(_render_mart(lake))
    shown = connection.sql(
        f"select image_id, status, reason from mart "
        f"where sop_instance_uid = '{SYNTHEA_INSTANCE_UID}'").fetchall()

    assert len(lake.read_arrow(tables.IMAGES_TABLE)) == 4
    assert mart.columns[0] == "image_id"
    assert shown == [(file_row["image_id"], "skipped", "body part WRIST is not the chest")]


def test_scoring_writes_findings_with_provenance(lake, patients, xray_images, tmp_path,
                                                 weights_dir):
    _import_real_images(lake, xray_images, tmp_path)
    ct_folder = tmp_path / "ct"
    ct_folder.mkdir()
    stored = np.random.default_rng(0).integers(0, 4096, size=(32, 32), dtype=np.uint16)
    (ct_folder / "slice.dcm").write_bytes(synthetic_dicom(stored, modality="CT", bits_stored=12))
    import_folder(lake, ct_folder,
                  manifest=_manifest(tmp_path / "ct.csv", [("slice.dcm", SIIM_PATIENT, "")]))
    model = load_model(MODEL_ID, cache_dir=weights_dir)
    spec = model_spec(MODEL_ID)

    report = score_lake(lake, model, batch_size=4)
    rows = lake.read_arrow(tables.FINDINGS_TABLE).to_pylist()

    expected_sha = hashlib.sha256((weights_dir / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert (report.images, report.scored, report.skipped, report.findings) == (10, 9, 1, 163)
    assert report.skip_reasons == {"modality CT is not a projection radiograph (CR or DX)": 1}
    assert len(rows) == 163
    assert {row["weights_sha256"] for row in rows} == {expected_sha}
    assert {row["model_id"] for row in rows} == {MODEL_ID}
    assert {row["run_id"] for row in rows} == {report.run_id}
    scored = [row for row in rows if row["status"] == "scored"]
    by_image: dict[str, list[dict]] = {}
    for row in scored:
        by_image.setdefault(row["image_id"], []).append(row)
    assert len(by_image) == 9
    for image_rows in by_image.values():
        assert [row["pathology"] for row in image_rows] == list(spec.labels)
        assert [row["threshold"] for row in image_rows] == list(spec.thresholds)
        assert all(0.0 <= row["probability"] <= 1.0 for row in image_rows)
        assert all(row["is_above_threshold"] == (row["probability"] >= row["threshold"])
                   for row in image_rows)
    skipped = [row for row in rows if row["status"] == "skipped"]
    assert [(row["reason"], row["pathology"], row["probability"]) for row in skipped] == [
        ("modality CT is not a projection radiograph (CR or DX)", None, None)]
    assert skipped[0]["patient_key"] == patients["siim"]

    again = score_lake(lake, model)
    assert (again.images, again.already_scored, again.findings) == (0, 10, 0)


def test_erasure_removes_the_patients_rows_and_files(lake, patients, xray_images, tmp_path,
                                                     weights_dir):
    _import_real_images(lake, xray_images, tmp_path)
    score_lake(lake, load_model(MODEL_ID, cache_dir=weights_dir), batch_size=8)
    siim_paths = [row["storage_path"] for row in lake.read_arrow(tables.IMAGES_TABLE).to_pylist()
                  if row["patient_key"] == patients["siim"]]

    deleted = load_erasers()["vision"](lake, patients["siim"])

    assert deleted == 2 + 2 * 18
    assert {row["patient_key"] for row in lake.read_arrow(tables.IMAGES_TABLE).to_pylist()} == {
        patients["raster"]}
    assert len(lake.read_arrow(tables.FINDINGS_TABLE)) == 7 * 18
    assert [lake.fs.exists(path) for path in siim_paths] == [False, False]
    assert erase_patient(lake, patients["siim"]) == 0
    assert load_erasers()["vision"] is erase_patient


def _render_mart(lake) -> str:
    template = jinja2.Template(MART_SQL.read_text())
    return template.render(source=lambda schema, table: lake.scan_sql(f"{schema}.{table}"))


def test_mart_keeps_a_reason_for_every_image_without_a_result(lake, patients, xray_images,
                                                              tmp_path, weights_dir):
    _import_real_images(lake, xray_images, tmp_path)
    score_lake(lake, load_model(MODEL_ID, cache_dir=weights_dir), batch_size=8)
    late = tmp_path / "late"
    late.mkdir()
    (late / "lateral.dcm").write_bytes(synthetic_dicom(
        np.zeros((16, 16), dtype=np.uint8), modality="DX", view="LL"))
    (late / "never.dcm").write_bytes(synthetic_dicom(np.ones((16, 16), dtype=np.uint8)))
    both = [("lateral.dcm", SIIM_PATIENT, ""), ("never.dcm", SIIM_PATIENT, "")]
    import_folder(lake, late, manifest=_manifest(tmp_path / "late.csv", both))
    score_lake(lake, load_model(MODEL_ID, cache_dir=weights_dir), batch_size=8)
    import_folder(lake, late, manifest=_manifest(
        tmp_path / "later.csv", [("never.dcm", "Patient/raster-1", "")]))

    connection = lake.duckdb()
    mart = connection.sql(_render_mart(lake))
    counts = dict(connection.sql(
        "select status, count(*) from mart group by status order by status").fetchall())
    reasons = connection.sql(
        "select status, reason from mart where not coalesce(has_result, false) order by status"
    ).fetchall()

    assert mart.columns[:2] == ["image_id", "patient_key"]
    assert counts == {"not scored": 1, "scored": 10 * 18, "skipped": 1}
    assert reasons == [
        ("not scored", "not scored yet: the vision stage has not run with weights in place"),
        ("skipped", "view LL is lateral; the models score frontal (PA or AP) views"),
    ]


def _run_stage_in_a_fresh_process(tmp_path: Path, cache_dir: Path) -> dict:
    # ZenML binds its store to one folder per process, so the stage runs in its own process
    script = f"""
import json, socket, torch
torch.set_num_threads(1)
def refuse(*args, **kwargs):
    raise OSError("network blocked by the test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
from dlt_pipelines.fhir.pipeline import ingest
from infra.forget_registry import load_erasers
from infra.lake import Lake
from infra.settings import load_settings
from infra.stages import StageContext, run_stage
settings = load_settings(data_dir={str(tmp_path / 'data')!r}, environ={{
    "CARELAKE_KEYS__KEY_DIR": {str(tmp_path / 'keys')!r},
    "CARELAKE_VISION__CACHE_DIR": {str(cache_dir)!r}}})
lake = Lake.open(settings)
result = run_stage("vision", "ml_pipelines.vision.stage:run",
                   StageContext(settings=settings, lake=lake, sources=[]))
print("RESULT " + json.dumps(result.as_json()))
"""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=environment,
                               capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_stage_without_weights_is_not_available_and_writes_nothing(lake, patients, xray_images,
                                                                   tmp_path, monkeypatch):
    _import_real_images(lake, xray_images, tmp_path)
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    settings = _settings(tmp_path, cache_dir=str(empty))

    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    result = run_stage("vision", "ml_pipelines.vision.stage:run",
                       StageContext(settings=settings, lake=lake, sources=[]))

    assert result.status == "not available"
    assert result.reason == f"weights not available: put {WEIGHTS_FILE} in {empty}"
    assert not lake.has_table(tables.FINDINGS_TABLE)
    assert list(empty.iterdir()) == []


def test_stage_scores_through_the_zenml_pipeline(lake, patients, xray_images, tmp_path,
                                                 weights_dir):
    # the inline PNG of the Media is the very file the manifest gives the same patient: it is
    # listed once; the Media known by url only and the ImagingStudy's instance are listed and
    # skipped with their reasons
    folder = tmp_path / "two"
    folder.mkdir()
    shutil.copy(xray_images / "00000001_000.png", folder / "a.png")
    shutil.copy(xray_images / TWIN_M2, folder / "b.dcm")
    import_folder(lake, folder, manifest=_manifest(tmp_path / "two.csv",
                                                   [("a.png", "Patient/raster-1", "")]))

    record = _run_stage_in_a_fresh_process(tmp_path, weights_dir)

    expected_sha = hashlib.sha256((weights_dir / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert record["status"] == "ok"
    assert {key: record[key] for key in ("images", "scored", "skipped", "findings",
                                         "model_id", "weights_sha256", "attachments_listed")} == {
        "images": 4, "scored": 2, "skipped": 2, "findings": 2 * 18 + 2, "model_id": MODEL_ID,
        "weights_sha256": expected_sha, "attachments_listed": 2}
    findings = Lake.open(_settings(tmp_path)).read_arrow(tables.FINDINGS_TABLE)
    assert findings.num_rows == 2 * 18 + 2
    assert set(findings.column("run_id").to_pylist()) == {record["run_id"]}
