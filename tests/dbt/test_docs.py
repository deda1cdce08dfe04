"""The docs site: stored encrypted, exported and served on loopback, rendered by a real browser."""

from __future__ import annotations

import collections
import http.client
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from PIL import Image

from infra import marts, marts_commands
from tests.dbt.conftest import BuiltLake

SITE_FILES = [
    "catalog.json", "column_lineage.json", "index.html", "manifest.json", "static_index.html",
]
# dbt docs' lineage graph colours: models teal, sources green, exposures orange-red.
MODEL_NODE = (0, 148, 179)
SOURCE_NODE = (95, 184, 37)


def test_the_site_is_stored_encrypted_under_the_data_folder(sample: BuiltLake) -> None:
    folder = Path(sample.lake.data_dir) / marts.DOCS_PREFIX
    assert sorted(path.name for path in folder.iterdir()) == SITE_FILES
    for path in folder.iterdir():
        raw = path.read_bytes()
        assert raw[:4] == b"CLKE"
        assert b"<html" not in raw.lower() and b"stg_fhir__" not in raw


def test_docs_export_and_loopback_server(sample: BuiltLake, tmp_path: Path) -> None:
    written = marts_commands.export_docs(sample.lake, tmp_path / "site")
    index = (tmp_path / "site" / "static_index.html").read_text()

    server = marts_commands.docs_server(sample.lake, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        answers = {}
        for path in ("/", "/manifest.json", "/../lake.json", "/catalog.db"):
            client = http.client.HTTPConnection(host, port, timeout=10)
            client.request("GET", path)
            response = client.getresponse()
            answers[path] = (response.status, response.read()[:15])
            client.close()
    finally:
        server.shutdown()
        server.server_close()

    assert written == 5
    assert "stg_fhir__observations" in index
    assert host == "127.0.0.1"
    assert answers["/"][0] == 200 and answers["/"][1].lower().startswith(b"<!doctype html")
    assert answers["/manifest.json"] == (200, b'{"metadata": {"')
    assert answers["/../lake.json"][0] == 404
    assert answers["/catalog.db"][0] == 404


@pytest.mark.browser
def test_the_lineage_graph_renders_in_headless_chromium(sample: BuiltLake, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium")
    marts_commands.export_docs(sample.lake, tmp_path / "site")
    screenshot = tmp_path / "lineage.png"
    url = (tmp_path / "site" / "static_index.html").as_uri() + "#!/overview?g_v=1"

    subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1400,900", "--virtual-time-budget=15000",
            f"--screenshot={screenshot}", url,
        ],
        check=True, capture_output=True, timeout=120,
    )

    pixels = collections.Counter(Image.open(screenshot).convert("RGB").getdata())
    # The graph draws one box per model and source; without it neither colour appears at all.
    assert pixels[MODEL_NODE] > 3000
    assert pixels[SOURCE_NODE] > 1500
