"""One drift run over a feature set: windows, profiles, comparison, report, gate.

``stage.py``, the ZenML steps and the command line all call these functions; each takes the
lake and returns references (paths, table names) and numbers, never patient data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from infra.errors import StageUnavailable
from ml_pipelines.drift import compare, lake_io, profiles, report, windows
from ml_pipelines.drift.config import DriftConfig
from ml_pipelines.drift.features import FeatureSet
from ml_pipelines.drift.gate import evaluate_gate
from ml_pipelines.drift.model_drift import nlp_recall_drift

logger = logging.getLogger(__name__)


#: why a feature set is absent, where "its stage has not run" would not be the whole truth
ABSENT = {
    "vitals": "the lake holds no vitals yet (bronze.observation is missing: the ingested data "
              "had no Observations, or the ingest stage has not run)",
}


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def choose_windows(features: FeatureSet, *, config: DriftConfig) -> tuple[str, str]:
    """The configured reference and current specs, or the latest well-filled window and all
    windows before it."""
    if config.reference and config.current:
        return config.reference, config.current
    counts = features.frame[windows.WINDOW_COLUMN].value_counts().sort_index()
    filled = [name for name, count in counts.items() if count >= config.min_window_units]
    current = config.current or (filled[-1] if filled else "")
    earlier = [name for name in counts.index if name < current]
    if not current or not earlier:
        raise StageUnavailable(
            f"drift needs two windows of {features.unit_noun}; {len(counts)} windows hold "
            f"{int(counts.sum())} in all and {len(filled)} reach drift.min_window_units "
            f"({config.min_window_units}): load more data or set drift.reference and drift.current"
        )
    return config.reference or f"..{earlier[-1]}", current


@dataclass(frozen=True)
class DriftRun:
    run_id: str
    reference: str
    current: str
    has_drift: bool
    passed: bool
    drifted: list[str]
    metrics_rows: int
    profile_paths: dict[str, str]
    report_json: str
    report_html: str
    gate_lines: list[str]

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "reference": self.reference,
            "current": self.current,
            "has_drift": self.has_drift,
            "passed": self.passed,
            "drifted_features": len(self.drifted),
            "metrics_rows": self.metrics_rows,
            "profiles": len(self.profile_paths),
            "report_json": self.report_json,
            "report_html": self.report_html,
        }


def run_drift(
    lake: Any,
    features: FeatureSet,
    *,
    config: DriftConfig,
    run_id: str,
    model_drift: list[dict[str, Any]] | None = None,
) -> DriftRun:
    """Profile every window, compare current with reference, store metrics and the report.

    ``model_drift`` rows (see ``model_drift.metric_drop``) join the gate; when None, the NLP
    model's recall against coded conditions is measured from the lake's NLP tables.
    """
    windowed = windows.with_windows(features, window=config.window)
    reference_spec, current_spec = choose_windows(windowed, config=config)
    reference = windows.select(windowed, reference_spec)
    current = windows.select(windowed, current_spec)

    counts = windowed.frame[windows.WINDOW_COLUMN].value_counts()
    filled = sorted(name for name, count in counts.items() if count >= config.min_window_units)
    per_window = {name: windows.select(windowed, name) for name in filled}
    per_window[f"reference-{reference_spec}"] = reference
    per_window[f"current-{current_spec}"] = current
    paths = profiles.store_window_profiles(
        lake.fs, windowed, per_window, run_id=run_id, min_count=config.min_count
    )

    comparison = compare.compare(
        reference, current, config=config, reference_name=reference_spec, current_name=current_spec
    )
    sketch_scores = profiles.whylogs_scores(
        profiles.read_profile(lake.fs, paths[f"reference-{reference_spec}"]),
        profiles.read_profile(lake.fs, paths[f"current-{current_spec}"]),
        reference.aligned_with(current),
    )
    if model_drift is None:
        model_drift = nlp_recall_drift(
            lake,
            reference,
            current,
            reference_window=reference_spec,
            current_window=current_spec,
            threshold=config.model_drop,
        )
    false_alarms = compare.false_alarm_rate(
        reference, config=config, splits=config.false_alarm_splits
    )
    outcome = evaluate_gate(comparison, mode=config.gate, model_drift=model_drift)
    rows = lake_io.write_metrics(lake, comparison, run_id=run_id, whylogs=sketch_scores)

    document = report.build_report(
        comparison,
        run_id=run_id,
        features=windowed,
        whylogs=sketch_scores,
        false_alarms=false_alarms.as_json(),
        model_drift=model_drift,
        gate=outcome.as_json(),
        profiles=paths,
    )
    json_path, html_path = lake_io.report_paths(features.name, run_id)
    lake_io.write_file(lake, json_path, report.to_json(document))
    lake_io.write_file(lake, html_path, report.render_html(document).encode("utf-8"))
    lake.audit.append(
        "drift_run",
        run_id=run_id,
        feature_set=features.name,
        has_drift=comparison.has_drift,
        drifted_features=len(comparison.drifted),
    )

    logger.info(
        "drift run %s over %s: %s against %s, %d drifted of %d features, gate %s",
        run_id,
        features.name,
        current_spec,
        reference_spec,
        len(comparison.drifted),
        len(comparison.features),
        "passes" if outcome.passed else "fails",
    )
    return DriftRun(
        run_id=run_id,
        reference=reference_spec,
        current=current_spec,
        has_drift=outcome.drift,
        passed=outcome.passed,
        drifted=[item.feature for item in comparison.drifted],
        metrics_rows=rows,
        profile_paths=paths,
        report_json=json_path,
        report_html=html_path,
        gate_lines=outcome.lines,
    )



def run_all(lake: Any, *, config: DriftConfig, run_id: str) -> dict[str, Any]:
    """Drift over every feature set the lake holds: encounters and their vitals and labs from
    bronze, and the notes, note embeddings and images once the NLP and vision stages have written
    them.

    Returns the encounters' summary (the gate's subject; ``StageUnavailable`` when they cannot be
    compared) with ``feature_sets``: each set's summary, or the reason it was not compared.
    ``has_drift`` and ``passed`` cover every set compared.
    """
    from ml_pipelines.drift.embedding_features import lake_embedding_features
    from ml_pipelines.drift.lake_io import lake_encounter_features
    from ml_pipelines.drift.observation_features import lake_observation_features
    from ml_pipelines.drift.output_features import image_features, note_features

    encounters = lake_encounter_features(lake)
    summary = run_drift(lake, encounters, config=config, run_id=run_id).summary()
    readers: dict[str, Callable[[], FeatureSet | None]] = {
        "vitals": lambda: lake_observation_features(lake, min_count=config.min_count),
        "notes": lambda: note_features(lake, encounters, min_count=config.min_count),
        "embeddings": lambda: lake_embedding_features(lake, config=config),
        "images": lambda: image_features(lake),
    }
    sets: dict[str, Any] = {"encounters": dict(summary)}
    for name, reader in readers.items():
        try:
            features = reader()
            if features is None:
                sets[name] = {"unavailable": ABSENT.get(name, f"the lake holds no {name} yet "
                                                             "(its stage has not run)")}
                continue
            result = run_drift(lake, features, config=config, run_id=run_id, model_drift=[])
        except StageUnavailable as reason:
            sets[name] = {"unavailable": str(reason)}
            continue
        sets[name] = result.summary()
    compared = [entry for entry in sets.values() if "unavailable" not in entry]
    summary["has_drift"] = any(entry["has_drift"] for entry in compared)
    summary["passed"] = all(entry["passed"] for entry in compared)
    summary["feature_sets"] = sets
    return summary
