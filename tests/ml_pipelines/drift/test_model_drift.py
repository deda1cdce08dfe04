"""Model drift: NLP recall against coded conditions, reference window against current."""

import pyarrow as pa

from ml_pipelines.drift import model_drift, windows
from ml_pipelines.drift.compare import compare
from ml_pipelines.drift.config import DriftConfig
from ml_pipelines.drift.gate import evaluate_gate



def _nlp_tables(lake, encounters, *, missed: set[str]) -> None:
    """NLP output of a model whose concept database lacks ``missed``: every other coded
    condition of every encounter is found affirmed in its note, one is found negated."""
    coded = model_drift.coded_conditions(encounters, set(encounters.frame["encounter_key"]))
    found = coded.loc[~coded["concept_code"].isin(missed)]
    contexts = ["affirmed"] * len(found)
    lake.append("ml.note_status", pa.table({
        "encounter_id": encounters.frame["encounter_key"].tolist(),
        "status": ["ok"] * len(encounters.frame),
    }))
    lake.append("ml.note_mentions", pa.table({
        "encounter_id": found["encounter_key"].tolist() + [coded["encounter_key"].iloc[0]],
        "concept_code": found["concept_code"].tolist() + [coded["concept_code"].iloc[0]],
        "context": contexts + ["negated"],
    }))


def test_recall_counts_affirmed_mentions_of_coded_pairs_only(encounters):
    current = windows.select(encounters, "2021..")
    coded = model_drift.coded_conditions(current, set(current.frame["encounter_key"]))
    mentions = coded.assign(context="affirmed")
    mentions.loc[mentions.index[:3], "context"] = "negated"

    result = model_drift.recall(coded, mentions)

    assert result == {"coded": 48, "found": 45, "recall": 45 / 48}


def test_a_concept_database_built_before_2020_shows_model_drift_after(lake, encounters):
    before = windows.select(encounters, "2011..2019")
    after = windows.select(encounters, "2021..")
    # A concept database built from 2011-2019 coding lacks what appeared since (COVID-19...).
    known = set(model_drift.coded_conditions(before, set(before.frame["encounter_key"]))
                ["concept_code"])
    new = set(model_drift.coded_conditions(after, set(after.frame["encounter_key"]))
              ["concept_code"]) - known
    assert {"840539006", "840544004"} <= new  # COVID-19 and suspected COVID-19
    _nlp_tables(lake, encounters, missed=new)

    rows = model_drift.nlp_recall_drift(lake, before, after, reference_window="2011..2019",
                                        current_window="2021..", threshold=0.05)

    assert len(rows) == 1
    row = rows[0]
    assert (row["reference"], row["current"]) == (1.0, 37 / 48)
    assert row["drifted"] and round(row["drop"], 4) == 0.2292

    outcome = evaluate_gate(compare(before, after, config=DriftConfig()), mode="fail",
                            model_drift=rows)
    assert not outcome.passed
    assert (
        "DRIFT model nlp recall against coded conditions: 1.000 -> 0.771, drop 0.229 "
        "(threshold 0.050)"
    ) in outcome.lines


def test_no_nlp_tables_means_no_model_drift_rows(lake, encounters):
    before = windows.select(encounters, "2011..2019")
    after = windows.select(encounters, "2021..")
    assert model_drift.nlp_recall_drift(lake, before, after, reference_window="a",
                                        current_window="b", threshold=0.05) == []
