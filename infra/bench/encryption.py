"""What encryption costs: the same ingest (and marts build) on plain files, through a pass-through
filesystem, and encrypted, measured in one run on the same input.

    python -m infra.bench.encryption [INPUT ...] [--repeat N] [--out FILE]

Prints, per mode, seconds and MB/s, and the ratios encrypted / plain and encrypted / pass-through
(the target is under 1.3x against plain files). The unencrypted lakes live in a private scratch
folder that is deleted at the end; nothing of them is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from infra.scratch import private_scratch

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "fhir"
MODES = ("plain", "passthrough", "encrypted")


def _open(root: Path, mode: str):
    from infra.lake import Lake
    from infra.settings import load_settings

    os.environ["CARELAKE_KEYS__KEY_DIR"] = str(root / "keys")
    lake = Lake.open(load_settings(data_dir=root / "data"))
    if mode != "encrypted":
        lake._unencrypted_for_benchmark(mode)
    return lake


def _marts(lake) -> float | None:
    try:
        from infra.marts import build
    except ModuleNotFoundError:
        return None
    started = time.perf_counter()
    build(lake)
    return time.perf_counter() - started


def measure(inputs: list[Path], *, repeat: int = 1, marts: bool = True) -> dict:
    from dlt_pipelines.fhir.pipeline import ingest
    from dlt_pipelines.fhir.sources import input_files

    size = sum(path.stat().st_size for path in input_files(inputs))
    results: dict[str, dict] = {}
    with private_scratch("bench-encryption") as scratch:
        ingest(_open(scratch / "warm-up", "encrypted"), inputs)  # imports and caches, untimed
        for mode in MODES:
            ingest_times, marts_times = [], []
            for attempt in range(repeat):
                lake = _open(scratch / f"{mode}-{attempt}", mode)
                started = time.perf_counter()
                ingest(lake, inputs)
                ingest_times.append(time.perf_counter() - started)
                if marts and mode != "plain":
                    seconds = _marts(lake)
                    if seconds is not None:
                        marts_times.append(seconds)
            seconds = statistics.median(ingest_times)
            results[mode] = {"ingest_seconds": round(seconds, 3),
                             "ingest_mb_per_s": round(size / 1e6 / seconds, 2)}
            if marts_times:
                results[mode]["marts_seconds"] = round(statistics.median(marts_times), 3)
    ratios = {
        "ingest_encrypted_vs_plain": round(results["encrypted"]["ingest_seconds"]
                                           / results["plain"]["ingest_seconds"], 3),
        "ingest_encrypted_vs_passthrough": round(results["encrypted"]["ingest_seconds"]
                                                 / results["passthrough"]["ingest_seconds"], 3),
    }
    if "marts_seconds" in results["encrypted"] and "marts_seconds" in results["passthrough"]:
        ratios["marts_encrypted_vs_passthrough"] = round(
            results["encrypted"]["marts_seconds"] / results["passthrough"]["marts_seconds"], 3)
    return {"input_bytes": size, "repeat": repeat, "modes": results, "ratios": ratios,
            "target": "encrypted / plain under 1.3"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", type=Path, default=[SAMPLE])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-marts", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    report = measure(args.inputs, repeat=args.repeat, marts=not args.no_marts)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
