"""``python -m infra.bench [--scales 1,10,100] [--stages ingest,marts,nlp,vision,drift]
[--out FILE] [--markdown FILE] [--inputs PATH ...]``: run the benchmark and write its results.

The results go to ``--out`` as JSON (standard output without it) and, as a table, into
``--markdown`` (docs/benchmarks.md by default; ``--markdown ''`` leaves it alone). 10x and 100x
are opt-in: the default is 1x, which CI runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from infra.bench.report import write_markdown
from infra.bench.runner import REPO_ROOT, STAGE_NAMES, run_benchmark
from infra.errors import CarelakeError, ConfigError

logger = logging.getLogger(__name__)


def _whole_numbers(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of factors")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("scale factors are whole numbers >= 1")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.bench", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument("--scales", type=_whole_numbers, default=[1],
                        help="scale factors, comma-separated (default 1; 10 and 100 are opt-in)")
    parser.add_argument("--stages", default=",".join(STAGE_NAMES),
                        help=f"stages to time, comma-separated (default {','.join(STAGE_NAMES)})")
    parser.add_argument("--inputs", nargs="+", type=Path, metavar="PATH",
                        help="bundles, NDJSON or folders to scale (default: data/sample/fhir)")
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    parser.add_argument("--markdown", default=str(REPO_ROOT / "docs" / "benchmarks.md"),
                        help="update the table in this markdown file ('' to skip)")
    parser.add_argument("--no-baselines", action="store_true",
                        help="skip the orjson and naive dlt baselines")
    parser.add_argument("--seed", type=int, default=0, help="the scaler's seed")
    parser.add_argument("--workers", type=int, default=1, help="processes the scaler uses")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # On SIGTERM, unwind like Ctrl-C, so the scratch folder of plaintext input is removed.
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stages = [name.strip() for name in args.stages.split(",") if name.strip()]
    try:
        results = run_benchmark(scales=args.scales, stages=stages, inputs=args.inputs,
                                baselines=not args.no_baselines, seed=args.seed,
                                workers=args.workers)
    except CarelakeError as error:
        print(f"infra.bench: {error}", file=sys.stderr)
        return 1
    text = json.dumps(results, indent=2) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    if args.markdown:
        path = Path(args.markdown)
        if not path.parent.is_dir():
            raise ConfigError(f"--markdown names {path}, whose folder does not exist")
        write_markdown(path, results)
    logger.info("benchmark: %d scale(s), %d measurement(s) each", len(results["runs"]),
                len(results["runs"][0]["results"]) if results["runs"] else 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
