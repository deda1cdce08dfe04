"""Turn DICOM, PNG and JPEG bytes into the input a TorchXRayVision model expects.

TorchXRayVision models take one gray channel scaled to [-1024, 1024], square, at the model's
resolution. Getting there honestly means reading an image the way its format defines it:

- DICOM (through pydicom): stored values are mapped by the modality LUT (or rescale slope and
  intercept), then by the VOI LUT or window when the file has one. The value range used for
  scaling is the one the header defines (Bits Stored, Pixel Representation, the LUT depths), never
  the numpy dtype: 12 bits stored in 16-bit words scale by 4095, not 65535. MONOCHROME1 is inverted
  so that bone is always bright.
- PNG and JPEG (through Pillow): 8- and 16-bit depth come from the file itself; RGB and RGBA become
  luminance (alpha is dropped, not composited).

Then the image is center-cropped to a square and resized with TorchXRayVision's own transforms.
Images that are not frontal chest radiographs are not scored: ``prepare`` returns a ``Skipped``
with the reason instead.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
import pydicom
import torchxrayvision as xrv
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut

logger = logging.getLogger(__name__)

#: modalities that are projection radiographs: computed and digital radiography
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX"})
#: Body Part Examined values that mean the chest
CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX", "LUNG", "PORTABLE CHEST", "CHEST_LAT",
                              "THORACIC STRUCTURE", "ENTIRE THORAX"})
#: View Position values of a lateral view; the models are trained on frontal (PA and AP) views
LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL", "LLD", "RLD"})

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


@dataclass(frozen=True)
class Prepared:
    """A model input: float32 of shape (1, resolution, resolution) in [-1024, 1024]."""

    pixels: np.ndarray
    source_rows: int
    source_columns: int
    bits: int


@dataclass(frozen=True)
class Skipped:
    """An image that is not scored, and why (no patient data in the reason)."""

    reason: str


def image_format(data: bytes) -> str:
    """``"dicom"``, ``"png"`` or ``"jpeg"`` from the file's signature; ``""`` when unknown."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SIGNATURE):
        return "jpeg"
    return ""


def prepare(
    data: bytes,
    *,
    resolution: int,
    modality: str | None = None,
    body_part: str | None = None,
    view_position: str | None = None,
) -> Prepared | Skipped:
    """Read an image file's bytes and return the model input, or the reason it is not scored.

    ``modality``, ``body_part`` and ``view_position`` describe the image where the file does not:
    a PNG or JPEG always, a DICOM file only where its header leaves them empty (an ImagingStudy
    may say what the header does not).
    """
    kind = image_format(data)
    if kind == "dicom":
        dataset = pydicom.dcmread(io.BytesIO(data))
        skip = check_series(
            modality=str(dataset.get("Modality", "") or "") or modality or "",
            body_part=str(dataset.get("BodyPartExamined", "") or "") or body_part or "",
            view_position=str(dataset.get("ViewPosition", "") or "") or view_position or "",
        )
        if skip is not None:
            return skip
        return _dicom_input(dataset, resolution=resolution)
    if kind in {"png", "jpeg"}:
        skip = check_series(
            modality=modality or "", body_part=body_part or "", view_position=view_position or ""
        )
        if skip is not None:
            return skip
        return _raster_input(data, kind=kind, resolution=resolution)
    return Skipped(reason="not a DICOM, PNG or JPEG file (unrecognised signature)")


def check_series(*, modality: str, body_part: str, view_position: str) -> Skipped | None:
    """The reason an image with this modality, body part and view is not scored, or None."""
    modality, body_part, view = (
        value.strip().upper() for value in (modality, body_part, view_position)
    )
    if modality and modality not in RADIOGRAPH_MODALITIES:
        return Skipped(reason=f"modality {modality} is not a projection radiograph (CR or DX)")
    if body_part and body_part not in CHEST_BODY_PARTS:
        return Skipped(reason=f"body part {body_part} is not the chest")
    if view in LATERAL_VIEWS:
        return Skipped(reason=f"view {view} is lateral; the models score frontal (PA or AP) views")
    return None


def _dicom_input(dataset: pydicom.Dataset, *, resolution: int) -> Prepared | Skipped:
    photometric = str(dataset.get("PhotometricInterpretation", "") or "")
    if photometric not in {"MONOCHROME1", "MONOCHROME2"}:
        return Skipped(reason=f"photometric interpretation {photometric or 'absent'} is not gray")
    if int(dataset.get("NumberOfFrames", 1) or 1) != 1:
        return Skipped(reason="multi-frame DICOM; a radiograph has one frame")

    stored = dataset.pixel_array
    low, high = _stored_range(dataset)
    values = np.asarray(apply_modality_lut(stored, dataset), dtype=np.float64)
    low, high = _modality_range(dataset, low, high)
    if dataset.get("VOILUTSequence"):
        # a VOI LUT indexes whole numbers: the modality transform's output, rounded
        indices = np.rint(values).astype(np.int64)
        values = np.asarray(apply_voi_lut(indices, dataset), dtype=np.float64)
        low, high = 0.0, float(2 ** int(dataset.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    elif dataset.get("WindowCenter") is not None and dataset.get("WindowWidth") is not None:
        # pydicom's windowing maps into the range the modality transform defines
        values = np.asarray(apply_voi_lut(values, dataset), dtype=np.float64)

    if photometric == "MONOCHROME1":
        # invert within the defined range, so that the result equals a MONOCHROME2 file whose
        # stored values are (low + high - value)
        values = low + high - values
    return _finish(values, low=low, high=high, resolution=resolution,
                   bits=int(dataset.BitsStored))


def _stored_range(dataset: pydicom.Dataset) -> tuple[float, float]:
    bits = int(dataset.BitsStored)
    if int(dataset.get("PixelRepresentation", 0) or 0) == 1:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def _modality_range(dataset: pydicom.Dataset, low: float, high: float) -> tuple[float, float]:
    if dataset.get("ModalityLUTSequence"):
        depth = int(dataset.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**depth - 1)
    if "RescaleSlope" in dataset and "RescaleIntercept" in dataset:
        slope, intercept = float(dataset.RescaleSlope), float(dataset.RescaleIntercept)
        ends = sorted((low * slope + intercept, high * slope + intercept))
        return ends[0], ends[1]
    return low, high


def _raster_input(data: bytes, *, kind: str, resolution: int) -> Prepared | Skipped:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        mode = image.mode
        if mode in {"I;16", "I;16B", "I;16L", "I"} and kind == "png":
            bits = _png_bit_depth(data)
            pixels = np.asarray(image, dtype=np.float64)
        elif mode in {"L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr"}:
            bits = 8
            pixels = np.asarray(image.convert("L"), dtype=np.float64)
        elif mode == "1":
            bits = 1
            pixels = np.asarray(image, dtype=np.float64)
        else:
            return Skipped(reason=f"{kind} pixel mode {mode} is not supported")
    return _finish(pixels, low=0.0, high=float(2**bits - 1), resolution=resolution, bits=bits)


def _png_bit_depth(data: bytes) -> int:
    # IHDR is the first chunk: 8-byte signature, 4-byte length, "IHDR", width, height, depth
    if data[12:16] != b"IHDR":
        raise ValueError("PNG without IHDR as its first chunk")
    return int(data[24])


def _finish(values: np.ndarray, *, low: float, high: float, resolution: int,
            bits: int) -> Prepared:
    rows, columns = values.shape[:2]
    unit = np.clip((values - low) / (high - low), 0.0, 1.0)
    scaled = ((2.0 * unit - 1.0) * 1024.0).astype(np.float32)[None, :, :]
    cropped = xrv.datasets.XRayCenterCrop()(scaled)
    resized = xrv.datasets.XRayResizer(resolution)(cropped)
    return Prepared(pixels=resized, source_rows=int(rows), source_columns=int(columns),
                    bits=bits)
