"""``carelake nlp run|evaluate|bench``: the NLP pipeline, its accuracy figures, its speed."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_SHARED_DATA = Path("..") / "shared" / "data"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("nlp", help="clinical NLP over the lake's notes (MedCAT)")
    commands = parser.add_subparsers(dest="nlp_command", required=True)

    run = commands.add_parser("run", help="run the NLP pipeline on the lake's notes")
    run.add_argument("--evaluate-with", metavar="SHARED_DATA", default=None,
                     help="also compute the evaluation figures from this public data folder")
    run.set_defaults(handler=_run)

    evaluate = commands.add_parser("evaluate", help="print ConText and concept accuracy figures")
    evaluate.add_argument("--data", type=Path, default=DEFAULT_SHARED_DATA,
                          help="the public data folder (default: ../shared/data)")
    evaluate.set_defaults(handler=_evaluate)

    bench = commands.add_parser("bench", help="notes/s and characters/s of concept extraction")
    bench.add_argument("notes", type=Path, help="a folder of notes (Bulk NDJSON, bundles, .txt)")
    bench.add_argument("--processes", type=int, default=2)
    bench.set_defaults(handler=_bench)


def _run(args: argparse.Namespace) -> int:
    from infra.settings import load_settings
    from ml_pipelines.nlp.stage import run_pipeline

    settings = load_settings(data_dir=args.data_dir)
    figures = run_pipeline(settings, evaluation_data_dir=args.evaluate_with)
    print(json.dumps(figures, indent=2, default=str))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ml_pipelines.nlp.evaluate import evaluate_all

    print(json.dumps(evaluate_all(args.data), indent=2))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from ml_pipelines.nlp import bench

    bench.run(args.notes, n_process=args.processes)
    return 0
