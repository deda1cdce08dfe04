"""The data scaler on the real Synthea samples: counts, ids, references, names, dates, shifts."""

from __future__ import annotations

import argparse
import base64
import datetime
import decimal
import gzip
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from dlt_pipelines.fhir import scaler_commands
from dlt_pipelines.fhir.scaler import scale
from dlt_pipelines.fhir.scaler_rewrite import shift_date, years_earlier
from infra.errors import ConfigError, InputError

DECIMALS = msgspec.json.Decoder(float_hook=decimal.Decimal)
COVID = {
    "system": "http://snomed.info/sct",
    "code": "840539006",
    "display": "Disease caused by severe acute respiratory syndrome coronavirus 2 (disorder)",
}
# Lines per type in synthea-bulk-ndjson-10-patients, as its SOURCE.md lists them.
BULK_LINES = {
    "AllergyIntolerance": 11, "Condition": 555, "Device": 16, "DocumentReference": 1215,
    "Encounter": 1215, "Immunization": 161, "Location": 44, "MedicationRequest": 1745,
    "Organization": 43, "Patient": 13, "Practitioner": 43, "PractitionerRole": 43,
    "Procedure": 2056,
}


@pytest.fixture(scope="module")
def bulk(shared_data: Path) -> Path:
    return shared_data / "synthea-bulk-ndjson-10-patients"


@pytest.fixture(scope="module")
def smart_bundles(shared_data: Path) -> list[Path]:
    """The first 20 of the 40 SMART Synthea bundles, in name order."""
    return sorted((shared_data / "synthea-r4-bundles-smart" / "bundles").glob("*.json"))[:20]


@pytest.fixture(scope="module")
def bulk_x3(bulk: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    output = tmp_path_factory.mktemp("bulk-x3")
    return output, scale([bulk], output, factor=3, seed=11)


@pytest.fixture(scope="module")
def smart_x2(smart_bundles: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("smart-x2")
    scale(smart_bundles, output, factor=2, seed=5)
    return output


def ndjson_resources(folder: Path) -> list[dict[str, Any]]:
    resources = []
    for path in sorted(folder.glob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            record = json.loads(line)
            if "resourceType" in record:
                resources.append(record)
    return resources


def bundle_resources(paths: list[Path]) -> list[dict[str, Any]]:
    return [entry["resource"] for path in paths for entry in json.loads(path.read_bytes())["entry"]]


def references(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(references(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(references(value))
    return found


def readable_text(paths: list[Path]) -> str:
    """The files' bytes, plus every base64 attachment decoded, as one text to search."""
    chunks = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        chunks.append(text)
        for match in re.finditer(r'"data":\s*"([A-Za-z0-9+/=]+)"', text):
            chunks.append(base64.b64decode(match[1]).decode("utf-8"))
    return "\n".join(chunks)


def leftovers(text: str, parts: set[str], ids: set[str]) -> list[str]:
    """The name parts and ids of ``parts`` and ``ids`` that occur in ``text`` as whole words."""
    words = set(re.findall(r"\w+", text))
    tokens = set(re.findall(r"[\w.\-]+", text))
    found = [part for part in parts if (part in words if part.isalnum() else part in text)]
    return found + [value for value in ids if value in tokens]


def name_parts(resources: list[dict[str, Any]]) -> set[str]:
    parts: set[str] = set()
    for resource in resources:
        if resource["resourceType"] in {"Patient", "Practitioner"}:
            for human_name in resource.get("name", []):
                parts.update(human_name.get("given", []))
                parts.add(human_name["family"])
    return parts


def day(value: str) -> datetime.date:
    return datetime.date.fromisoformat(value[:10])


def note_text(resource: dict[str, Any]) -> str:
    return base64.b64decode(resource["content"][0]["attachment"]["data"]).decode("utf-8")


def test_factor_three_gives_exactly_three_times_the_lines_of_every_type(bulk_x3) -> None:
    output, report = bulk_x3
    lines = Counter()
    for path in (output / "ndjson").glob("*.ndjson"):
        lines[path.name.split(".")[0]] += len(path.read_bytes().splitlines())

    assert dict(lines) == {name: 3 * count for name, count in BULK_LINES.items()}
    assert report.resources_in == BULK_LINES
    assert report.resources_out == {name: 3 * count for name, count in BULK_LINES.items()}
    assert report.skipped_files == 1  # the export's log.ndjson
    assert report.notes_rewritten == 3 * 1215
    assert sorted(path.name for path in (output / "ndjson").glob("Patient.*")) == [
        "Patient.000.ndjson", "Patient.001.ndjson", "Patient.002.ndjson",
    ]


def test_ids_are_unique_across_copies_and_new(bulk: Path, bulk_x3) -> None:
    output, _ = bulk_x3
    resources = ndjson_resources(output / "ndjson")
    keys = [f"{resource['resourceType']}/{resource['id']}" for resource in resources]
    originals = {f"{item['resourceType']}/{item['id']}" for item in ndjson_resources(bulk)}

    assert len(keys) == len(set(keys)) == 3 * sum(BULK_LINES.values())
    assert not originals & set(keys)


def test_every_ndjson_reference_resolves_inside_the_scaled_output(bulk_x3) -> None:
    output, _ = bulk_x3
    resources = ndjson_resources(output / "ndjson")
    targets = {f"{resource['resourceType']}/{resource['id']}" for resource in resources}
    for resource in resources:
        for identifier in resource.get("identifier", []):
            query = f"identifier={identifier['system']}|{identifier['value']}"
            targets.add(f"{resource['resourceType']}?{query}")
    found = [reference for resource in resources for reference in references(resource)]

    assert len(found) == 3 * 25299  # every reference of the sample, in each copy
    assert [reference for reference in found if reference not in targets] == []


def test_every_bundle_reference_resolves_inside_its_bundle(
    smart_bundles: list[Path], smart_x2: Path
) -> None:
    resolved = unresolved = 0
    for path in sorted((smart_x2 / "bundles").glob("*.json")):
        bundle = json.loads(path.read_bytes())
        urls = {entry["fullUrl"] for entry in bundle["entry"]}
        for entry in bundle["entry"]:
            resource = entry["resource"]
            contained = {"#" + item["id"] for item in resource.get("contained", [])}
            for reference in references(resource):
                if reference in urls or reference in contained:
                    resolved += 1
                else:
                    unresolved += 1

    assert unresolved == 0
    assert resolved == 2 * sum(len(references(item)) for item in bundle_resources(smart_bundles))


def test_decimals_round_trip_exactly(bulk: Path, bulk_x3, tmp_path: Path) -> None:
    edge = tmp_path / "edge"
    edge.mkdir()
    (edge / "Observation.ndjson").write_bytes(
        b'{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},'
        b'"valueQuantity":{"value":0.700,"unit":"mg"},"referenceRange":[{"low":{"value":1.50},'
        b'"high":{"value":12345678901234567890.000001}}],"component":[{"valueInteger":7}]}\n'
    )
    scale([edge], tmp_path / "out", factor=2)
    for copy in ("000", "001"):
        text = (tmp_path / "out" / "ndjson" / f"Observation.{copy}.ndjson").read_text()
        assert '"value":0.700,' in text
        assert '"value":1.50}' in text
        assert '"value":12345678901234567890.000001}' in text
        assert '"valueInteger":7' in text

    output, _ = bulk_x3
    source = (bulk / "Patient.000.ndjson").read_bytes().splitlines()
    copy_one = (output / "ndjson" / "Patient.001.ndjson").read_bytes().splitlines()
    for before, after in zip(source, copy_one, strict=True):
        assert decimals_of(DECIMALS.decode(before)) == decimals_of(DECIMALS.decode(after))


def decimals_of(node: Any) -> list[str]:
    if isinstance(node, decimal.Decimal):
        return [str(node)]
    if isinstance(node, dict):
        return [text for value in node.values() for text in decimals_of(value)]
    if isinstance(node, list):
        return [text for value in node for text in decimals_of(value)]
    return []


def test_no_original_name_or_id_is_left_in_ndjson_or_notes(bulk: Path, bulk_x3) -> None:
    output, _ = bulk_x3
    sources = ndjson_resources(bulk)
    text = readable_text(sorted((output / "ndjson").glob("*.ndjson")))
    parts = name_parts(sources)
    ids = {resource["id"] for resource in sources}
    for patient in (resource for resource in sources if resource["resourceType"] == "Patient"):
        ids.update(identifier["value"] for identifier in patient["identifier"])

    assert (len(parts), len(ids)) == (123, 7193)
    assert leftovers(text, parts, ids) == []


def test_no_original_name_or_id_is_left_in_bundles(smart_bundles: list[Path], smart_x2) -> None:
    sources = bundle_resources(smart_bundles)
    text = readable_text(sorted((smart_x2 / "bundles").glob("*.json")))
    ids = {resource["id"] for resource in sources}
    for patient in (resource for resource in sources if resource["resourceType"] == "Patient"):
        ids.update(identifier["value"] for identifier in patient["identifier"])
    parts = name_parts(sources)

    assert (len(parts), len(ids)) == (87, 4176)
    assert leftovers(text, parts, ids) == []


def test_notes_name_the_patient_by_the_new_name(bulk: Path, bulk_x3) -> None:
    output, _ = bulk_x3
    patients = {p["id"]: p for p in ndjson_resources(bulk) if p["resourceType"] == "Patient"}
    scaled = ndjson_resources(output / "ndjson")
    new_patients = {p["id"]: p for p in scaled if p["resourceType"] == "Patient"}
    sources = [r for r in ndjson_resources(bulk) if r["resourceType"] == "DocumentReference"]
    copy_two = [
        json.loads(line)
        for line in (output / "ndjson" / "DocumentReference.002.ndjson").read_bytes().splitlines()
    ]
    checked = 0
    for before, after in zip(sources, copy_two, strict=True):
        old_given = patients[before["subject"]["reference"][8:]]["name"][0]["given"][0]
        new_given = new_patients[after["subject"]["reference"][8:]]["name"][0]["given"][0]
        assert (old_given in note_text(before)) == (new_given in note_text(after))
        checked += old_given in note_text(before)

    assert checked == 1215


def test_dates_move_per_patient_and_keep_their_precision(bulk: Path, bulk_x3) -> None:
    output, _ = bulk_x3
    lines = (bulk / "Encounter.000.ndjson").read_bytes().splitlines()
    source = [json.loads(line) for line in lines]
    shifts: dict[tuple[str, str], set[int]] = {}
    for copy in ("000", "001", "002"):
        path = output / "ndjson" / f"Encounter.{copy}.ndjson"
        scaled = [json.loads(line) for line in path.read_bytes().splitlines()]
        for before, after in zip(source, scaled, strict=True):
            start, moved = before["period"]["start"], after["period"]["start"]
            assert moved[10:] == start[10:]  # time and zone as written
            days = (day(moved) - day(start)).days
            shifts.setdefault((copy, before["subject"]["reference"]), set()).add(days)

    assert all(len(days) == 1 for days in shifts.values())  # one offset per patient per copy
    assert all(-1826 <= min(days) <= -1 for days in shifts.values())
    offsets = {key: next(iter(days)) for key, days in shifts.items()}
    patients = {patient for _, patient in offsets}
    assert len(patients) == 13
    for patient in patients:
        assert len({offsets[(copy, patient)] for copy in ("000", "001", "002")}) > 1


def test_partial_dates_keep_their_precision() -> None:
    assert shift_date("2019", -30) == "2019"
    assert shift_date("2019", -200) == "2018"
    assert shift_date("2019-03", -45) == "2019-02"
    assert shift_date("2019-03-04", -4) == "2019-02-28"
    assert shift_date("2020-03-01T10:11:12.345+02:00", -1) == "2020-02-29T10:11:12.345+02:00"
    assert shift_date("2019-05-31T16:35:00Z", -366) == "2018-05-30T16:35:00Z"
    assert shift_date("8302-2", -10) == "8302-2"
    assert shift_date("2019-13", -10) == "2019-13"
    assert years_earlier("2016-02-29", 10) == "2006-02-28"
    assert years_earlier("1980-07", 10) == "1970-07"
    assert years_earlier("1980", 10) == "1970"


def test_every_kind_of_date_in_a_resource_moves(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    patient = {
        "resourceType": "Patient", "id": "p1", "meta": {"lastUpdated": "2020-06-15T08:00:00.000Z"},
        "birthDate": "1970", "name": [{"family": "Quux12", "given": ["Zed34"],
                                        "period": {"start": "1990-01"}}],
    }
    condition = {
        "resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://example.org/codes", "code": "2019"}]},
        "onsetDateTime": "2019-03-04T10:00:00-05:00", "abatementDateTime": "2019",
        "recordedDate": "2019-03-04",
        "note": [{"time": "2019-03-04T10:00:00Z", "text": "2019-03-04"}],
    }
    (source / "Patient.ndjson").write_text(json.dumps(patient) + "\n")
    (source / "Condition.ndjson").write_text(json.dumps(condition) + "\n")
    scale([source], tmp_path / "out", factor=1, seed=3)
    new_patient = json.loads((tmp_path / "out" / "ndjson" / "Patient.000.ndjson").read_text())
    new_condition = json.loads((tmp_path / "out" / "ndjson" / "Condition.000.ndjson").read_text())

    onset = new_condition["onsetDateTime"]
    days = (datetime.date.fromisoformat(onset[:10]) - datetime.date(2019, 3, 4)).days
    assert onset[10:] == "T10:00:00-05:00" and days < 0
    assert new_condition["recordedDate"] == onset[:10]
    assert new_condition["note"][0]["time"] == onset[:10] + "T10:00:00Z"
    assert new_condition["note"][0]["text"] == "2019-03-04"  # free text is not a date element
    assert new_condition["code"]["coding"][0]["code"] == "2019"
    assert re.fullmatch(r"\d{4}", new_condition["abatementDateTime"])
    assert new_patient["meta"]["lastUpdated"] == shift_date("2020-06-15T08:00:00.000Z", days)
    assert re.fullmatch(r"\d{4}", new_patient["birthDate"])
    assert re.fullmatch(r"\d{4}-\d{2}", new_patient["name"][0]["period"]["start"])
    assert new_condition["subject"]["reference"] == f"Patient/{new_patient['id']}"


def test_the_same_seed_gives_identical_bytes(smart_bundles: list[Path], tmp_path: Path) -> None:
    inputs = smart_bundles[:3]
    scale(inputs, tmp_path / "a", factor=2, seed=7)
    scale(inputs, tmp_path / "b", factor=2, seed=7, workers=2)
    scale(inputs, tmp_path / "c", factor=2, seed=8)
    files = sorted(path.relative_to(tmp_path / "a") for path in (tmp_path / "a").rglob("*.json"))

    assert len(files) == 6
    for relative in files:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()
        assert (tmp_path / "a" / relative).read_bytes() != (tmp_path / "c" / relative).read_bytes()


def test_shifts_are_measurable(smart_bundles: list[Path], smart_x2: Path, tmp_path: Path) -> None:
    shifted = tmp_path / "shifted"
    report = scale(
        smart_bundles, shifted, factor=2, seed=5,
        shifts={"age_years": 10, "new_condition": {**COVID, "rate": 0.10}},
    )
    plain = bundle_resources(sorted((smart_x2 / "bundles").glob("*.json")))
    moved = bundle_resources(sorted((shifted / "bundles").glob("*.json")))
    births = {r["id"]: r["birthDate"] for r in plain if r["resourceType"] == "Patient"}
    older = {r["id"]: r["birthDate"] for r in moved if r["resourceType"] == "Patient"}

    assert len(births) == 40
    assert older == {key: years_earlier(value, 10) for key, value in births.items()}
    assert all(int(older[key][:4]) == int(births[key][:4]) - 10 for key in births)

    def covid(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            r for r in resources
            if r["resourceType"] == "Condition" and r["code"]["coding"][0]["code"] == COVID["code"]
        ]

    conditions = [r for r in plain if r["resourceType"] == "Condition"]
    assert len(covid(moved)) - len(covid(plain)) == report.conditions_added == 4  # 10% of 20, x2
    assert report.resources_out["Condition"] == len(conditions) + 4


def test_an_added_condition_sits_on_the_latest_encounter(
    smart_bundles: list[Path], tmp_path: Path
) -> None:
    shifts = {"new_condition": {**COVID, "rate": 0.5}}
    report = scale(smart_bundles, tmp_path / "out", factor=1, shifts=shifts)
    added = 0
    for path in sorted((tmp_path / "out" / "bundles").glob("*.json")):
        bundle = json.loads(path.read_bytes())
        by_url = {entry["fullUrl"]: entry["resource"] for entry in bundle["entry"]}
        starts = [r["period"]["start"] for r in by_url.values() if r["resourceType"] == "Encounter"]
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] != "Condition":
                continue
            if resource["code"]["coding"][0]["code"] != COVID["code"]:
                continue
            encounter = by_url[resource["encounter"]["reference"]]
            assert encounter["resourceType"] == "Encounter"
            assert by_url[resource["subject"]["reference"]]["resourceType"] == "Patient"
            assert resource["onsetDateTime"] == encounter["period"]["start"] == max(starts)
            assert entry["request"] == {"method": "POST", "url": "Condition"}
            added += 1

    assert added == report.conditions_added == 10  # the 2019 sample has no COVID-19 Condition


def test_bad_input_is_refused_with_where_and_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "Patient.ndjson").write_text('{"resourceType":"Patient","id":"a"}\n{"id": 2\n')
    with pytest.raises(InputError, match=r"NDJSON input #1, line 2 is not valid JSON"):
        scale([folder], tmp_path / "out", factor=1)

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(ConfigError, match="is not empty"):
        scale([folder], tmp_path / "full", factor=1)
    with pytest.raises(ConfigError, match="unknown shift 'age'"):
        scale([folder], tmp_path / "out2", factor=1, shifts={"age": 3})
    with pytest.raises(InputError, match="input #1 does not exist"):
        scale([tmp_path / "missing"], tmp_path / "out3", factor=1)


def test_gzipped_inputs_give_the_same_copies(bulk: Path, tmp_path: Path) -> None:
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    for name in ("Patient.000.ndjson", "DocumentReference.000.ndjson"):
        (zipped / f"{name}.gz").write_bytes(gzip.compress((bulk / name).read_bytes()))
    plain = [bulk / "Patient.000.ndjson", bulk / "DocumentReference.000.ndjson"]
    scale(plain, tmp_path / "a", factor=2, seed=1)
    report = scale([zipped], tmp_path / "b", factor=2, seed=1)

    assert report.resources_out == {"DocumentReference": 2430, "Patient": 26}
    for path in sorted((tmp_path / "a" / "ndjson").iterdir()):
        assert path.read_bytes() == (tmp_path / "b" / "ndjson" / path.name).read_bytes()


def test_the_scale_command_writes_the_copies(bulk: Path, tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser(prog="carelake")
    scaler_commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["scale", "--factor", "2", "--out", str(tmp_path / "out"), "--seed", "4",
         str(bulk / "Patient.000.ndjson"), str(bulk / "Encounter.000.ndjson")]
    )
    assert args.handler(args) == 0
    summary = json.loads(capsys.readouterr().out)

    assert summary["resources_out"] == {"Encounter": 2430, "Patient": 26}
    assert sorted(path.name for path in (tmp_path / "out" / "ndjson").iterdir()) == [
        "Encounter.000.ndjson", "Encounter.001.ndjson", "Patient.000.ndjson", "Patient.001.ndjson",
    ]
