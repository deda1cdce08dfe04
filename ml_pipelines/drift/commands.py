"""``carelake drift run|report|gate``: run the drift pipelines, export a report, apply the gate.

The lake comes from ``carelake``'s global ``--data-dir`` and ``--role`` options.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from infra.errors import ConfigError
from ml_pipelines.drift import lake_io
from ml_pipelines.drift.config import GATE_MODES, DriftConfig

logger = logging.getLogger(__name__)

FEATURE_SETS = ("encounters", "vitals", "notes", "embeddings", "images")


def register(subparsers: Any) -> None:
    drift = subparsers.add_parser(
        "drift", help="clinical drift: profiles, reports, gate, retraining"
    )
    commands = drift.add_subparsers(dest="drift_command", required=True)

    run = commands.add_parser("run", help="run the drift pipeline (and retraining on drift)")
    run.add_argument("--reference", default=None, help='reference windows, e.g. "2011..2019"')
    run.add_argument("--current", default=None, help='current windows, e.g. "2021.."')
    run.add_argument("--window", choices=("month", "quarter", "year"), default=None)
    run.add_argument("--gate", choices=GATE_MODES, default=None)
    run.add_argument("--no-retrain", action="store_true", help="do not retrain on drift")
    run.set_defaults(handler=handle_run)

    report = commands.add_parser("report", help="write a decrypted copy of a drift report")
    report.add_argument("--out", required=True, type=Path, help="file to write (.html or .json)")
    report.add_argument("--run", default=None, help="run id (default: the latest)")
    report.add_argument("--feature-set", default="encounters", choices=FEATURE_SETS)
    report.set_defaults(handler=handle_report)

    gate = commands.add_parser("gate", help="apply the gate to the latest report")
    gate.add_argument("--gate", choices=GATE_MODES, default=None)
    gate.add_argument("--feature-set", default="encounters", choices=FEATURE_SETS)
    gate.set_defaults(handler=handle_gate)


def _lake(args: argparse.Namespace) -> Any:
    """The lake of the global ``--data-dir`` and ``--role`` options of ``carelake``."""
    from infra.commands import open_lake

    return open_lake(args)


def handle_run(args: argparse.Namespace) -> int:
    from ml_pipelines.drift.stage import check_windows, run_pipelines

    lake = _lake(args)
    overrides = {
        key: value
        for key, value in {
            "reference": args.reference,
            "current": args.current,
            "window": args.window,
            "gate": args.gate,
        }.items()
        if value is not None
    }
    check_windows(lake, DriftConfig.from_settings(lake.settings, **overrides))
    details = run_pipelines(str(lake.data_dir), overrides=overrides, retrain=not args.no_retrain)
    summary = details["drift"]
    print(
        f"drift {summary['current']} against {summary['reference']}: "
        f"{summary['drifted_features']} features drifted; report {summary['report_html']}"
    )
    if details["retrain"]:
        decision = details["retrain"]
        production = decision.get("production_holdout_brier")
        print(
            f"retrained: held-out Brier {decision['holdout_brier']:.5f} against production "
            f"{'(none yet)' if production is None else f'{production:.5f}'}; "
            f"{'promoted' if decision['promoted'] else 'kept production'}"
        )
    return 0 if summary["passed"] else 1


def _report_path(lake: Any, feature_set: str, run_id: str | None, *, suffix: str) -> str:
    if run_id:
        json_path, html_path = lake_io.report_paths(feature_set, run_id)
    else:
        json_path = lake_io.latest_report(lake, feature_set=feature_set)
        html_path = json_path.replace("report.json", "report.html")
    path = json_path if suffix == ".json" else html_path
    if not lake.fs.exists(path):
        raise ConfigError(f"no drift report {path} in the lake: check --run and --feature-set")
    return path


def handle_report(args: argparse.Namespace) -> int:
    suffix = args.out.suffix.lower()
    if suffix not in {".html", ".json"}:
        raise ConfigError(f"--out {args.out} must end in .html or .json (which report to write)")
    lake = _lake(args)
    path = _report_path(lake, args.feature_set, args.run, suffix=suffix)
    data = lake_io.read_file(lake, path)
    args.out.write_bytes(data)
    print(f"wrote a decrypted copy of {path} to {args.out} ({len(data)} bytes); it is plaintext")
    return 0


def handle_gate(args: argparse.Namespace) -> int:
    lake = _lake(args)
    path = lake_io.latest_report(lake, feature_set=args.feature_set)
    document = json.loads(lake_io.read_file(lake, path))
    mode = args.gate or document["config"]["gate"]
    for line in document["gate"]["lines"]:
        print(line)
    failed = document["gate"]["drift"] and mode == "fail"
    print(f"gate ({mode}): {'fails' if failed else 'passes'}", file=sys.stderr if failed else None)
    return 1 if failed else 0
