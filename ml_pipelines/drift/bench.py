"""Measure what the drift docs state: whylogs' sketch p-values against the exact tests, the
false-alarm rate of random splits, and how long a comparison and a profile take.

``python -m ml_pipelines.drift.bench ../shared/data`` prints the figures (and returns them from
``run(data_dir)``). Nothing here is asserted; ``docs/drift.md`` quotes the output.
"""

from __future__ import annotations

import argparse
import logging
import time
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from ml_pipelines.drift import chestxray, compare, fhir_features, profiles, statistics, windows
from ml_pipelines.drift.config import DriftConfig

logger = logging.getLogger(__name__)

SKETCH_COLUMNS = ["age_years", "sex", "finding:hernia"]


def sketch_against_exact(images: Any, *, splits: int, reference_size: int) -> dict[str, Any]:
    """Random splits of one population: how often each test reports p < 0.05."""
    counts = {"whylogs_chi_square_sex": 0, "homogeneity_sex": 0, "whylogs_chi_square_hernia": 0,
              "homogeneity_hernia": 0, "whylogs_ks_age": 0, "exact_ks_age": 0}
    for seed in range(splits):
        order = np.random.default_rng(seed).permutation(len(images.frame))
        cut = reference_size or len(order) // 2
        reference = images.with_frame(images.frame.iloc[order[:cut]])
        current = images.with_frame(images.frame.iloc[order[cut:]])
        sketch = profiles.whylogs_scores(
            profiles.profile_frame(reference, columns=SKETCH_COLUMNS),
            profiles.profile_frame(current, columns=SKETCH_COLUMNS),
            images,
        )
        exact = compare.compare(reference, current, config=DriftConfig(min_effect_size=0.0))
        counts["whylogs_chi_square_sex"] += sketch["sex"]["whylogs_chi-square_p_value"] < 0.05
        counts["whylogs_chi_square_hernia"] += (
            sketch["finding:hernia"]["whylogs_chi-square_p_value"] < 0.05
        )
        counts["whylogs_ks_age"] += sketch["age_years"]["whylogs_ks_p_value"] < 0.05
        counts["homogeneity_sex"] += exact.feature("sex").p_value < 0.05
        counts["homogeneity_hernia"] += exact.feature("finding:hernia").p_value < 0.05
        counts["exact_ks_age"] += statistics.ks_test(
            reference.frame["age_years"].to_numpy(), current.frame["age_years"].to_numpy()
        ).p_value < 0.05
    return {"splits": splits, "reference_size": reference_size or "half", **counts}


def run(data_dir: Path, *, splits: int = 200) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    images = chestxray.chestxray_features(data_dir / "nih-chestxray14-metadata")
    figures["unequal_windows"] = sketch_against_exact(images, splits=20, reference_size=300)
    figures["equal_halves"] = sketch_against_exact(images, splits=10, reference_size=0)

    encounters = windows.with_windows(
        fhir_features.encounter_features(
            chain(
                fhir_features.iter_ndjson(data_dir / "synthea-bulk-ndjson-10-patients"),
                fhir_features.iter_bundles(data_dir / "synthea-r4-bundles-smart" / "bundles"),
            )
        ),
        window="year",
    )
    period = windows.select(encounters, "2011..2019")
    for correction in ("bh", "holm"):
        started = time.perf_counter()
        alarms = compare.false_alarm_rate(
            period, config=DriftConfig(correction=correction), splits=splits
        )
        figures[f"false_alarms_{correction}"] = {
            **alarms.as_json(),
            "seconds_per_split": (time.perf_counter() - started) / splits,
        }

    started = time.perf_counter()
    profiles.profile_frame(period, columns=profiles.profiled_columns(period, min_count=5))
    figures["profile_seconds_704_encounters"] = time.perf_counter() - started
    started = time.perf_counter()
    posteroanterior = images.subset(images.frame["view_position"] == "PA")
    anteroposterior = images.subset(images.frame["view_position"] == "AP")
    compare.compare(posteroanterior, anteroposterior, config=DriftConfig())
    figures["compare_seconds_112120_images"] = time.perf_counter() - started
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="the shared public data folder")
    parser.add_argument("--splits", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for name, value in run(args.data_dir, splits=args.splits).items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
