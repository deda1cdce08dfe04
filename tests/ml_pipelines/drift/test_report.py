"""The drift report: JSON, and an HTML page that a real headless browser renders."""

import json
import shutil
import subprocess

import pytest

from ml_pipelines.drift import report, windows
from ml_pipelines.drift.compare import compare
from ml_pipelines.drift.config import DriftConfig
from ml_pipelines.drift.gate import evaluate_gate


@pytest.fixture(scope="module")
def document(encounters):
    before = windows.select(encounters, "2011..2019")
    after = windows.select(encounters, "2021..")
    comparison = compare(before, after, config=DriftConfig(), reference_name="2011..2019",
                         current_name="2021..")
    gate = evaluate_gate(comparison, mode="warn")
    return report.build_report(comparison, run_id="test-run", features=encounters,
                               gate=gate.as_json())


def test_json_report_holds_the_named_drift_and_the_trend(document):
    parsed = json.loads(report.to_json(document))

    assert parsed["has_drift"] is True
    assert len(parsed["drifted"]) == 13
    assert parsed["drifted"][0] == "median age down 4.2 years (from 40.5 to 36.3)"
    # The six largest drifts across every window; a category (sex) has no single line.
    assert set(parsed["trend"]["series"]) == {
        "age_years", "immunization:208", "immunization:207", "procedure:428191000124101",
        "procedure:710824005",
    }
    vaccine = dict(parsed["trend"]["series"]["immunization:208"])
    assert len(vaccine) == 79
    assert vaccine["2020"] == 0.0 and round(vaccine["2021"], 4) == 0.1455


def test_reports_carry_no_patient_or_encounter_ids(document, encounters):
    text = report.to_json(document).decode() + report.render_html(document)

    for key in encounters.frame["patient_key"].unique()[:53]:
        assert key not in text
    for key in encounters.frame["encounter_key"].iloc[:200]:
        assert key not in text


@pytest.mark.browser
def test_html_report_renders_in_headless_chromium(document, tmp_path):
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(report.render_html(document), encoding="utf-8")
    shot = tmp_path / "report.png"

    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,1800",
         f"--screenshot={shot}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )

    image = Image.open(shot).convert("RGB")
    assert image.size == (1100, 1800)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text and charts, not a blank page
    # The orange of the current window's bars is on the page.
    assert any(colour == (0xDD, 0x84, 0x52) for _, colour in colours)
