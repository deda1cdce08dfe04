"""Helpers of the imaging tests: the real architecture with random weights, synthetic DICOM.

The weights these tests write are TorchXRayVision's real DenseNet-121 architecture with random
initial values: they check the mechanics (loading, shapes, provenance), never what a finding means.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pydicom
import torch
import torchxrayvision as xrv
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

REPO_ROOT = Path(__file__).resolve().parents[3]
MODEL_ID = "densenet121-res224-all"
WEIGHTS_FILE = os.path.basename(xrv.models.model_urls[MODEL_ID]["weights_url"])
TWIN_M2 = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
TWIN_M1 = "Fake_MONOHR1.dcm"


def random_network(seed: int = 0) -> torch.nn.Module:
    """The real architecture, untrained; the classifier is shrunk so sigmoids are not saturated."""
    torch.manual_seed(seed)
    network = xrv.models.DenseNet(num_classes=18)
    with torch.no_grad():
        network.classifier.weight.mul_(1e-3)
    return network.eval()


def synthetic_dicom(
    pixels,
    *,
    modality: str = "DX",
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    body_part: str = "CHEST",
    view: str = "PA",
    **extra,
) -> bytes:
    """A small uncompressed DICOM file with the given stored pixels and header values."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.PatientName = "Test^Synthetic"
    dataset.PatientID = "synthetic-1"
    dataset.Modality = modality
    dataset.BodyPartExamined = body_part
    dataset.ViewPosition = view
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.Rows, dataset.Columns = pixels.shape
    allocated = pixels.dtype.itemsize * 8
    dataset.BitsAllocated = allocated
    dataset.BitsStored = bits_stored or allocated
    dataset.HighBit = dataset.BitsStored - 1
    dataset.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    for keyword, value in extra.items():
        setattr(dataset, keyword, value)
    dataset.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
