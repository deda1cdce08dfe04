"""Make N-times larger FHIR data from real Synthea records, streaming, for benchmarks and tests.

``scale(inputs, output, factor=N)`` reads transaction bundles (``*.json``, one file each) and Bulk
Data NDJSON (``*.ndjson``, one resource a line), either of them gzipped or not, and writes N
copies of them, uncompressed. Copy k of N has new
ids, names, identifier values and dates (see ``scaler_rewrite``), every reference rewritten to
match, and decimals exactly as written (``0.700`` stays ``0.700``). Optional shifts change the
copies on purpose, for drift tests: ``{"age_years": 10}`` makes every patient ten years older, and
``{"new_condition": {...}}`` adds a Condition to a given fraction of patients.

It holds one bundle or one NDJSON line at a time and writes as it goes: bundles to
``OUTPUT/bundles/<copy>-<n>.json``, NDJSON to ``OUTPUT/ndjson/<Type>.<copy>.ndjson``. The output is
synthetic input data, not the lake, so it is plain JSON.
"""

from __future__ import annotations

import concurrent.futures
import decimal
import gzip
import logging
import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from dlt_pipelines.fhir.scaler_rewrite import (
    Context,
    CopyRewriter,
    PersonNames,
    patient_reference_id,
    shift_date,
)
from dlt_pipelines.fhir.scaler_shifts import (
    Shifts,
    Systematic,
    condition_entry,
    make_older,
    new_condition,
    pick_encounter,
)
from infra.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

DECODER = msgspec.json.Decoder(float_hook=decimal.Decimal)
ENCODER = msgspec.json.Encoder(decimal_format="number")
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "sample" / "fhir"


@dataclass
class ScaleReport:
    """What a run made. ``resources_in`` counts one copy's input; the rest sum over all copies."""

    factor: int
    seed: int
    output: Path
    bundles_in: int = 0
    ndjson_files_in: int = 0
    skipped_files: int = 0
    bytes_in: int = 0
    resources_in: dict[str, int] = field(default_factory=dict)
    bundles_out: int = 0
    files_out: int = 0
    bytes_out: int = 0
    resources_out: dict[str, int] = field(default_factory=dict)
    notes_rewritten: int = 0
    attachments_kept: int = 0
    conditions_added: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        record = {name: getattr(self, name) for name in self.__dataclass_fields__}
        record["output"] = str(self.output)
        record["seconds"] = round(self.seconds, 3)
        return record


@dataclass
class _CopyResult:
    copy: int
    resources_in: Counter[str] = field(default_factory=Counter)
    resources_out: Counter[str] = field(default_factory=Counter)
    bundles_out: int = 0
    files_out: int = 0
    bytes_out: int = 0
    notes_rewritten: int = 0
    attachments_kept: int = 0
    conditions_added: int = 0


@dataclass(frozen=True)
class _Job:
    bundles: tuple[Path, ...]
    ndjson: tuple[Path, ...]
    output: Path
    seed: int
    shifts: Shifts
    names: dict[str, PersonNames]


def sample_inputs() -> list[Path]:
    """The bundled Synthea sample (``data/sample/fhir``: bundles and Bulk NDJSON), the default."""
    if not SAMPLE_DIR.is_dir():
        raise InputError(
            f"the bundled sample is not at {SAMPLE_DIR}: give the bundles or NDJSON files to scale"
        )
    return [SAMPLE_DIR]


def scale(
    inputs: list[Path], output: Path, *, factor: int, seed: int = 0,
    shifts: dict[str, Any] | None = None, workers: int = 1,
) -> ScaleReport:
    """Write ``factor`` rewritten copies of ``inputs`` under ``output``; see the module docstring.

    ``workers`` > 1 makes copies in that many processes; the bytes written are the same.
    """
    started = time.perf_counter()
    if not isinstance(factor, int) or factor < 1:
        raise ConfigError(f"factor must be a whole number >= 1, not {factor!r}")
    parsed = Shifts.parse(shifts)
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"output folder {output} is not empty: give a new or empty folder")

    bundles, ndjson, skipped = _discover([Path(path) for path in inputs])
    names = _patient_names(ndjson)
    (output / "bundles").mkdir(parents=True, exist_ok=True)
    (output / "ndjson").mkdir(parents=True, exist_ok=True)
    job = _Job(tuple(bundles), tuple(ndjson), output, seed, parsed, names)

    results: list[_CopyResult] = []
    if workers > 1 and factor > 1:
        context = multiprocessing.get_context("spawn")
        processes = min(workers, factor)
        with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
            results = list(pool.map(_make_copy, [job] * factor, range(factor)))
    else:
        results = [_make_copy(job, copy) for copy in range(factor)]

    report = ScaleReport(factor=factor, seed=seed, output=output, skipped_files=skipped)
    report.bundles_in, report.ndjson_files_in = len(bundles), len(ndjson)
    report.bytes_in = sum(path.stat().st_size for path in (*bundles, *ndjson))
    report.resources_in = dict(sorted(results[0].resources_in.items()))
    out: Counter[str] = Counter()
    for result in results:
        out.update(result.resources_out)
        report.bundles_out += result.bundles_out
        report.files_out += result.files_out
        report.bytes_out += result.bytes_out
        report.notes_rewritten += result.notes_rewritten
        report.attachments_kept += result.attachments_kept
        report.conditions_added += result.conditions_added
    report.resources_out = dict(sorted(out.items()))
    report.seconds = time.perf_counter() - started
    logger.info(
        "scaled %d bundle(s) and %d NDJSON file(s) x%d: %d resources, %.1f MB written in %.1f s",
        len(bundles), len(ndjson), factor, sum(out.values()), report.bytes_out / 1e6,
        report.seconds,
    )
    return report


def _discover(inputs: list[Path]) -> tuple[list[Path], list[Path], int]:
    bundles: list[Path] = []
    ndjson: list[Path] = []
    skipped = 0
    for number, path in enumerate(inputs, start=1):
        if path.is_dir():
            files = sorted(file for file in path.rglob("*") if file.is_file())
            files = [file for file in files if _kind(file)]
        elif path.is_file():
            if not _kind(path):
                raise InputError(
                    f"input #{number} is neither a bundle (.json) nor NDJSON (.ndjson), "
                    "gzipped or not: give bundles, NDJSON files or folders of them"
                )
            files = [path]
        else:
            raise InputError(f"input #{number} does not exist: check the paths given to the scaler")
        for file in files:
            if _kind(file) == "bundle":
                bundles.append(file)
            elif _holds_fhir(file):
                ndjson.append(file)
            else:
                skipped += 1
    if not bundles and not ndjson:
        raise InputError("the inputs hold no bundles (.json) and no NDJSON (.ndjson) to scale")
    if skipped:
        logger.info("skipped %d NDJSON file(s) with no FHIR resource (an export log)", skipped)
    return bundles, ndjson, skipped


def _kind(path: Path) -> str | None:
    name = path.name.removesuffix(".gz")
    if name.endswith(".json"):
        return "bundle"
    return "ndjson" if name.endswith(".ndjson") else None


def _open(path: Path) -> BinaryIO:
    """The file's bytes, gunzipped on the fly for ``.gz`` (Bulk Data exports often are)."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _holds_fhir(path: Path) -> bool:
    """False for NDJSON that is not FHIR, such as a Bulk Data export's ``log.ndjson``."""
    with _open(path) as source:
        for line in source:
            if line.strip():
                try:
                    record = DECODER.decode(line)
                except msgspec.DecodeError:
                    return True  # it fails later with the line number
                return isinstance(record, dict) and "resourceType" in record
    return False


class _Head(msgspec.Struct):
    resourceType: str = ""  # noqa: N815 - FHIR's name
    id: str = ""


_HEAD_DECODER = msgspec.json.Decoder(_Head)


def _patient_names(ndjson: list[Path]) -> dict[str, PersonNames]:
    """Name parts of every Patient in the NDJSON inputs, to rewrite them inside notes."""
    names: dict[str, PersonNames] = {}
    for path in ndjson:
        with _open(path) as source:
            for line in source:
                if b'"Patient"' not in line:
                    continue
                try:
                    head = _HEAD_DECODER.decode(line)
                except msgspec.DecodeError:
                    continue  # reported with its line number when the copies are made
                if head.resourceType == "Patient" and head.id:
                    names[head.id] = PersonNames.of(DECODER.decode(line))
    return names


def _make_copy(job: _Job, copy: int) -> _CopyResult:
    rewriter = CopyRewriter(seed=job.seed, copy=copy)
    result = _CopyResult(copy=copy)
    spec = job.shifts.new_condition
    selector = Systematic(spec.rate, rewriter.fraction("new-condition-phase")) if spec else None

    for index, path in enumerate(job.bundles):
        with _open(path) as source:
            raw = source.read()
        body = _scale_bundle(raw, rewriter, job.shifts, selector, result, number=index + 1)
        target = job.output / "bundles" / f"{copy:03d}-{index:05d}.json"
        target.write_bytes(body)
        result.bundles_out += 1
        result.files_out += 1
        result.bytes_out += len(body)

    writer = _TypeWriter(job.output / "ndjson", copy)
    try:
        _scale_ndjson(job, rewriter, selector, writer, result)
    finally:
        writer.close()
    result.files_out += len(writer.files)
    result.bytes_out += writer.bytes
    result.notes_rewritten = rewriter.counters.notes_rewritten
    result.attachments_kept = rewriter.counters.attachments_kept
    logger.info(
        "copy %d: %d resources in %d bundle(s) and %d NDJSON file(s), %d note(s) rewritten",
        copy, sum(result.resources_out.values()), result.bundles_out, len(writer.files),
        result.notes_rewritten,
    )
    return result


def _scale_bundle(
    raw: bytes, rewriter: CopyRewriter, shifts: Shifts, selector: Systematic | None,
    result: _CopyResult, *, number: int,
) -> bytes:
    try:
        bundle = DECODER.decode(raw)
    except msgspec.DecodeError:
        raise InputError(f"bundle input #{number} is not valid JSON: fix or remove it") from None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InputError(f"bundle input #{number} is not a FHIR Bundle: give bundles or NDJSON")
    entries = [entry for entry in bundle.get("entry") or [] if isinstance(entry, dict)]

    url_types: dict[str, str] = {}
    patient_urls: dict[str, str] = {}
    names: dict[str, PersonNames] = {}
    for entry in entries:
        resource = entry.get("resource")
        full_url = entry.get("fullUrl")
        if not isinstance(resource, dict):
            continue
        resource_type = str(resource.get("resourceType"))
        if isinstance(full_url, str):
            url_types[full_url] = url_types[rewriter.reference(full_url)] = resource_type
        if resource_type == "Patient" and isinstance(resource.get("id"), str):
            if isinstance(full_url, str):
                patient_urls[full_url] = resource["id"]
            names[resource["id"]] = PersonNames.of(resource)

    encounters: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        resource = entry.get("resource")
        if isinstance(resource, dict):
            resource_type = str(resource.get("resourceType"))
            result.resources_in[resource_type] += 1
            patient = patient_reference_id(resource, patient_urls)
            context = Context(rewriter.day_offset(patient), names.get(patient or ""), url_types)
            rewriter.resource(resource, context)
            make_older(resource, shifts)
            result.resources_out[resource_type] += 1
            if resource_type == "Encounter" and patient is not None:
                encounters.setdefault(patient, []).append(entry)
        _scale_entry_links(entry, rewriter)

    single = next(iter(names)) if len(names) == 1 else None
    _scale_bundle_header(bundle, rewriter, Context(rewriter.day_offset(single)))
    if selector is not None and shifts.new_condition is not None:
        for patient in names:
            if patient in encounters and selector.pick():
                added = condition_entry(rewriter, shifts.new_condition, patient, encounters)
                entries.append(added)
                result.resources_out["Condition"] += 1
                result.conditions_added += 1
        bundle["entry"] = entries
    return ENCODER.encode(bundle)


def _scale_entry_links(entry: dict[str, Any], rewriter: CopyRewriter) -> None:
    full_url = entry.get("fullUrl")
    if isinstance(full_url, str):
        entry["fullUrl"] = rewriter.reference(full_url)
    request = entry.get("request")
    if isinstance(request, dict):
        if isinstance(request.get("url"), str):
            request["url"] = rewriter.reference(request["url"])
        if isinstance(request.get("ifNoneExist"), str):
            request["ifNoneExist"] = rewriter.query(request["ifNoneExist"])


def _scale_bundle_header(bundle: dict[str, Any], rewriter: CopyRewriter, context: Context) -> None:
    if isinstance(bundle.get("id"), str):
        bundle["id"] = rewriter.new_id(bundle["id"])
    if isinstance(bundle.get("timestamp"), str):
        bundle["timestamp"] = shift_date(bundle["timestamp"], context.days)
    for key in ("meta", "identifier"):
        if isinstance(bundle.get(key), dict):
            holder = {key: bundle[key]}
            rewriter.elements(holder, context)


class _TypeWriter:
    """One open NDJSON file per resource type for the copy being written."""

    def __init__(self, folder: Path, copy: int) -> None:
        self.folder, self.copy = folder, copy
        self.files: dict[str, BinaryIO] = {}
        self.bytes = 0

    def write(self, resource_type: str, body: bytes) -> None:
        handle = self.files.get(resource_type)
        if handle is None:
            path = self.folder / f"{resource_type}.{self.copy:03d}.ndjson"
            handle = self.files[resource_type] = path.open("wb")
        handle.write(body)
        handle.write(b"\n")
        self.bytes += len(body) + 1

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()


def _scale_ndjson(
    job: _Job, rewriter: CopyRewriter, selector: Systematic | None, writer: _TypeWriter,
    result: _CopyResult,
) -> None:
    picks: dict[str, tuple[str, str, str] | None] = {}  # patient -> (start, subject, encounter)
    for index, path in enumerate(job.ndjson, start=1):
        with _open(path) as source:
            for number, line in enumerate(source, start=1):
                if not line.strip():
                    continue
                resource = _decode_line(line, file_number=index, line_number=number)
                resource_type = resource["resourceType"]
                result.resources_in[resource_type] += 1
                patient = patient_reference_id(resource, None)
                names = job.names.get(patient or "")
                rewriter.resource(resource, Context(rewriter.day_offset(patient), names))
                make_older(resource, job.shifts)
                if selector is not None and resource_type == "Encounter" and patient is not None:
                    pick_encounter(picks, selector, patient, resource)
                writer.write(resource_type, ENCODER.encode(resource))
                result.resources_out[resource_type] += 1

    spec = job.shifts.new_condition
    if spec is None:
        return
    for patient, pick in picks.items():
        if pick is None:
            continue
        start, subject, encounter = pick
        condition = new_condition(
            rewriter, spec, patient=patient, subject=subject, encounter=encounter,
            start=start or None,
        )
        writer.write("Condition", ENCODER.encode(condition))
        result.resources_out["Condition"] += 1
        result.conditions_added += 1


def _decode_line(line: bytes, *, file_number: int, line_number: int) -> dict[str, Any]:
    where = f"NDJSON input #{file_number}, line {line_number}"
    try:
        resource = DECODER.decode(line)
    except msgspec.DecodeError:
        raise InputError(f"{where} is not valid JSON: fix or remove that line") from None
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise InputError(f"{where} is not a FHIR resource (no resourceType): fix or remove it")
    return resource
