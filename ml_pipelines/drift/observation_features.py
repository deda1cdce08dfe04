"""Vitals and labs as drift features: the numeric Observations of each encounter.

One row per encounter that recorded a numeric Observation, dated by the observation's
``effectiveDateTime`` (Synthea records it at the encounter's start), with one numeric column per
LOINC code measured in at least ``min_count`` encounters: body weight, BMI, systolic and diastolic
blood pressure (components of the blood pressure panel), heart rate, HbA1c, glucose and whatever
else the data holds. An encounter that measured a code twice carries the mean.

The values are read in SQL from any relation with a ``resource`` (the Observation as JSON) and a
``patient_key`` column: the bronze table through ``lake.scan_sql``, or a registered frame.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from ml_pipelines.drift.features import FeatureSet
from ml_pipelines.drift.fhir_features import reference_id

logger = logging.getLogger(__name__)

OBSERVATION_TABLE = "observation"
PREFIX = "observation:"

#: LOINC code -> clinical name, for the codes a name in the report should read naturally
CLINICAL_NAMES = {
    "29463-7": "body weight",
    "8302-2": "body height",
    "39156-5": "BMI",
    "8480-6": "systolic blood pressure",
    "8462-4": "diastolic blood pressure",
    "8867-4": "heart rate",
    "9279-1": "respiratory rate",
    "8310-5": "body temperature",
    "8331-1": "oral temperature",
    "72514-3": "pain score",
    "4548-4": "HbA1c",
    "2339-0": "glucose",
    "2093-3": "total cholesterol",
    "18262-6": "LDL cholesterol",
    "2085-9": "HDL cholesterol",
    "2571-8": "triglycerides",
    "38483-4": "creatinine",
    "33914-3": "eGFR",
    "6299-2": "urea nitrogen",
    "2947-0": "sodium",
    "6298-4": "potassium",
    "2069-3": "chloride",
    "20565-8": "carbon dioxide",
    "49765-1": "calcium",
    "718-7": "hemoglobin",
    "4544-3": "hematocrit",
    "6690-2": "leukocyte count",
    "777-3": "platelet count",
    "10230-1": "left ventricular ejection fraction",
    "38265-5": "bone density T-score",
    "14959-1": "urine albumin/creatinine ratio",
    "2857-1": "PSA",
}
#: UCUM units as people write them
UNIT_NAMES = {"mm[Hg]": "mmHg", "Cel": "°C", "{score}": "points", "{T-score}": "",
              "kg/m2": "kg/m²", "mL/min/{1.73_m2}": "mL/min/1.73 m²"}

_VALUES_SQL = """
with source as (select patient_key, resource from {source}),
singles as (
    select patient_key,
           json_extract_string(resource, '$.encounter.reference') as encounter_reference,
           json_extract_string(resource, '$.subject.reference') as subject_reference,
           json_extract_string(resource, '$.effectiveDateTime') as effective,
           json_extract_string(resource, '$.code.coding[0].code') as code,
           json_extract_string(resource, '$.code.coding[0].display') as display,
           json_extract_string(resource, '$.valueQuantity.unit') as unit,
           try_cast(json_extract_string(resource, '$.valueQuantity.value') as double) as value
    from source
),
parts as (
    select patient_key, resource, unnest(json_extract(resource, '$.component[*]')) as part
    from source
    where json_extract(resource, '$.component') is not null
),
components as (
    select patient_key,
           json_extract_string(resource, '$.encounter.reference') as encounter_reference,
           json_extract_string(resource, '$.subject.reference') as subject_reference,
           json_extract_string(resource, '$.effectiveDateTime') as effective,
           json_extract_string(part, '$.code.coding[0].code') as code,
           json_extract_string(part, '$.code.coding[0].display') as display,
           json_extract_string(part, '$.valueQuantity.unit') as unit,
           try_cast(json_extract_string(part, '$.valueQuantity.value') as double) as value
    from parts
)
select * from singles where value is not null and code is not null
union all
select * from components where value is not null and code is not null
"""


def observation_values(connection: Any, source: str) -> pd.DataFrame:
    """One row per numeric value (an Observation's, or each component's of a panel) of the
    relation ``source``: patient and encounter references, date, code, display, unit, value."""
    return connection.execute(_VALUES_SQL.format(source=source)).df()


def observation_features(
    connection: Any, source: str, *, min_count: int = 5, name: str = "vitals"
) -> FeatureSet:
    """The vitals and labs feature set of the Observations in ``source`` (SQL relation)."""
    values = observation_values(connection, source)
    values["encounter_key"] = [
        reference_id({"reference": text}) if text else None
        for text in values["encounter_reference"]
    ]
    subjects = pd.Series(
        [reference_id({"reference": text}) if text else None
         for text in values["subject_reference"]],
        index=values.index,
        dtype="object",
    )
    values["patient_key"] = values["patient_key"].astype("object").where(
        values["patient_key"].notna(), subjects
    )
    dated = values["encounter_key"].notna() & values["effective"].notna()
    skipped = int((~dated).sum())
    values = values.loc[dated]
    values = values.assign(
        observed_at=pd.to_datetime(values["effective"], utc=True, format="mixed")
    )

    per_code = values.groupby("code")["encounter_key"].nunique()
    codes = sorted(per_code.index[per_code >= min_count])
    kept = values.loc[values["code"].isin(codes)]
    columns = [f"{PREFIX}{code}" for code in codes]
    wide = kept.pivot_table(index="encounter_key", columns="code", values="value",
                            aggfunc="mean")
    wide = wide.reindex(columns=codes)
    wide.columns = columns
    about = values.groupby("encounter_key").agg(
        patient_key=("patient_key", "first"), observed_at=("observed_at", "min")
    )
    frame = about.join(wide, how="inner").reset_index()
    frame = frame.loc[frame[columns].notna().any(axis=1)].reset_index(drop=True)

    first = kept.drop_duplicates("code").set_index("code")
    units = kept.groupby("code")["unit"].agg(
        lambda series: series.mode().iloc[0] if series.notna().any() else ""
    )
    logger.info(
        "built %d encounter rows with %d vitals and labs from %d numeric values (%d without an "
        "encounter or date)",
        len(frame),
        len(codes),
        len(values),
        skipped,
    )
    return FeatureSet(
        name=name,
        frame=frame,
        date_column="observed_at",
        numeric=tuple(columns),
        labels={
            f"{PREFIX}{code}": CLINICAL_NAMES.get(code) or str(first.loc[code, "display"] or code)
            for code in codes
        },
        units={
            f"{PREFIX}{code}": UNIT_NAMES.get(units[code] or "", units[code] or "")
            for code in codes
        },
        unit_noun="encounters",
        group_column="patient_key",
    )


def lake_observation_features(lake: Any, *, min_count: int = 5) -> FeatureSet | None:
    """The vitals and labs of ``bronze.observation``; None while the lake holds none."""
    namespace = lake.settings.get("lake.bronze_namespace") or "bronze"
    identifier = f"{namespace}.{OBSERVATION_TABLE}"
    if not lake.has_table(identifier):
        return None
    connection = lake.duckdb()
    try:
        return observation_features(connection, lake.scan_sql(identifier), min_count=min_count)
    finally:
        connection.close()
