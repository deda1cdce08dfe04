"""Fixtures of the drift tests: the shared public data, feature sets built from it, a lake."""

from __future__ import annotations

import os
from itertools import chain
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    folder = (REPO_ROOT / ".." / "shared" / "data").resolve()
    if not (folder / "INDEX.md").is_file():
        pytest.skip(f"the shared public data is not at {folder}")
    return folder


@pytest.fixture(scope="session")
def fhir_resources(shared_data: Path) -> list[dict]:
    from ml_pipelines.drift import fhir_features

    return list(
        chain(
            fhir_features.iter_ndjson(shared_data / "synthea-bulk-ndjson-10-patients"),
            fhir_features.iter_bundles(shared_data / "synthea-r4-bundles-smart" / "bundles"),
        )
    )


@pytest.fixture(scope="session")
def encounters(fhir_resources):
    from ml_pipelines.drift import fhir_features, windows

    features = fhir_features.encounter_features(fhir_resources)
    return windows.with_windows(features, window="year")


@pytest.fixture(scope="session")
def chestxray(shared_data: Path):
    from ml_pipelines.drift.chestxray import chestxray_features

    return chestxray_features(shared_data / "nih-chestxray14-metadata")


@pytest.fixture(scope="module", autouse=True)
def _key_dir(tmp_path_factory):
    """A key folder for each module's lakes, outside every data folder, named the way a user
    would (the environment), so commands and ZenML steps that reopen a lake find its keys. It
    is unset again after the module, so other folders' tests never see it."""
    previous = os.environ.get("CARELAKE_KEYS__KEY_DIR")
    os.environ["CARELAKE_KEYS__KEY_DIR"] = str(tmp_path_factory.mktemp("keys"))
    yield
    if previous is None:
        os.environ.pop("CARELAKE_KEYS__KEY_DIR", None)
    else:
        os.environ["CARELAKE_KEYS__KEY_DIR"] = previous


def make_lake(root: Path):
    from infra.lake import Lake
    from infra.settings import load_settings

    return Lake.open(load_settings(data_dir=root / "data"))


@pytest.fixture(scope="session")
def lake_at():
    """Open (create) a lake under a folder; the session's key folder holds its keys."""
    return make_lake


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture()
def lake(tmp_path: Path):
    return make_lake(tmp_path)


INJECTED = "condition:injected"


def _inject_shift(features, *, age_years: float, new_share: float, seed: int):
    """A copy with every age raised by ``age_years`` and a new condition in ``new_share`` of
    the units."""
    from dataclasses import replace

    frame = features.frame.copy()
    frame["age_years"] = frame["age_years"] + age_years
    chosen = np.random.default_rng(seed).choice(
        len(frame), size=round(new_share * len(frame)), replace=False
    )
    flag = np.zeros(len(frame), dtype="int8")
    flag[chosen] = 1
    frame[INJECTED] = flag
    return replace(
        features,
        frame=frame,
        flags=(*features.flags, INJECTED),
        labels={**features.labels, INJECTED: "Injected condition"},
    )


@pytest.fixture(scope="session")
def inject_shift():
    return _inject_shift
