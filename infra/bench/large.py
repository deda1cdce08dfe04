"""``python -m infra.bench.large (--input DIR | --bundle-mb N) [--out FILE]``: the ingest's memory
and speed on inputs too large for the regular benchmark.

``--input DIR`` ingests a folder made beforehand (for example 5 GB from ``carelake scale
--factor 4000``); ``--bundle-mb N`` writes one transaction bundle of about N MB whose notes carry
large attachments (``--attachment-mb``, synthetic text) and ingests it: such a bundle is read
entry by entry, never whole.

The ingest runs in a child process, as in ``python -m infra.bench``; the figures printed are MB/s
and resources/s of input, the peak resident memory of the largest process and of the whole
process tree (main process and workers, sampled every 50 ms), and the peak size of dlt's scratch
files, which live on memory-backed storage.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import random
import sys
import tempfile
from pathlib import Path

from infra.bench.runner import measure

logger = logging.getLogger(__name__)

_WORDS = ("patient", "reports", "mild", "cough", "no", "fever", "follow", "up", "in", "two",
          "weeks", "stable", "denies", "chest", "pain", "plan", "continue", "current", "dose")


def write_bundle(path: Path, megabytes: int, attachment_mb: float, seed: int = 0) -> int:
    """A transaction bundle of about ``megabytes`` MB, written entry by entry; its entry count."""
    rng = random.Random(seed)
    note_bytes = int(attachment_mb * (1 << 20) * 3 / 4)  # base64 grows text by a third
    target = megabytes << 20
    entries = 0
    with open(path, "w") as handle:
        handle.write('{"resourceType":"Bundle","type":"transaction","entry":[')
        written, patient = 0, None
        while written < target:
            if entries % 20 == 0:
                patient = f"urn:uuid:00000000-0000-4000-8000-{entries:012d}"
                entry = {"fullUrl": patient, "resource": {
                    "resourceType": "Patient", "id": patient[9:], "gender": "unknown",
                    "name": [{"family": f"Synthetic{entries}", "given": ["Bench"]}],
                    "birthDate": "1970-01-01"}, "request": {"method": "POST", "url": "Patient"}}
            else:
                text = " ".join(rng.choice(_WORDS) for _ in range(note_bytes // 6))
                url = f"urn:uuid:10000000-0000-4000-8000-{entries:012d}"
                entry = {"fullUrl": url, "resource": {
                    "resourceType": "DocumentReference", "id": url[9:], "status": "current",
                    "subject": {"reference": patient}, "date": "2024-05-01T10:00:00Z",
                    "content": [{"attachment": {
                        "contentType": "text/plain",
                        "data": base64.b64encode(text.encode()).decode()}}]},
                    "request": {"method": "POST", "url": "DocumentReference"}}
            text = json.dumps(entry)
            handle.write(("," if entries else "") + text)
            written += len(text) + 1
            entries += 1
        handle.write("]}")
    return entries


def _print(name: str, outcome: dict) -> None:
    counts = outcome.get("counts") or {}
    if outcome.get("status") != "ok":
        print(f"{name}: {outcome.get('status')} ({outcome.get('reason')})")
        return
    seconds = outcome["seconds"]
    print(f"{name}: {counts['bytes'] / 1e6:,.0f} MB, {counts['resources']:,} resources in "
          f"{seconds:.1f} s: {counts['bytes'] / 1e6 / seconds:.1f} MB/s, "
          f"{counts['resources'] / seconds:,.0f} resources/s; peak memory "
          f"{outcome['peak_rss_mb']:,.0f} MB "
          f"(largest process), {outcome['peak_tree_rss_mb']:,.0f} MB (process tree), dlt scratch "
          f"{counts.get('scratch_peak_mb', 0):,.0f} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.bench.large",
                                     description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, help="a folder of FHIR files to ingest")
    source.add_argument("--bundle-mb", type=int, help="write and ingest one bundle of this size")
    parser.add_argument("--attachment-mb", type=float, default=2.0,
                        help="size of each note's attachment in the bundle (default 2)")
    parser.add_argument("--work", type=Path,
                        help="where the temporary lake (and bundle) go; default: the system's "
                             "temporary folder. Keep it on disk: a 5 GB input makes a lake of "
                             "about 1.5 GB")
    parser.add_argument("--out", type=Path, help="write the outcome here as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory(prefix="carelake-bench-large-",
                                     dir=args.work) as folder:
        work = Path(folder)
        if args.input:
            if not args.input.is_dir():
                print(f"infra.bench.large: --input {args.input} is not a folder", file=sys.stderr)
                return 1
            fhir = args.input.resolve()
            name = f"ingest of {args.input}"
        else:
            fhir = work / "input"
            fhir.mkdir()
            count = write_bundle(fhir / "bundle.json", args.bundle_mb, args.attachment_mb)
            name = f"ingest of one {args.bundle_mb} MB bundle ({count:,} entries)"
        (work / "measure").mkdir()
        outcome = measure("infra.bench.stages:ingest", work / "measure", "ingest",
                          inputs=str(work), data_dir=str(work / "measure" / "data"),
                          fhir=str(fhir))
    _print(name, outcome)
    if args.out:
        args.out.write_text(json.dumps(outcome, indent=2) + "\n")
    return 0 if outcome.get("status") == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
