"""dbt build on the official FHIR R4 examples: odd shapes, partial dates, units to convert."""

from __future__ import annotations

from decimal import Decimal

from tests.dbt.conftest import BuiltLake, query


def test_edge_build_passes_with_one_warning_for_dangling_patient_references(
    edge: BuiltLake,
) -> None:
    # The examples reference patients that are not among them: relationships warn, never fail.
    build = edge.summary["build"]
    assert build["test_warn"] == 1
    assert {key for key in build if not key.endswith(("_pass", "_success", "_no-op"))} == {
        "test_warn"
    }
    assert build["unit_test_pass"] == 5 and build["seed_success"] == 3
    assert edge.loads["examples"]["observation"] == 49
    assert query(edge.lake, "select count(*) from observations") == [(49,)]


def test_vitals_convert_units_and_split_blood_pressure_components(edge: BuiltLake) -> None:
    rows = query(
        edge.lake,
        "select vital_id, loinc_code, canonical_value, canonical_ucum_code, recorded_value, "
        "recorded_ucum_code, "
        "is_implausible from vitals order by vital_id",
    )
    assert rows == [
        ("blood-pressure#1", "8480-6", Decimal("107"), "mm[Hg]", Decimal("107"), "mm[Hg]", False),
        ("blood-pressure#2", "8462-4", Decimal("60"), "mm[Hg]", Decimal("60"), "mm[Hg]", False),
        ("bmi", "39156-5", Decimal("16.2"), "kg/m2", Decimal("16.2"), "kg/m2", False),
        # 66.9 [in_i] and 185 [lb_av] in the example, reported in cm and kg.
        ("body-height", "8302-2", Decimal("169.926"), "cm", Decimal("66.9"), "[in_i]", False),
        ("body-temperature", "8310-5", Decimal("36.5"), "Cel", Decimal("36.5"), "Cel", False),
        ("example", "29463-7", Decimal("83.914588"), "kg", Decimal("185"), "[lb_av]", False),
        ("f202", "8310-5", Decimal("39"), "Cel", Decimal("39"), "Cel", False),
        ("head-circumference", "9843-4", Decimal("51.2"), "cm", Decimal("51.2"), "cm", False),
        ("respiratory-rate", "9279-1", Decimal("26"), "/min", Decimal("26"), "/min", False),
        ("satO2", "2708-6", Decimal("95"), "%", Decimal("95"), "%", False),
    ]


def test_choice_types_and_date_precision_survive_to_the_marts(edge: BuiltLake) -> None:
    observations = dict(
        ((row[0]), row[1:]) for row in query(
            edge.lake,
            "select observation_id, value_type, effective_at_precision, "
            "strftime(effective_at, '%Y-%m-%dT%H:%M:%S') from observations",
        )
    )
    conditions = query(
        edge.lake,
        "select condition_id, onset_type, onset_age_value, onset_age_unit, onset_precision, "
        "abated_at_precision, clinical_status, is_active from conditions "
        "where condition_id in ('f204', 'f202') order by 1",
    )
    assert observations["abdo-tender"] == ("Boolean", "time", "2018-04-02T09:30:10")
    assert observations["bloodgroup"] == ("CodeableConcept", "time", "2018-03-11T16:07:54")
    assert observations["eye-color"] == ("String", "day", "2016-05-18T00:00:00")
    # effectiveDateTime 2014-12-11T04:44:16Z stays that instant; effectivePeriod.start
    # 2013-04-02T10:30:10+01:00 is 09:30:10 in UTC.
    assert observations["glasgow"] == ("Quantity", "time", "2014-12-11T04:44:16")
    assert observations["f002"] == ("Quantity", "time", "2013-04-02T09:30:10")
    assert conditions == [
        # onsetAge: 52 years, no date to give.
        ("f202", "Age", Decimal("52"), "a", None, None, "resolved", False),
        ("f204", "DateTime", None, None, "day", "day", "inactive", False),
    ]
