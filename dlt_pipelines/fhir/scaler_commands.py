"""``carelake scale``: write N rewritten copies of FHIR bundles or NDJSON, for benchmarks and tests.

    carelake scale --factor 10 --out /tmp/synthea-x10 [INPUT ...]

With no INPUT it scales the bundled Synthea sample (``data/sample/fhir``). It prints the report
(counts and sizes, no patient data) as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dlt_pipelines.fhir.scaler import sample_inputs, scale
from infra.errors import ConfigError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scale",
        help="write N rewritten copies of FHIR bundles or Bulk NDJSON (synthetic test input)",
        description=(
            "Copy k of N gets new ids, names and identifier values, dates moved per patient, "
            "references rewritten to match; decimals are kept exactly as written."
        ),
    )
    parser.add_argument("inputs", nargs="*", type=Path, metavar="INPUT",
                        help="bundle files (.json), NDJSON files (.ndjson), gzipped or not, or "
                             "folders; default: the bundled sample, data/sample/fhir")
    parser.add_argument("--factor", type=int, required=True, help="how many copies to write")
    parser.add_argument("--out", type=Path, required=True, help="a new or empty output folder")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same bytes")
    parser.add_argument("--workers", type=int, default=1, help="copies made in parallel processes")
    parser.add_argument("--shifts", default="", metavar="JSON",
                        help='drift for tests, e.g. \'{"age_years": 10}\' or \'{"new_condition": '
                             '{"system": ..., "code": ..., "display": ..., "rate": 0.1}}\'')
    parser.set_defaults(handler=run_scale)


def run_scale(args: argparse.Namespace) -> int:
    try:
        shifts = json.loads(args.shifts) if args.shifts else None
    except json.JSONDecodeError as error:
        raise ConfigError(f"--shifts is not valid JSON ({error.msg}): quote it as one argument")
    inputs = list(args.inputs) or sample_inputs()
    report = scale(
        inputs, args.out, factor=args.factor, seed=args.seed, shifts=shifts, workers=args.workers
    )
    json.dump(report.as_json(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
