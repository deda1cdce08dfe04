"""Weights: found offline under the release file's name, hashed, pinned, loaded without code.

The files here hold TorchXRayVision's DenseNet-121 with random values (see vision_helpers): they
test loading and provenance only.
"""

from __future__ import annotations

import fractions
import hashlib
import math
import socket

import numpy as np
import pytest
import torch
import torchxrayvision as xrv
from vision_helpers import MODEL_ID, WEIGHTS_FILE, random_network

from infra.errors import ConfigError, StageUnavailable
from ml_pipelines.vision.inference import choose_device, score
from ml_pipelines.vision.preprocess import prepare
from ml_pipelines.vision.weights import load_model, model_spec


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def test_spec_matches_torchxrayvision_publication():
    spec = model_spec(MODEL_ID)
    published = xrv.models.model_urls[MODEL_ID]

    assert spec.file_name == WEIGHTS_FILE
    assert spec.file_name == (
        "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-"
        "seed0-best.pt"
    )
    assert spec.labels == tuple(published["labels"])
    assert len(spec.labels) == 18
    assert spec.thresholds[0] == pytest.approx(0.07422872)
    assert spec.resolution == 224
    nih = model_spec("densenet121-res224-nih")
    assert nih.thresholds[14:] == (None, None, None, None)


def test_unsupported_model_is_a_config_error():
    with pytest.raises(ConfigError, match="vision.model is 'resnet50-res512-all'"):
        model_spec("resnet50-res512-all")


def test_absent_weights_say_which_file_goes_where(tmp_path, no_network):
    with pytest.raises(StageUnavailable) as raised:
        load_model(MODEL_ID, cache_dir=tmp_path)

    assert str(raised.value) == f"weights not available: put {WEIGHTS_FILE} in {tmp_path}"
    assert list(tmp_path.iterdir()) == []


def test_state_dict_file_loads_with_its_sha256(weights_dir, no_network):
    model = load_model(MODEL_ID, cache_dir=weights_dir)

    assert model.weights_sha256 == _sha256(weights_dir / WEIGHTS_FILE)
    assert model.weights_path == weights_dir / WEIGHTS_FILE
    assert model.network.targets == list(model.spec.labels)
    expected = random_network().state_dict()
    loaded = model.network.state_dict()
    assert sorted(loaded) == sorted(expected)
    assert all(torch.equal(loaded[name], expected[name]) for name in expected)


def test_release_format_whole_module_loads_without_running_pickled_code(tmp_path, no_network):
    torch.save(random_network(seed=3), tmp_path / WEIGHTS_FILE)

    model = load_model(MODEL_ID, cache_dir=tmp_path)

    assert model.weights_sha256 == _sha256(tmp_path / WEIGHTS_FILE)
    assert torch.equal(model.network.classifier.weight,
                       random_network(seed=3).classifier.weight)


def test_legacy_pre_1_6_format_loads_too(tmp_path):
    # TorchXRayVision's release files predate PyTorch's zip format
    torch.save(random_network(seed=4), tmp_path / WEIGHTS_FILE,
               _use_new_zipfile_serialization=False)

    model = load_model(MODEL_ID, cache_dir=tmp_path)

    assert (tmp_path / WEIGHTS_FILE).read_bytes()[:2] != b"PK"
    assert torch.equal(model.network.classifier.weight,
                       random_network(seed=4).classifier.weight)


def test_pinned_hash_is_checked(weights_dir):
    actual = _sha256(weights_dir / WEIGHTS_FILE)
    wrong = "0" * 64

    with pytest.raises(StageUnavailable) as raised:
        load_model(MODEL_ID, cache_dir=weights_dir, pinned_sha256=wrong)
    model = load_model(MODEL_ID, cache_dir=weights_dir, pinned_sha256=actual.upper())

    assert str(raised.value) == (
        f"weights file {WEIGHTS_FILE} in {weights_dir} has sha256 {actual}, but "
        f"vision.weights_sha256 pins {wrong}: put the pinned file there or change the pin"
    )
    assert model.weights_sha256 == actual


def test_file_naming_foreign_classes_needs_a_pin(tmp_path):
    path = tmp_path / WEIGHTS_FILE
    torch.save({"state_dict": random_network().state_dict(), "note": fractions.Fraction(1, 3)},
               path)
    actual = _sha256(path)

    with pytest.raises(StageUnavailable) as raised:
        load_model(MODEL_ID, cache_dir=tmp_path)
    model = load_model(MODEL_ID, cache_dir=tmp_path, pinned_sha256=actual)

    assert "fractions.Fraction" in str(raised.value)
    assert f'set vision.weights_sha256 = "{actual}"' in str(raised.value)
    assert model.weights_sha256 == actual


def test_weights_of_another_shape_are_refused(tmp_path):
    torch.save(xrv.models.DenseNet(num_classes=14).state_dict(), tmp_path / WEIGHTS_FILE)

    with pytest.raises(StageUnavailable, match="does not fit densenet121-res224-all"):
        load_model(MODEL_ID, cache_dir=tmp_path)


def test_batched_scores_have_the_model_shape_and_do_not_depend_on_batching(
    weights_dir, xray_images
):
    model = load_model(MODEL_ID, cache_dir=weights_dir)
    names = ["00000001_000.png", "Fake_MONOHR1.dcm", "16747_3_1.jpg"]
    inputs = [prepare((xray_images / name).read_bytes(), resolution=224).pixels for name in names]

    together = score(model, inputs, batch_size=3)
    one_by_one = score(model, inputs, batch_size=1)

    assert together.shape == (3, 18)
    assert together.dtype == np.float32
    assert np.all((together > 0.0) & (together < 1.0))
    np.testing.assert_allclose(together, one_by_one, rtol=0, atol=1e-5)
    assert not np.allclose(together[0], together[1])
    assert score(model, [], batch_size=4).shape == (0, 18)
    assert not any(math.isnan(value) for value in together.ravel())


def test_device_choice_is_honest_about_the_gpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"

    assert choose_device("auto") == expected
    assert choose_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(StageUnavailable, match="vision.device is cuda but PyTorch sees no GPU"):
            choose_device("cuda")
