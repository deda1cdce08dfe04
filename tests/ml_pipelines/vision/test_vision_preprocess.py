"""Preprocessing on TorchXRayVision's real test images and on small synthetic DICOM edge cases."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from vision_helpers import TWIN_M1, TWIN_M2, synthetic_dicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from ml_pipelines.vision.preprocess import Prepared, Skipped, image_format, prepare


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _xrv_scale(values: np.ndarray, maximum: float) -> np.ndarray:
    return ((2.0 * (values.astype(np.float64) / maximum) - 1.0) * 1024.0).astype(np.float32)


@pytest.mark.parametrize(
    ("name", "kind", "rows", "columns", "low", "high"),
    [
        ("00000001_000.png", "png", 512, 512, -1024.0, 931.2810668945312),
        ("00027426_000.png", "png", 512, 512, -1024.0, 898.3344116210938),
        ("16747_3_1.jpg", "jpeg", 885, 1036, -808.769775390625, 916.7322998046875),
        ("covid-19-pneumonia-58-prior.jpg", "jpeg", 2373, 2373, -1024.0, 872.430908203125),
        ("tbx11k_test_data/imgs/tb/tb0005.png", "png", 512, 512, -1024.0, 903.4517822265625),
        (TWIN_M2, "dicom", 1024, 1024, -970.4791870117188, 913.7523193359375),
        (TWIN_M1, "dicom", 1024, 1024, -913.7523193359375, 970.4791870117188),
    ],
)
def test_real_images_become_model_inputs(xray_images, name, kind, rows, columns, low, high):
    data = (xray_images / name).read_bytes()
    prepared = prepare(data, resolution=224)

    assert image_format(data) == kind
    assert isinstance(prepared, Prepared)
    assert prepared.pixels.shape == (1, 224, 224)
    assert prepared.pixels.dtype == np.float32
    assert (prepared.source_rows, prepared.source_columns, prepared.bits) == (rows, columns, 8)
    assert float(prepared.pixels.min()) == low
    assert float(prepared.pixels.max()) == high


def test_8_bit_png_scales_by_255_at_native_size(xray_images):
    data = (xray_images / "00000001_000.png").read_bytes()
    raw = np.asarray(Image.open(io.BytesIO(data)))

    prepared = prepare(data, resolution=512)

    assert (int(raw.min()), int(raw.max())) == (0, 255)
    assert np.array_equal(prepared.pixels[0], _xrv_scale(raw, 255.0))


def test_16_bit_png_scales_by_its_own_depth(xray_images):
    raw = np.asarray(Image.open(xray_images / "00000001_000.png"))
    eight = prepare(_png(raw), resolution=224)
    sixteen = prepare(_png(raw.astype(np.uint16) * 257), resolution=224)
    # the same 8-bit values in a 16-bit file are near black: 255 of 65535
    dark = prepare(_png(raw.astype(np.uint16)), resolution=512)

    assert (eight.bits, sixteen.bits, dark.bits) == (8, 16, 16)
    assert np.array_equal(sixteen.pixels, eight.pixels)
    assert float(dark.pixels.min()) == -1024.0
    assert float(dark.pixels.max()) == np.float32((2 * 255 / 65535 - 1) * 1024)


def test_rgb_and_rgba_become_the_same_gray(xray_images):
    image = Image.open(xray_images / "tbx11k_test_data/imgs/health/h0001.png")
    gray_buffer, rgba_buffer = io.BytesIO(), io.BytesIO()
    image.convert("L").save(gray_buffer, format="PNG")
    rgba = image.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(rgba_buffer, format="PNG")

    rgb = prepare((xray_images / "tbx11k_test_data/imgs/health/h0001.png").read_bytes(),
                  resolution=224)

    assert image.mode == "RGB"
    assert np.array_equal(rgb.pixels, prepare(gray_buffer.getvalue(), resolution=224).pixels)
    assert np.array_equal(rgb.pixels, prepare(rgba_buffer.getvalue(), resolution=224).pixels)


def test_monochrome1_twin_from_inverted_stored_pixels_gives_the_same_input(xray_images, tmp_path):
    original = pydicom.dcmread(xray_images / TWIN_M1)
    stored = original.pixel_array
    inverted = synthetic_dicom((255 - stored).astype(np.uint8), modality="CR",
                               photometric="MONOCHROME2")

    from_monochrome1 = prepare((xray_images / TWIN_M1).read_bytes(), resolution=224)
    from_inverted = prepare(inverted, resolution=224)

    assert original.PhotometricInterpretation == "MONOCHROME1"
    assert np.array_equal(from_monochrome1.pixels, from_inverted.pixels)


def test_relabelled_monochrome1_file_gives_the_inverted_input(xray_images):
    first = pydicom.dcmread(xray_images / TWIN_M2)
    second = pydicom.dcmread(xray_images / TWIN_M1)

    monochrome2 = prepare((xray_images / TWIN_M2).read_bytes(), resolution=224)
    monochrome1 = prepare((xray_images / TWIN_M1).read_bytes(), resolution=224)

    assert np.array_equal(first.pixel_array, second.pixel_array)
    assert np.array_equal(monochrome1.pixels, -monochrome2.pixels)
    assert float(np.abs(monochrome2.pixels).max()) > 900.0


def _twelve_bit(seed: int = 0) -> np.ndarray:
    stored = np.random.default_rng(seed).integers(0, 4096, size=(64, 64), dtype=np.uint16)
    stored[10, 10], stored[20, 20] = 0, 4095
    return stored


def test_dicom_scales_by_bits_stored_not_by_dtype():
    stored = _twelve_bit()

    prepared = prepare(synthetic_dicom(stored, bits_stored=12), resolution=64)

    assert prepared.bits == 12
    assert float(prepared.pixels[0, 10, 10]) == -1024.0
    assert float(prepared.pixels[0, 20, 20]) == 1024.0
    assert np.array_equal(prepared.pixels[0], _xrv_scale(stored, 4095.0))


def test_rescale_slope_and_intercept_keep_the_defined_range():
    stored = _twelve_bit()

    plain = prepare(synthetic_dicom(stored, bits_stored=12), resolution=64)
    rescaled = prepare(
        synthetic_dicom(stored, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1000),
        resolution=64,
    )

    assert np.array_equal(plain.pixels, rescaled.pixels)


def test_monochrome1_with_rescale_matches_its_inverted_twin():
    stored = _twelve_bit(seed=1)
    header = {"bits_stored": 12, "RescaleSlope": 2, "RescaleIntercept": -1000}

    monochrome1 = prepare(synthetic_dicom(stored, photometric="MONOCHROME1", **header),
                          resolution=64)
    monochrome2 = prepare(synthetic_dicom((4095 - stored).astype(np.uint16), **header),
                          resolution=64)

    assert np.array_equal(monochrome1.pixels, monochrome2.pixels)


def test_voi_window_is_applied():
    stored = _twelve_bit()
    stored[30, 30] = 2048

    windowed = prepare(synthetic_dicom(stored, bits_stored=12, WindowCenter=2048,
                                       WindowWidth=1024), resolution=64).pixels[0]

    # DICOM's LINEAR window: below c - 0.5 - (w - 1) / 2 is black, above c - 0.5 + (w - 1) / 2
    # is white, between is linear
    assert np.all(windowed[stored <= 1536] == -1024.0)
    assert np.all(windowed[stored > 2559] == 1024.0)
    middle = ((2048 - 2047.5) / 1023 + 0.5) * 2 - 1
    assert float(windowed[30, 30]) == np.float32(middle * 1024)
    assert int((windowed == -1024.0).sum()) == int((stored <= 1536).sum())


def test_voi_lut_sequence_is_applied_and_scaled_by_its_entry_depth():
    # a 12-bit VOI LUT that doubles the stored value up to its ceiling
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 12])
    item.add_new(0x00283006, "US", [min(4095, 2 * value) for value in range(4096)])
    stored = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)

    prepared = prepare(synthetic_dicom(stored, bits_stored=12, VOILUTSequence=Sequence([item])),
                       resolution=64).pixels[0]

    expected = _xrv_scale(np.minimum(4095, 2 * stored.astype(np.int64)), 4095.0)
    assert np.array_equal(prepared, expected)
    assert float(prepared[32, 0]) == 1024.0  # stored 2048 doubles past the ceiling


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_ct_and_mr_are_skipped_with_a_reason(modality):
    outcome = prepare(synthetic_dicom(_twelve_bit(), modality=modality, bits_stored=12),
                      resolution=224)

    assert outcome == Skipped(
        reason=f"modality {modality} is not a projection radiograph (CR or DX)"
    )


def test_non_chest_lateral_and_unknown_files_are_skipped():
    stored = _twelve_bit()

    assert prepare(synthetic_dicom(stored, body_part="ABDOMEN", bits_stored=12),
                   resolution=224) == Skipped(reason="body part ABDOMEN is not the chest")
    assert prepare(synthetic_dicom(stored, view="LL", bits_stored=12), resolution=224) == Skipped(
        reason="view LL is lateral; the models score frontal (PA or AP) views"
    )
    assert prepare(b"not an image at all", resolution=224) == Skipped(
        reason="not a DICOM, PNG or JPEG file (unrecognised signature)"
    )


def test_png_with_a_ct_manifest_modality_is_skipped(xray_images):
    data = (xray_images / "00000001_000.png").read_bytes()

    assert prepare(data, resolution=224, modality="ct") == Skipped(
        reason="modality CT is not a projection radiograph (CR or DX)"
    )
