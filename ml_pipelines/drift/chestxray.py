"""Image-level features from the NIH ChestX-ray14 metadata: age, sex, view and finding flags.

The metadata is the labelled stand-in for what the vision stage writes per image (findings and
their probabilities): the same ``FeatureSet`` shape, so the same comparison runs on both. The
file has no dates; a window here is any grouping column (for example the view position).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from infra.errors import InputError
from ml_pipelines.drift.features import FeatureSet

logger = logging.getLogger(__name__)

FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "No Finding",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)
METADATA_FILE = "Data_Entry_2017_v2020.csv"


def finding_column(finding: str) -> str:
    return "finding:" + finding.lower().replace(" ", "_")


def chestxray_features(folder: Path, *, name: str = "nih-chestxray14") -> FeatureSet:
    """One row per image: patient age, sex, view position, follow-up number and finding flags."""
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        raise InputError(f"{folder} has no {METADATA_FILE}: point it at the NIH metadata folder")
    raw = pd.read_csv(
        path,
        usecols=["Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
                 "View Position"],
    )

    frame = pd.DataFrame(
        {
            "patient_key": raw["Patient ID"].astype("string"),
            "age_years": raw["Patient Age"].astype(float),
            "sex": raw["Patient Gender"].map({"F": "female", "M": "male"}).fillna("unknown"),
            "view_position": raw["View Position"].astype("string"),
            "follow_up": raw["Follow-up #"].astype(float),
        }
    )
    findings = raw["Finding Labels"].str.split("|")
    for finding in FINDINGS:
        frame[finding_column(finding)] = findings.map(lambda labels, f=finding: f in labels)
        frame[finding_column(finding)] = frame[finding_column(finding)].astype("int8")
    frame["image_date"] = pd.NaT

    logger.info("read %d image rows of %d patients", len(frame), frame["patient_key"].nunique())
    return FeatureSet(
        name=name,
        frame=frame,
        date_column="image_date",
        numeric=("age_years", "follow_up"),
        categorical=("sex",),
        flags=tuple(finding_column(finding) for finding in FINDINGS),
        labels={
            "age_years": "age",
            "follow_up": "follow-up number",
            **{finding_column(f): f.replace("_", " ") for f in FINDINGS},
        },
        units={"age_years": "years"},
        unit_noun="images",
        group_column="patient_key",
    )
