"""``carelake images import FOLDER`` and ``carelake vision run``.

``register(subparsers)`` adds both to carelake's command line; each handler takes the parsed
arguments, opens the lake of ``--data-dir`` (or the settings' ``lake.data_dir``) and prints counts
as JSON. Neither prints a file name or anything from a DICOM header.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    images = subparsers.add_parser("images", help="images stored in the lake")
    images_commands = images.add_subparsers(dest="images_command", required=True)
    importing = images_commands.add_parser(
        "import", help="store a folder of DICOM, PNG and JPEG files, linked to their patients"
    )
    importing.add_argument("folder", type=Path, help="folder of image files (searched recursively)")
    importing.add_argument(
        "--manifest", type=Path, default=None,
        help="CSV with columns file,patient (Patient/<id>) and optionally study_instance_uid, "
             "modality, body_part, view_position; needed for PNG and JPEG files",
    )
    importing.set_defaults(handler=import_images)

    vision = subparsers.add_parser("vision", help="score chest X-rays with TorchXRayVision")
    vision_commands = vision.add_subparsers(dest="vision_command", required=True)
    running = vision_commands.add_parser("run", help="score the lake's images not yet scored")
    running.set_defaults(handler=run_vision)


def _lake(args: argparse.Namespace) -> Any:
    from infra.lake import Lake
    from infra.settings import load_settings

    return Lake.open(load_settings(data_dir=getattr(args, "data_dir", None)),
                     role=getattr(args, "role", None) or "loader")


def import_images(args: argparse.Namespace) -> int:
    from ml_pipelines.vision.image_import import import_folder

    report = import_folder(_lake(args), args.folder, manifest=args.manifest)
    print(json.dumps(report.as_json(), indent=2))
    return 0


def run_vision(args: argparse.Namespace) -> int:
    from infra.errors import StageUnavailable
    from infra.stages import StageContext
    from ml_pipelines.vision.stage import run

    lake = _lake(args)
    try:
        result = run(StageContext(settings=lake.settings, lake=lake, sources=[]))
    except StageUnavailable as reason:
        print(json.dumps({"status": "not available", "reason": str(reason)}, indent=2))
        return 2
    print(json.dumps(result.as_json(), indent=2))
    return 0
