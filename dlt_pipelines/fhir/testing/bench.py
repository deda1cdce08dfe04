"""Throughput of the REST and Bulk Data clients against the loopback test server; prints figures.

    python -m dlt_pipelines.fhir.testing.bench ../shared/data/synthea-bulk-ndjson-10-patients

Both sides share this machine's CPUs, so the figures are a floor for a real server, not a claim.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dlt_pipelines.fhir.bulk_export import ExportReport, run_export
from dlt_pipelines.fhir.rest import SearchReport, iter_search_pages
from dlt_pipelines.fhir.testing.server import FhirTestServer
from dlt_pipelines.fhir.testing.store import read_ndjson


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a folder of Bulk Data NDJSON files")
    parser.add_argument("--page-size", type=int, default=500)
    args = parser.parse_args()

    lines = read_ndjson(args.folder)
    with FhirTestServer(resources=lines, export_retry_after="0") as server:
        types = server.store.types()
        report = SearchReport()
        started = time.perf_counter()
        size = sum(len(page.body) for page in iter_search_pages(
            server.base_url, types, auth=None, page_size=args.page_size, report=report,
        ))
        seconds = time.perf_counter() - started
        counts = report.counts()
        print(f"REST search: {counts['entries']} resources in {counts['pages']} pages of "
              f"{len(types)} types, {size / 1e6:.1f} MB in {seconds:.2f} s "
              f"({counts['entries'] / seconds:,.0f} resources/s, {size / 1e6 / seconds:.1f} MB/s)")

        export = ExportReport()
        started = time.perf_counter()
        size = sum(len(record.body) for record in run_export(
            server.base_url, auth=None, report=export,
        ))
        seconds = time.perf_counter() - started
        total = export.counts()["resources"]
        print(f"Bulk export: {total} lines in {export.files} files, {size / 1e6:.1f} MB in "
              f"{seconds:.2f} s ({total / seconds:,.0f} lines/s, {size / 1e6 / seconds:.1f} MB/s)")


if __name__ == "__main__":
    main()
